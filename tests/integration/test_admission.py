"""The real API server enforces the generated CRDs: bad objects are rejected at admission, naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from testenv.controlplane import ControlPlane

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "conveyor.dev", "v1alpha1"
DIGEST = "sha256:" + "a" * 64


def pipeline(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "parameters": [{"name": "n", "type": "integer", "default": 1}],
        "steps": [
            {"name": "a", "container": {"image": "python:3.11", "command": ["python", "-c", "1"]}},
            {"name": "b", "uses": "train", "inputs": [{"name": "train", "step": "a", "output": "out"}]},
        ],
    }
    base.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Pipeline", "metadata": {"name": "p"}, "spec": base}


def with_step(index: int, **fields: Any) -> dict[str, Any]:
    doc = pipeline()
    doc["spec"]["steps"][index].update(fields)
    return doc


def run(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Run", "metadata": {"name": "r"}, "spec": spec}


def md(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": "m"}, "spec": spec}


def _dup_steps() -> dict[str, Any]:
    doc = pipeline()
    doc["spec"]["steps"].append(copy.deepcopy(doc["spec"]["steps"][0]))
    return doc


BAD: list[tuple[str, dict[str, Any], str, list[str]]] = [
    # id, object, plural, fragments the API server's message must contain
    (
        "uses-and-container",
        with_step(1, container={"image": "x", "command": ["y"]}),
        "pipelines",
        ["spec.steps[1]", "exactly one of uses, container or resource must be set"],
    ),
    ("neither", with_step(0, container=None), "pipelines", ["spec.steps[0]", "exactly one of uses, container or resource"]),
    (
        "negative-retries",
        with_step(0, retries={"limit": -1}),
        "pipelines",
        ["spec.steps[0].retries.limit", "greater than or equal to 0"],
    ),
    (
        "zero-timeout",
        with_step(0, timeoutSeconds=0),
        "pipelines",
        ["spec.steps[0].timeoutSeconds", "greater than or equal to 1"],
    ),
    ("bad-step-name", with_step(0, name="Not_A_Label"), "pipelines", ["spec.steps[0].name", "should match"]),
    ("duplicate-step", _dup_steps(), "pipelines", ["spec.steps[2]", "Duplicate value"]),
    (
        "bad-param-type",
        pipeline(parameters=[{"name": "n", "type": "float"}]),
        "pipelines",
        ["spec.parameters[0].type", "Unsupported value"],
    ),
    (
        "input-step-and-uri",
        with_step(1, inputs=[{"name": "train", "step": "a", "output": "o", "uri": "s3://b/k"}]),
        "pipelines",
        ["spec.steps[1].inputs[0]", "exactly one of step or uri"],
    ),
    (
        "bad-uri",
        with_step(1, inputs=[{"name": "train", "uri": "ftp://host/x"}]),
        "pipelines",
        ["spec.steps[1].inputs[0].uri", "should match"],
    ),
    ("no-steps", pipeline(steps=[]), "pipelines", ["spec.steps", "at least 1"]),
    (
        "trigger-both",
        pipeline(triggers=[{"s3": {"uri": "s3://b/p/"}, "drift": {"modelDeployment": "m"}}]),
        "pipelines",
        ["spec.triggers[0]", "exactly one of s3 or drift"],
    ),
    ("run-no-pipeline", run(parameters={"n": 2}), "runs", ["spec", "exactly one of pipelineRef or pipelineSpec"]),
    (
        "run-both",
        run(pipelineRef={"name": "p"}, pipelineSpec=pipeline()["spec"]),
        "runs",
        ["spec", "exactly one of pipelineRef or pipelineSpec"],
    ),
    (
        "run-cancel-not-bool",
        run(pipelineRef={"name": "p"}, cancel="yes"),
        "runs",
        ["spec.cancel", "must be of type boolean"],
    ),
    (
        "md-two-sources",
        md(model={"uri": "s3://b/m", "digest": DIGEST, "pipeline": {"name": "p"}}),
        "modeldeployments",
        ["spec.model", "exactly one of uri, run or pipeline"],
    ),
    ("md-uri-no-digest", md(model={"uri": "s3://b/m"}), "modeldeployments", ["spec.model", "needs its digest"]),
    (
        "md-bad-digest",
        md(model={"uri": "s3://b/m", "digest": "md5:abc"}),
        "modeldeployments",
        ["spec.model.digest", "should match"],
    ),
    (
        "md-min-over-max",
        md(model={"pipeline": {"name": "p"}}, autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "modeldeployments",
        ["spec.autoscaling", "minReplicas must not exceed maxReplicas"],
    ),
    (
        "md-canary-no-steps",
        md(model={"pipeline": {"name": "p"}}, rollout={"strategy": "Canary"}),
        "modeldeployments",
        ["spec.rollout", "a Canary rollout needs steps"],
    ),
    (
        "md-privileged-port",
        md(model={"pipeline": {"name": "p"}}, server={"port": 80}),
        "modeldeployments",
        ["spec.server.port", "greater than or equal to 1024"],
    ),
]


def _create(api: k8s_client.ApiClient, namespace: str, plural: str, body: dict[str, Any]) -> Any:
    return k8s_client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body, field_validation="Strict"
    )


@pytest.mark.parametrize(("body", "plural", "fragments"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_api_server_rejects_invalid_objects_naming_the_field(
    api: k8s_client.ApiClient,
    namespace: str,
    install_crds: list[str],
    body: dict[str, Any],
    plural: str,
    fragments: list[str],
) -> None:
    with pytest.raises(ApiException) as raised:
        _create(api, namespace, plural, body)
    assert raised.value.status == 422, raised.value.body
    message = json.loads(raised.value.body)["message"]
    for fragment in fragments:
        assert fragment in message, message


def test_unknown_fields_are_rejected_not_pruned(
    api: k8s_client.ApiClient, namespace: str, install_crds: list[str]
) -> None:
    body = with_step(0, retry=3)
    with pytest.raises(ApiException) as raised:
        _create(api, namespace, "pipelines", body)
    assert 'unknown field "spec.steps[0].retry"' in json.loads(raised.value.body)["message"]


def test_valid_objects_are_admitted_with_defaults(
    api: k8s_client.ApiClient, namespace: str, install_crds: list[str]
) -> None:
    example = yaml.safe_load((ROOT / "examples" / "breast-cancer" / "pipeline.yaml").read_text())
    created = _create(api, namespace, "pipelines", example)
    train = next(s for s in created["spec"]["steps"] if s["name"] == "train")
    assert train["retries"]["limit"] == 1 and train["cache"] == {"enabled": True}  # API-server defaulting
    assert created["spec"]["failFast"] is True
    _create(api, namespace, "runs", run(pipelineRef={"name": "breast-cancer"}, parameters={"n_estimators": 10}))
    _create(api, namespace, "modeldeployments", md(model={"run": {"name": "r", "step": "train"}}))


def test_run_pipeline_ref_is_immutable(api: k8s_client.ApiClient, namespace: str, install_crds: list[str]) -> None:
    objects = k8s_client.CustomObjectsApi(api)
    _create(api, namespace, "runs", run(pipelineRef={"name": "p"}, parameters={"n": 1}))
    with pytest.raises(ApiException) as raised:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "runs", "r", {"spec": {"pipelineRef": {"name": "q"}}}
        )
    assert "pipelineRef is immutable" in json.loads(raised.value.body)["message"]
    # cancelling is allowed
    patched = objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, "runs", "r", {"spec": {"cancel": True}})
    assert patched["spec"]["cancel"] is True


def test_kubectl_get_shows_printer_columns_and_short_names(
    control_plane: ControlPlane, api: k8s_client.ApiClient, namespace: str, install_crds: list[str]
) -> None:
    _create(api, namespace, "runs", run(pipelineRef={"name": "p"}))
    out = control_plane.kubectl("get", "cvrun", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "PIPELINE", "PHASE", "STEPS", "AGE"]
    assert "r" in out.splitlines()[1]
    listed = control_plane.kubectl("get", "conveyor", "-n", namespace, "-o", "name").stdout
    assert "run.conveyor.dev/r" in listed
