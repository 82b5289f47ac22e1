"""The CRDs in crds/ are exactly what the generator writes from the API models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.api.crd import KINDS, render_crds

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "charts" / "conveyor" / "crds"
"""Helm installs the CRDs from the chart's crds/: the same generator output, byte for byte."""


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_committed_crd_matches_the_generator(name: str) -> None:
    committed = (CRDS / name).read_text() if (CRDS / name).exists() else ""
    assert committed == render_crds()[name], f"crds/{name} is stale: run `conveyor crds`"


def test_no_stray_crd_files() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(render_crds())


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_chart_crd_matches_the_generator(name: str) -> None:
    committed = (CHART_CRDS / name).read_text() if (CHART_CRDS / name).exists() else ""
    assert committed == render_crds()[name], f"charts/conveyor/crds/{name} is stale: run `conveyor crds`"


def test_no_stray_chart_crd_files() -> None:
    assert sorted(p.name for p in CHART_CRDS.iterdir()) == sorted(render_crds())


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for k, v in schema.get("properties", {}).items():
        out += _walk(v, f"{path}.{k}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _walk(schema["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_described(kind: Any) -> None:
    crd = yaml.safe_load(render_crds()[f"{kind.crd_name}.yaml"].split("\n", 1)[1])
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["conveyor"] and crd["spec"]["names"]["shortNames"]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert node.get("type") or node.get("x-kubernetes-preserve-unknown-fields"), f"untyped {path}"
        assert not ("properties" in node and "additionalProperties" in node), path
    # every field has a description for `kubectl explain`
    for part in ("spec", "status"):
        undocumented = [
            p
            for p, n in _walk(root["properties"][part])
            if p and "description" not in n and not p.endswith(("[]", "{}"))
        ]
        assert undocumented == [], part


def test_run_printer_columns() -> None:
    crd = yaml.safe_load(render_crds()["runs.conveyor.dev.yaml"].split("\n", 1)[1])
    cols = {c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert cols["Pipeline"] == ".status.pipeline" and cols["Phase"] == ".status.phase"
    assert cols["Steps"] == ".status.progress" and cols["Age"] == ".metadata.creationTimestamp"


def test_cel_rules_reach_the_crd() -> None:
    crd = yaml.safe_load(render_crds()["pipelines.conveyor.dev.yaml"].split("\n", 1)[1])
    steps = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["steps"]
    rules = [r["rule"] for r in steps["items"]["x-kubernetes-validations"]]
    assert "[has(self.uses), has(self.container), has(self.resource)].filter(x, x).size() == 1" in rules
    assert steps["x-kubernetes-list-type"] == "map" and steps["x-kubernetes-list-map-keys"] == ["name"]
