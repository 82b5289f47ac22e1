"""ModelDeployments on the real control plane: the operator rolls real model servers, run as pods.

The node agent runs each server pod as a local process in a network namespace of its own, with
a real pod IP, and reports readiness from the pod's own probes; the kube-controller-manager rolls
the Deployments and fills the EndpointSlices. There is no kube-proxy, so `Router` plays its part:
it follows the Service's EndpointSlices and sends each request to one ready endpoint, as a
ClusterIP would.

One module, one story, in order: a Pipeline with a gate trains and blesses a model and a
ModelDeployment following that Pipeline serves it (also to tritonclient); a second blessed model
rolls out under load with zero failed requests; a model with a wrong digest never becomes ready
while the old one keeps serving; a canary of a broken model is rolled back by itself; shifted
inputs raise drift and start a retraining Run whose blessed model then rolls out; labels fed back
that show falling accuracy start a retraining Run too.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client as k8s_client
from sklearn.datasets import load_breast_cancer
from test_operator import EXAMPLE, Operator, create, get_run, run_body, wait_done

from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.nodeagent import NodeAgentProcess
from testenv.processes import wait_until
from testenv.service import Load, Router, infer_body

pytestmark = pytest.mark.e2e

GROUP, VERSION = "conveyor.dev", "v1alpha1"
PIPELINE = "bc-serving"
MD = "cancer"
X, Y = load_breast_cancer(return_X_y=True, as_frame=True)
FEATURES = list(X.columns)


def pipeline_body() -> dict[str, Any]:
    """The example pipeline with a gate after evaluate, and fewer trees to keep the test quick."""
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": PIPELINE}
    for p in body["spec"]["parameters"]:
        if p["name"] == "n_estimators":
            p["default"] = 20
    body["spec"]["steps"].append(
        {
            "name": "gate",
            "uses": "gate",
            "inputs": [
                {"name": "candidate", "step": "train", "output": "model"},
                {"name": "evaluation", "step": "split", "output": "test"},
            ],
            "with": {"label": "target", "thresholds": {"roc_auc": {"min": 0.95}}},
        }
    )
    return body


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def serving_operator(
    control_plane: ControlPlane, minio: S3Endpoint, node_agent: NodeAgentProcess, install_crds: list[str]
) -> Iterator[Operator]:
    op = Operator(
        control_plane,
        minio,
        control_plane.log_dir,
        name="serving-operator",
        extra_env={"CONVEYOR_SERVER_COMMAND": json.dumps([sys.executable, "-m", "conveyor.serving"])},
    ).start()
    yield op
    op.stop()


@pytest.fixture(scope="module")
def sns(control_plane: ControlPlane, minio: S3Endpoint) -> Iterator[str]:
    """One namespace for the whole story, with the artifact-store Secret."""
    name = f"serving-{uuid.uuid4().hex[:6]}"
    with control_plane.api_client() as api:
        yield from _namespace(api, name, minio)


def _namespace(api: k8s_client.ApiClient, name: str, minio: S3Endpoint) -> Iterator[str]:
    core = k8s_client.CoreV1Api(api)
    core.create_namespace(k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name)))
    wait_until(
        lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
        timeout=30,
        what="the default ServiceAccount",
    )
    core.create_namespaced_secret(
        name,
        k8s_client.V1Secret(
            metadata=k8s_client.V1ObjectMeta(name="conveyor-artifacts"),
            string_data={"accessKey": minio.access_key, "secretKey": minio.secret_key},
        ),
    )
    yield name
    core.delete_namespace(name)


def custom(api: k8s_client.ApiClient) -> k8s_client.CustomObjectsApi:
    return k8s_client.CustomObjectsApi(api)


def get_md(api: k8s_client.ApiClient, ns: str, name: str = MD) -> dict[str, Any]:
    obj: Any = custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, "modeldeployments", name)
    return dict(obj)


def patch_md(api: k8s_client.ApiClient, ns: str, spec: dict[str, Any], name: str = MD) -> None:
    custom(api).patch_namespaced_custom_object(GROUP, VERSION, ns, "modeldeployments", name, {"spec": spec})


def condition(md: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in md.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def wait_md(
    api: k8s_client.ApiClient, ns: str, op: Operator, what: str, check: Any, timeout: float = 240, name: str = MD
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        md = get_md(api, ns, name)
        return md if check(md) else None

    try:
        return wait_until(probe, timeout=timeout, what=what, interval=0.5)  # type: ignore[no-any-return]
    except Exception:
        print(json.dumps(get_md(api, ns, name).get("status"), indent=1))
        print(op.log()[-6000:])
        raise


def events(api: k8s_client.ApiClient, ns: str, name: str = MD) -> list[str]:
    items = k8s_client.CoreV1Api(api).list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [e.reason for e in items]


def blessed_model(run: dict[str, Any]) -> dict[str, str]:
    train = next(s for s in run["status"]["steps"] if s["name"] == "train")
    return next(o for o in train["outputs"] if o["name"] == "model")


STATE: dict[str, Any] = {}


# ---------------------------------------------------------------- the story


def fetch_model(minio: S3Endpoint, uri: str, tmp: Path) -> Any:
    from conveyor.components.modelio import load_artifact

    s3 = minio.client()
    try:
        data = s3.get_object(Bucket=minio.bucket, Key=uri.split(f"s3://{minio.bucket}/", 1)[1])["Body"].read()
    finally:
        s3.close()
    (tmp / "model").write_bytes(data)
    return load_artifact(tmp / "model").obj


def test_serves_the_latest_blessed_model_of_a_pipeline(
    api: k8s_client.ApiClient, sns: str, serving_operator: Operator, minio: S3Endpoint, tmp_path: Path
) -> None:
    create(api, sns, "pipelines", pipeline_body())
    create(api, sns, "runs", run_body("train-a", PIPELINE))
    run = wait_done(api, sns, "train-a", serving_operator)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    model_a = blessed_model(run)
    STATE["a"] = model_a
    create(
        api,
        sns,
        "modeldeployments",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": MD},
            "spec": {
                "model": {"pipeline": {"name": PIPELINE}},
                "autoscaling": {"minReplicas": 2, "maxReplicas": 3},
            },
        },
    )
    md = wait_md(
        api, sns, serving_operator, "the model to serve",
        lambda m: condition(m, "Ready").get("status") == "True" and m["status"].get("readyReplicas", 0) >= 2,
    )  # fmt: skip
    assert md["status"]["current"]["digest"] == model_a["digest"]
    assert "Deployed" in events(api, sns)

    # what it owns
    apps = k8s_client.AppsV1Api(api)
    dep = apps.read_namespaced_deployment(MD, sns)
    assert dep.spec.strategy.rolling_update.max_unavailable == 0
    container = dep.spec.template.spec.containers[0]
    assert container.readiness_probe.http_get.path == f"/v2/models/{MD}/ready"
    assert container.liveness_probe.http_get.path == "/v2/health/live"
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.allow_privilege_escalation is False
    assert dep.spec.template.spec.security_context.run_as_non_root is True
    hpa = k8s_client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(MD, sns)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 3)
    assert hpa.spec.scale_target_ref.name == MD
    pdb = k8s_client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(MD, sns)
    assert pdb.spec.max_unavailable == 1
    k8s_client.CoreV1Api(api).read_namespaced_service(MD, sns)

    # correct predictions over HTTP, through the Service's endpoints
    model = fetch_model(minio, model_a["uri"], tmp_path)
    rows = X.to_numpy()[:50]
    with Router(api, sns, MD) as router:
        wait_until(lambda: len(router.endpoints) >= 2, timeout=30, what="two ready endpoints")
        status, body = router.request("POST", f"/v2/models/{MD}/infer", infer_body(rows, "batch-1"))
        assert status == 200, body
        assert body["id"] == "batch-1" and body["model_name"] == MD
        predicted = next(o for o in body["outputs"] if o["name"] == "predict")["data"]
        assert predicted == model.predict(X.iloc[:50]).tolist()
        status, body = router.request("POST", "/predict", {"instances": X.iloc[:3].to_dict(orient="records")})
        assert status == 200 and body["predictions"] == model.predict(X.iloc[:3]).tolist()

        # a third-party v2 client, unchanged
        import tritonclient.http as triton

        host, port = router.endpoints[0]
        tc = triton.InferenceServerClient(url=f"{host}:{port}")
        assert tc.is_server_live() and tc.is_model_ready(MD)
        tensor = triton.InferInput("input-0", [5, 30], "FP64")
        tensor.set_data_from_numpy(X.to_numpy()[:5].astype(np.float64), binary_data=True)
        result = tc.infer(MD, [tensor], outputs=[triton.InferRequestedOutput("predict", binary_data=True)])
        assert result.as_numpy("predict").tolist() == model.predict(X.iloc[:5]).tolist()
        tc.close()


def test_a_newly_blessed_model_rolls_out_under_load_without_dropping_a_request(
    api: k8s_client.ApiClient, sns: str, serving_operator: Operator
) -> None:
    with Router(api, sns, MD) as router, Load(router, MD, X.to_numpy()) as load:
        create(api, sns, "runs", run_body("train-b", PIPELINE, seed=7))
        run = wait_done(api, sns, "train-b", serving_operator)
        assert run["status"]["phase"] == "Succeeded", run["status"]
        model_b = blessed_model(run)
        assert model_b["digest"] != STATE["a"]["digest"]
        STATE["b"] = model_b
        md = wait_md(
            api, sns, serving_operator, "model b to roll out",
            lambda m: (m["status"].get("current") or {}).get("digest") == model_b["digest"],
        )  # fmt: skip
        time.sleep(8)  # old pods drain and stop while the load goes on
    assert md["status"]["previous"]["digest"] == STATE["a"]["digest"]
    assert load.ok > 100, load.ok
    assert load.failures == [], load.failures[:5]
    assert "RolledOut" in events(api, sns)


def test_a_model_with_a_wrong_digest_never_becomes_ready_and_the_old_one_keeps_serving(
    api: k8s_client.ApiClient, sns: str, serving_operator: Operator
) -> None:
    wrong = "sha256:" + "0" * 64
    with Router(api, sns, MD) as router, Load(router, MD, X.to_numpy()) as load:
        patch_md(api, sns, {"model": {"pipeline": None, "uri": STATE["a"]["uri"], "digest": wrong}})
        md = wait_md(
            api, sns, serving_operator, "the wrong digest to be rejected",
            lambda m: (m["status"].get("rejected") or {}).get("digest") == wrong,
        )  # fmt: skip
        assert md["status"]["rejected"]["reason"] == "ModelRejected"
        assert "digest" in md["status"]["rejected"]["message"]
        wait_md(
            api, sns, serving_operator, "the rollback to finish",
            lambda m: condition(m, "Progressing").get("reason") == "Stable" and m["status"]["readyReplicas"] >= 2,
        )  # fmt: skip
    md = get_md(api, sns)
    assert md["status"]["current"]["digest"] == STATE["b"]["digest"]
    assert condition(md, "Degraded")["status"] == "True" and condition(md, "Ready")["status"] == "True"
    assert load.ok > 50 and load.failures == [], load.failures[:5]
    dep = k8s_client.AppsV1Api(api).read_namespaced_deployment(MD, sns)
    assert dep.spec.template.metadata.annotations["conveyor.dev/model-digest"] == STATE["b"]["digest"]


def broken_model(minio: S3Endpoint, tmp: Path) -> tuple[str, str]:
    """A valid, loadable model that expects other inputs: every request made for the real one fails."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline as SkPipeline

    from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, class_path, save_artifact
    from conveyor.storage.s3 import S3Store

    xi, yi = load_iris(return_X_y=True, as_frame=True)
    model = SkPipeline([("model", LogisticRegression(max_iter=500))]).fit(xi, yi)
    path = tmp / "broken.model"
    meta = ArtifactMetadata(
        kind="model",
        estimator=class_path(model.steps[-1][1]),
        task="classification",
        label="target",
        classes=[0, 1, 2],
        inputs=[FeatureSpec(name=c, dtype="float64") for c in xi.columns],
    )
    save_artifact(model, path, meta)
    store = S3Store(minio.bucket, "", client=minio.client())
    stored = store.put_file(path)
    store.client.close()
    return stored.uri, stored.digest


def test_a_canary_of_a_broken_model_rolls_back_by_itself(
    api: k8s_client.ApiClient, sns: str, serving_operator: Operator, minio: S3Endpoint, tmp_path: Path
) -> None:
    uri, digest = broken_model(minio, tmp_path)
    spec = {
        "model": {"uri": uri, "digest": digest},
        "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 50, "pauseSeconds": 30}, {"weight": 100, "pauseSeconds": 30}],
            "analysis": {"maxErrorRate": 0.05, "minRequests": 20},
        },
    }
    with Router(api, sns, MD) as router, Load(router, MD, X.to_numpy()) as load:
        patch_md(api, sns, spec)
        wait_md(
            api, sns, serving_operator, "a canary to start",
            lambda m: (m["status"].get("canary") or {}).get("model", {}).get("digest") == digest,
        )  # fmt: skip
        md = wait_md(
            api, sns, serving_operator, "the canary to be rolled back",
            lambda m: (m["status"].get("rejected") or {}).get("digest") == digest,
        )  # fmt: skip
    assert md["status"]["rejected"]["reason"] == "CanaryFailed", md["status"]["rejected"]
    assert "error rate" in md["status"]["rejected"]["message"]
    assert md["status"]["current"]["digest"] == STATE["b"]["digest"]
    assert "CanaryStarted" in events(api, sns) and "CanaryFailed" in events(api, sns)
    wait_until(
        lambda: (
            not any(
                d.metadata.name == f"{MD}-canary"
                for d in k8s_client.AppsV1Api(api).list_namespaced_deployment(sns).items
            )
        ),
        timeout=30,
        what="the canary Deployment to be removed",
    )
    assert load.ok > 0 and load.failures, "the canary must have answered (badly) some requests"
    assert all(f.startswith("400") for f in load.failures), load.failures[:5]


def test_drift_starts_a_retraining_run_whose_blessed_model_rolls_out(
    api: k8s_client.ApiClient, sns: str, serving_operator: Operator
) -> None:
    patch_md(
        api,
        sns,
        {
            "model": {"uri": None, "digest": None, "pipeline": {"name": PIPELINE}},
            "rollout": {"strategy": "Rolling", "steps": []},
            "monitoring": {
                "drift": {"threshold": 0.2, "windowSeconds": 10},
                "retrain": {"pipeline": PIPELINE, "parameters": {"seed": 11}, "minIntervalSeconds": 600},
            },
        },
    )
    # back to following the Pipeline: its latest blessed model is b
    wait_md(
        api, sns, serving_operator, "b to serve again",
        lambda m: (m["status"].get("current") or {}).get("digest") == STATE["b"]["digest"]
        and condition(m, "Progressing").get("reason") == "Stable",
    )  # fmt: skip
    std = X.std().to_numpy()
    shifted = X.to_numpy() + 3 * std
    with Router(api, sns, MD) as router:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, body = router.request("POST", f"/v2/models/{MD}/infer", infer_body(shifted[:20]))
            assert status == 200, body
            md = get_md(api, sns)
            if (md["status"].get("retraining") or {}).get("run"):
                break
            time.sleep(0.2)
    md = get_md(api, sns)
    assert md["status"]["drift"]["score"] > 0.2, md["status"].get("drift")
    assert condition(md, "Drifting")["status"] == "True", md["status"]
    retrain = md["status"]["retraining"]
    assert retrain["reason"] == "Drift"
    assert "Drifting" in events(api, sns) and "RetrainingStarted" in events(api, sns)
    run = get_run(api, sns, retrain["run"])
    assert run["metadata"]["labels"]["conveyor.dev/trigger"] == "Drift"
    assert run["spec"]["parameters"] == {"seed": 11}
    finished = wait_done(api, sns, retrain["run"], serving_operator)
    assert finished["status"]["phase"] == "Succeeded", finished["status"]
    new_model = blessed_model(finished)
    wait_md(
        api, sns, serving_operator, "the retrained model to roll out",
        lambda m: (m["status"].get("current") or {}).get("digest") == new_model["digest"],
    )  # fmt: skip


def test_falling_live_accuracy_from_fed_back_labels_starts_a_retraining_run(
    api: k8s_client.ApiClient, sns: str, serving_operator: Operator
) -> None:
    name = "cancer-feedback"
    create(
        api,
        sns,
        "modeldeployments",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {
                "model": {"uri": STATE["b"]["uri"], "digest": STATE["b"]["digest"]},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
                "podDisruptionBudget": False,
                "monitoring": {
                    "minAccuracy": 0.8,
                    "minLabels": 20,
                    "predictionSampleRate": 1.0,
                    "retrain": {"pipeline": PIPELINE, "parameters": {"seed": 12}},
                },
            },
        },
    )
    wait_md(
        api, sns, serving_operator, "the feedback deployment to serve",
        lambda m: condition(m, "Ready").get("status") == "True", name=name,
    )  # fmt: skip
    rows = X.to_numpy()[:40]
    with Router(api, sns, name) as router:
        wait_until(lambda: router.endpoints, timeout=30, what="an endpoint")
        for i in range(len(rows)):
            status, body = router.request("POST", f"/v2/models/{name}/infer", infer_body(rows[i : i + 1], f"q{i}"))
            assert status == 200, body
            predicted = next(o for o in body["outputs"] if o["name"] == "predict")["data"][0]
            # the truth turns out to be the other class every time
            status, body = router.request(
                "POST", f"/v2/models/{name}/feedback", {"id": f"q{i}", "row": 0, "label": 1 - int(predicted)}
            )
            assert status == 202, body
    md = wait_md(
        api, sns, serving_operator, "accuracy to drop and retraining to start",
        lambda m: (m["status"].get("retraining") or {}).get("reason") == "AccuracyDropped", name=name, timeout=120,
    )  # fmt: skip
    live = md["status"]["liveAccuracy"]
    assert live[0]["labels"] >= 20 and live[0]["accuracy"] == 0.0, live
    run = get_run(api, sns, md["status"]["retraining"]["run"])
    assert run["metadata"]["labels"]["conveyor.dev/trigger"] == "AccuracyDropped"
    assert "conveyor_model_live_accuracy" in serving_operator.metrics()


def test_an_operator_killed_during_a_canary_leaves_it_finished_never_stuck_and_no_request_fails(
    api: k8s_client.ApiClient, sns: str, serving_operator: Operator
) -> None:
    """SIGKILL the operator three times while a canary of a good model is under load."""
    before = get_md(api, sns)["status"]["current"]["digest"]
    target = STATE["a"] if before != STATE["a"]["digest"] else STATE["b"]
    spec = {
        "model": {"pipeline": None, "uri": target["uri"], "digest": target["digest"]},
        "monitoring": None,
        "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 50, "pauseSeconds": 6}, {"weight": 100, "pauseSeconds": 6}],
            "analysis": {"maxErrorRate": 0.01, "minRequests": 10},
        },
    }
    kills = 0
    with Router(api, sns, MD) as router, Load(router, MD, X.to_numpy()) as load:
        patch_md(api, sns, spec)
        wait_md(
            api, sns, serving_operator, "a canary to start",
            lambda m: (m["status"].get("canary") or {}).get("model", {}).get("digest") == target["digest"],
        )  # fmt: skip
        for pause in (2.0, 5.0, 3.0):
            time.sleep(pause)
            serving_operator.kill()
            kills += 1
            time.sleep(1.0)
            serving_operator.start()
        md = wait_md(
            api, sns, serving_operator, "the canary to finish",
            lambda m: not m["status"].get("canary")
            and ((m["status"].get("current") or {}).get("digest") == target["digest"] or m["status"].get("rejected")),
            timeout=300,
        )  # fmt: skip
        time.sleep(8)  # the canary's pods drain under load
    assert kills == 3
    assert md["status"]["current"]["digest"] == target["digest"], md["status"]  # a good model is promoted
    assert md["status"]["previous"]["digest"] == before
    assert load.ok > 100 and load.failures == [], load.failures[:5]
    names = [d.metadata.name for d in k8s_client.AppsV1Api(api).list_namespaced_deployment(sns).items]
    assert f"{MD}-canary" not in names
