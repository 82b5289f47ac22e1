"""The chart's grant for resource steps: exactly the kinds `resourceSteps.allowed` lists, with the verbs the
operator uses on them (kube/objects.py: create, get, delete), and nothing by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.controller.config import load_config
from conveyor.core.resources import MANAGED_GROUPS
from integration.test_chart import CHART, Helm, container, rules_of
from testenv.binaries import Binaries

pytestmark = pytest.mark.integration

OBJECT_VERBS = {"create", "get", "delete"}  # StepObjects.create / get / delete
RAY = {"apiGroups": ["ray.io"], "resources": ["rayjobs"]}
TESTING = {"apiGroups": ["testing.conveyor.dev", "batch.example.dev"], "resources": ["engines", "jobs"]}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(Binaries.locate().helm, tmp_path_factory.mktemp("helm"))


def granted(helm: Helm, values: dict[str, Any]) -> set[tuple[str, str, str]]:
    docs = helm.template("conveyor", "conveyor-system", values)
    return rules_of(*[d for d in docs if d["kind"] in ("ClusterRole", "Role")])


@pytest.mark.parametrize("watch", [[], ["team-a"]], ids=["cluster-wide", "namespaced"])
def test_resource_steps_grant_only_what_the_values_allow(helm: Helm, watch: list[str]) -> None:
    base = granted(helm, {"watchNamespaces": watch})
    assert not {t for t in base if t[0] in ("ray.io", "testing.conveyor.dev", "batch.example.dev")}
    extra = granted(helm, {"watchNamespaces": watch, "resourceSteps": {"allowed": [RAY, TESTING]}}) - base
    assert extra == {("ray.io", "rayjobs", v) for v in OBJECT_VERBS} | {
        (g, r, v) for g in TESTING["apiGroups"] for r in TESTING["resources"] for v in OBJECT_VERBS
    }


def test_the_grant_sits_in_the_role_bound_in_the_watched_namespaces(helm: Helm) -> None:
    docs = helm.template(
        "conveyor", "conveyor-system", {"watchNamespaces": ["team-a"], "resourceSteps": {"allowed": [RAY]}}
    )
    role = next(d for d in docs if d["kind"] == "ClusterRole" and any("ray.io" in r["apiGroups"] for r in d["rules"]))
    bindings = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == role["metadata"]["name"]]
    assert [b["metadata"]["namespace"] for b in bindings] == ["team-a"]


@pytest.mark.parametrize(
    "allowed",
    [
        [{"apiGroups": ["*"], "resources": ["rayjobs"]}],
        [{"apiGroups": ["ray.io"], "resources": ["*"]}],
        [{"apiGroups": ["ray.io"]}],
        *([{"apiGroups": [g], "resources": ["things"]}] for g in MANAGED_GROUPS),
    ],
    ids=["wildcard-group", "wildcard-resource", "no-resources", *(f"managed-{g or 'core'}" for g in MANAGED_GROUPS)],
)
def test_wildcards_and_half_rules_are_refused_by_the_values_schema(helm: Helm, tmp_path: Path, allowed: Any) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"resourceSteps": {"allowed": allowed}}))
    done = helm.run("template", "conveyor", str(CHART), "--values", str(values))
    assert done.returncode != 0 and "resourceSteps" in done.stderr, done.stderr


def operator_env(helm: Helm, values: dict[str, Any]) -> dict[str, str]:
    docs = helm.template("conveyor", "conveyor-system", values)
    c = container(docs)
    return {e["name"]: e["value"] for e in c["env"] if "value" in e and e["name"].startswith("CONVEYOR_")}


def test_the_operator_is_told_exactly_the_allowed_kinds(helm: Helm) -> None:
    """The grant alone is not the limit (the operator's own grants cover Deployments, Jobs, ...): the operator is
    told the same pairs and refuses any other kind itself."""
    assert load_config(operator_env(helm, {})).resource_kinds == []
    env = operator_env(helm, {"resourceSteps": {"allowed": [RAY, TESTING]}})
    assert load_config(env).resource_kinds == [
        "ray.io/rayjobs",
        "testing.conveyor.dev/engines",
        "testing.conveyor.dev/jobs",
        "batch.example.dev/engines",
        "batch.example.dev/jobs",
    ]
