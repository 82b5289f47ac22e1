"""The pure parts of `conveyor rerun`, `report` and `lineage --graph`: the digest proof, the checks of a
record, bad-input dependents, the DAG layout and the drawings."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from conveyor.cli.graph import Graph, Node, dag_graph, layout, lineage_graph, to_svg
from conveyor.cli.lifecycle_commands import print_proof, proof
from conveyor.cli.records import checked_record, lineage
from conveyor.cli.report import gantt_svg
from conveyor.core.validation import InvalidSpec
from conveyor.lifecycle.integrity import MISSING, check_record, downstream_of

A, B, C, D, E = (f"sha256:{c * 64}" for c in "abcde")
SVG = "{http://www.w3.org/2000/svg}"


def record(model: str = C, phase: str = "Succeeded", report: str = D) -> dict[str, Any]:
    return {
        "kind": "RunRecord",
        "runId": "r1",
        "name": "r1",
        "pipeline": "p",
        "phase": phase,
        "parameters": {"n": 1},
        "steps": [
            {
                "name": "ingest",
                "phase": "Succeeded",
                "inputs": [],
                "outputs": [{"name": "data", "digest": A, "uri": "u"}],
                "startedAt": "2026-01-01T00:00:00+00:00",
                "finishedAt": "2026-01-01T00:00:02+00:00",
            },
            {
                "name": "split",
                "phase": "Succeeded",
                "inputs": [{"name": "d", "step": "ingest", "output": "data", "digest": A}],
                "outputs": [{"name": "train", "digest": B, "uri": "u"}],
                "cacheHit": True,
            },
            {
                "name": "train",
                "phase": "Succeeded",
                "inputs": [{"name": "t", "step": "split", "output": "train", "digest": B}],
                "outputs": [
                    {"name": "model", "digest": model, "uri": "u"},
                    {"name": "report", "digest": report, "uri": "u"},
                ],
                "startedAt": "2026-01-01T00:00:02+00:00",
                "finishedAt": "2026-01-01T00:00:05+00:00",
            },
            {
                "name": "evaluate",
                "phase": "Succeeded",
                "inputs": [{"name": "m", "step": "train", "output": "model", "digest": model}],
                "outputs": [],
            },
        ],
    }


def test_proof_identical() -> None:
    rows, models, others = proof(record(), record())
    assert [r[4] for r in rows] == ["=", "=", "=", "="] and models == others == []
    assert print_proof(record(), record(), strict=False) == 0


@pytest.mark.parametrize(
    ("new", "strict", "code", "said"),
    [
        (record(model=E), False, 1, "NOT reproduced: model digest differs for train.model"),
        (record(report=E), False, 0, "model reproduced; other outputs differ: train.report"),
        (record(report=E), True, 1, "other outputs differ: train.report"),
        (record(phase="Failed"), False, 1, "not reproduced: the rerun Failed"),
    ],
)
def test_proof_differences(
    new: dict[str, Any], strict: bool, code: int, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert print_proof(record(), new, strict=strict) == code
    assert said in capsys.readouterr().out


def test_dependents_are_transitive_in_record_order() -> None:
    assert downstream_of(record(), A) == (("split",), ("split", "train", "evaluate"))
    assert downstream_of(record(), C) == (("evaluate",), ("evaluate",))
    problems = check_record(record(), lambda d: MISSING if d == B else None)
    assert [p.text() for p in problems] == [f"split.train {B} is missing; depends on it: train, evaluate"]
    assert check_record(record(), lambda d: None) == []


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (lambda: (_ for _ in ()).throw(ValueError("Expecting value")), "not JSON"),
        (lambda: {"kind": "Other", "steps": []}, "not a RunRecord"),
        (lambda: {"kind": "RunRecord", "steps": [{"outputs": []}]}, "without a name"),
        (lambda: {"kind": "RunRecord", "steps": [{"name": "s", "outputs": [{"name": "o"}]}]}, "without a digest"),
    ],
)
def test_corrupt_records_are_refused_by_name(raw: Any, why: str) -> None:
    with pytest.raises(InvalidSpec, match=f"the record of run 'r1' is corrupt.*{why}"):
        checked_record("r1", raw)


def test_a_sound_record_or_none_passes() -> None:
    assert checked_record("r1", record) == record()
    assert checked_record("r1", lambda: None) is None


def test_layout_puts_every_edge_left_to_right() -> None:
    g = lineage_graph(lineage(record()))
    placed, width, height = layout(g)
    assert g.edges and all(placed[a].x < placed[b].x for a, b in g.edges)
    assert all(0 <= p.x <= width and 0 <= p.y <= height for p in placed.values())
    assert ("out:train.model", "step:evaluate") in g.edges and ("step:split", "out:split.train") in g.edges


def test_svg_marks_problems_and_escapes_labels() -> None:
    g = Graph([Node("a", "<a & b>", state="problem"), Node("b", "b")], [("a", "b")])
    root = ET.fromstring(to_svg(g, "t"))
    nodes = {n.get("data-id"): n for n in root.iter(f"{SVG}g")}
    assert nodes["a"].get("data-state") == "problem"
    assert next(t.text for t in nodes["a"].iter(f"{SVG}text")) == "<a & b>"
    assert [(p.get("data-from"), p.get("data-to")) for p in root.iter(f"{SVG}path") if p.get("class")] == [("a", "b")]


def test_dag_graph_uses_inputs_and_depends_on() -> None:
    g = dag_graph(record()["steps"], {"evaluate": ["split"]})
    assert set(g.edges) == {("ingest", "split"), ("split", "train"), ("train", "evaluate"), ("split", "evaluate")}


def test_gantt_bars_for_steps_that_ran() -> None:
    root = ET.fromstring(gantt_svg(record()["steps"]))
    bars = {r.get("data-step"): float(r.get("width") or 0) for r in root.iter(f"{SVG}rect")}
    assert set(bars) == {"ingest", "train"} and bars["train"] > bars["ingest"]  # 3 s against 2 s
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "cache hit (no pod ran)" in texts and "5.0 s" in texts


def test_gc_refuses_a_malformed_grace_and_collects_an_empty_store(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from conveyor.cli.main import main

    assert main(["gc", "--local", "--state-dir", str(tmp_path), "--grace", "5x"]) == 2
    assert "--grace: not a duration: '5x'" in capsys.readouterr().err
    assert main(["gc", "--local", "--state-dir", str(tmp_path), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == (
        "0 referenced, 0 waiting for the grace period, 0 would delete, 0 cache entries would be dropped"
    )


def fan_record() -> dict[str, Any]:
    """train fanned out over two items (their models B and C); select reads the fan-in collection E."""
    return {
        "kind": "RunRecord",
        "runId": "r2",
        "steps": [
            {"name": "ingest", "inputs": [], "outputs": [{"name": "data", "digest": A, "uri": "u"}]},
            {
                "name": "train",
                "inputs": [{"name": "train", "step": "ingest", "output": "data", "digest": A}],
                "outputs": [{"name": "model", "digest": E, "uri": "collection:train/model", "size": 2}],
            },
            {
                "name": "select",
                "inputs": [{"name": "models", "step": "train", "output": "model", "digest": E}],
                "outputs": [{"name": "model", "digest": C, "uri": "u"}],
            },
            {
                "name": "gate",
                "inputs": [{"name": "candidate", "step": "select", "output": "model", "digest": C}],
                "outputs": [{"name": "verdict", "digest": D, "uri": "u"}],
            },
        ],
        "items": {
            "train": [
                {"key": "train[0]", "outputs": [{"name": "model", "digest": B, "uri": "u"}]},
                {"key": "train[1]", "outputs": [{"name": "model", "digest": C, "uri": "u"}]},
            ]
        },
    }


def test_a_fan_in_collection_is_checked_through_its_members_never_as_a_blob() -> None:
    blobs = {A, B, C, D}  # E, the collection, is no blob
    assert check_record(fan_record(), lambda d: None if d in blobs else MISSING) == []
    problems = check_record(fan_record(), lambda d: None if d in blobs - {B} else MISSING)
    assert [p.text() for p in problems] == [f"train[0].model {B} is missing; depends on it: select, gate"]
    assert downstream_of(fan_record(), B) == (("select",), ("select", "gate"))
