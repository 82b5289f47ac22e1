"""The run record (core/record.py) and the pure parts of the commands that read it, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.run import ArtifactRef, RunPhase, StepPhase
from conveyor.cli.records import age, comparison, lineage, lineage_text, split_log_name, table
from conveyor.core.planner import StepState
from conveyor.core.record import (
    log_document,
    parameters_used,
    record_document,
    run_record,
    spec_digest,
)
from conveyor.runtime.step import LogArchive

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def digest(c: str) -> str:
    return "sha256:" + c * 64


def ref(name: str, c: str) -> ArtifactRef:
    return ArtifactRef(name=name, uri=f"s3://b/blobs/{c}", digest=digest(c), size=10)


def spec(**extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "parameters": [
                {"name": "trees", "type": "integer", "default": 100},
                {"name": "scaling", "type": "string", "default": "standard"},
                {"name": "xs", "type": "list", "default": [1, 2]},
                {"name": "token", "type": "string", "default": "unused"},
            ],
            "steps": [
                {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
                {
                    "name": "train",
                    "uses": "train",
                    "inputs": [
                        {"name": "train", "step": "ingest", "output": "dataset"},
                        {"name": "extra", "uri": "file:///data/x.csv"},
                    ],
                    "with": {"label": "target", "params": {"n_estimators": "{{ params.trees }}"}},
                    "when": "params.scaling != 'none'",
                },
                {
                    "name": "square",
                    "container": {
                        "image": "python:3.11",
                        "command": ["python", "-c", "x"],
                        "args": ["{{ item }}"],
                        "env": [{"name": "S", "value": "{{ params.scaling }}"}],
                    },
                    "forEach": {"parameter": "xs"},
                    "outputs": [{"name": "value"}],
                    "dependsOn": ["ingest"],
                },
            ],
            **extra,
        }
    )


PARAMS = {"trees": 100, "scaling": "standard", "xs": [1, 2], "token": "unused"}


def done(outputs: dict[str, ArtifactRef] | None = None, **kw: Any) -> StepState:
    base: dict[str, Any] = {
        "phase": StepPhase.SUCCEEDED,
        "attempts": 1,
        "cache_key": digest("c"),
        "outputs": outputs or {},
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=2.5),
        "created_at": T0,
    }
    return StepState(**{**base, **kw})


STATES = {
    "ingest": done({"dataset": ref("dataset", "a")}, cache_hit=True, attempts=0),
    "train": done({"model": ref("model", "b")}, attempts=2, metrics={"accuracy": 0.9}),
    "square": done({"value": ref("value", "e")}, attempts=0),
    "square[0]": done({"value": ref("value", "1")}),
    "square[1]": done({"value": ref("value", "2")}, attempts=3),
}


def record(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "run_id": "uid-1",
        "run_name": "first",
        "namespace": "team",
        "pipeline": "iris",
        "spec": spec(),
        "parameters": PARAMS,
        "code_version": "0.1.0",
        "states": STATES,
        "phase": RunPhase.SUCCEEDED,
        "reason": "AllStepsSucceeded",
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=12),
        "external_digests": {"file:///data/x.csv": digest("f")},
        "step_image": "conveyor-step:1",
    }
    return run_record(**{**args, **kw})


def step(rec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in rec["steps"] if s["name"] == name)


# ------------------------------------------------------------------ the record


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("kind",), "RunRecord"),
        (("runId",), "uid-1"),
        (("name",), "first"),
        (("pipeline",), "iris"),
        (("codeVersion",), "0.1.0"),
        (("phase",), "Succeeded"),
        (("seconds",), 12.0),
        (("parameters", "trees"), 100),
        (("startedAt",), T0.isoformat()),
    ],
)
def test_run_level_fields(path: tuple[str, ...], expected: Any) -> None:
    value: Any = record()
    for p in path:
        value = value[p]
    assert value == expected


@pytest.mark.parametrize(
    ("name", "field", "expected"),
    [
        # inputs: name → digest, with the producing step's output (or the external URI)
        ("ingest", "inputs", []),
        (
            "train",
            "inputs",
            [
                {"name": "train", "step": "ingest", "output": "dataset", "digest": digest("a")},
                {"name": "extra", "uri": "file:///data/x.csv", "digest": digest("f")},
            ],
        ),
        # only the parameters a step reads (templates, `when`, forEach), with their values
        ("ingest", "parameters", {}),
        ("train", "parameters", {"trees": 100, "scaling": "standard"}),
        ("square", "parameters", {"scaling": "standard", "xs": [1, 2]}),
        # images: the step image for components, the container's own otherwise
        ("train", "image", "conveyor-step:1"),
        ("square", "image", "python:3.11"),
        ("train", "component", "train"),
        ("train", "attempts", 2),
        ("ingest", "cacheHit", True),
        ("train", "cacheKey", digest("c")),
        ("train", "seconds", 2.5),
        ("train", "metrics", {"accuracy": 0.9}),
        ("train", "outputs", [{"name": "model", "uri": "s3://b/blobs/b", "digest": digest("b"), "size": 10}]),
        # archived logs: one per attempt; a fan-out's per item; a cache hit has none
        ("ingest", "logs", []),
        ("train", "logs", ["runs/uid-1/logs/train-1.log", "runs/uid-1/logs/train-2.log"]),
        (
            "square",
            "logs",
            ["runs/uid-1/logs/square[0]-1.log"] + [f"runs/uid-1/logs/square[1]-{n}.log" for n in (1, 2, 3)],
        ),
        ("square", "itemCount", 2),
    ],
)
def test_step_fields(name: str, field: str, expected: Any) -> None:
    assert step(record(), name)[field] == expected


def test_steps_in_dependency_order_and_no_items_inline() -> None:
    rec = record()
    names = [s["name"] for s in rec["steps"]]
    assert sorted(names) == ["ingest", "square", "train"] and names[0] == "ingest"
    assert "itemCount" not in step(rec, "train")
    assert "square[0]" not in {s["name"] for s in rec["steps"]}
    assert step(rec, "square")["fanOut"]["total"] == 2


@pytest.mark.parametrize(
    ("states", "name", "expected_digest"),
    [
        ({}, "train", None),  # nothing ran upstream (a failed run): the input is named, its digest unknown
        ({"ingest": done({})}, "train", None),
        ({"ingest": done({"dataset": ref("dataset", "d")})}, "train", digest("d")),
    ],
)
def test_inputs_of_runs_that_did_not_finish(
    states: dict[str, StepState], name: str, expected_digest: str | None
) -> None:
    rec = record(states=states, phase=RunPhase.FAILED, finished_at=None)
    assert step(rec, name)["inputs"][0]["digest"] == expected_digest
    assert rec["seconds"] is None and rec["phase"] == "Failed"


def test_pure_and_deterministic() -> None:
    assert record() == record()


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({}, True),
        ({"description": "another description"}, False),
        ({"parallelism": 3}, False),
    ],
)
def test_spec_digest_covers_the_whole_spec(change: dict[str, Any], same: bool) -> None:
    assert (spec_digest(spec(**change)) == spec_digest(spec())) is same


def test_no_secret_values_recorded() -> None:
    s = spec()
    s.steps[2].container.env[0].value = "hunter2-literal"  # type: ignore[union-attr]
    assert "hunter2" not in str(record(spec=s))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ingest", []), ("train", ["scaling", "trees"]), ("square", ["scaling", "xs"])],
)
def test_parameters_used(name: str, expected: list[str]) -> None:
    assert parameters_used(next(s for s in spec().steps if s.name == name)) == expected


def test_document_names() -> None:
    assert record_document("u") == "runs/u/record.json"
    assert log_document("u", "train[3]", 2) == "runs/u/logs/train[3]-2.log"
    assert split_log_name(log_document("u", "train[3]", 2)) == ("train[3]", 2)
    assert split_log_name(log_document("u", "pre-process", 12)) == ("pre-process", 12)


# ------------------------------------------------------------------ the log archive


@pytest.mark.parametrize(
    ("writes", "limit", "text"),
    [
        ([b"a\n", b"b\n"], 100, "a\nb\n"),
        ([], 100, ""),
        (
            [b"x" * 60, b"y" * 60],
            100,
            "[... 20 earlier bytes dropped: the archive keeps the last 100 ...]\n" + "x" * 40 + "y" * 60,
        ),
        (
            [b"x" * 60, b"y" * 60, b"z" * 60],
            100,
            "[... 80 earlier bytes dropped: the archive keeps the last 100 ...]\n" + "y" * 40 + "z" * 60,
        ),
    ],
)
def test_log_archive_keeps_the_last_bytes(writes: list[bytes], limit: int, text: str) -> None:
    archive = LogArchive(limit)
    for w in writes:
        archive.write(w)
    assert archive.text() == text


# ------------------------------------------------------------------ what the commands show


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (5, "5s"),
        (119, "119s"),
        (200, "3m20s"),
        (240, "4m"),
        (1000, "16m"),
        (3 * 3600 + 120, "3h2m"),
        (10 * 3600, "10h"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
    ],
)
def test_age_like_kubectl(seconds: int, expected: str) -> None:
    assert age(T0, T0 + timedelta(seconds=seconds)) == expected


def test_table_like_kubectl() -> None:
    assert table(["NAME", "PHASE"], [["a", "Succeeded"], ["longer", "Failed"]]).splitlines() == [
        "NAME     PHASE",
        "a        Succeeded",
        "longer   Failed",
    ]


def test_lineage_names_producers_digests_and_parameters() -> None:
    text = lineage_text(lineage(record()))
    assert f"train ← ingest.dataset  {digest('a')}" in text
    assert f"extra ← file:///data/x.csv  {digest('f')}" in text
    assert f"out  model  {digest('b')}" in text
    assert "params  scaling=standard, trees=100" in text
    assert "[Succeeded, cache hit]" in text


def test_comparison_marks_what_differs() -> None:
    other_states = {**STATES, "train": done({"model": ref("model", "9")}, metrics={"accuracy": 0.8})}
    rows = comparison([record(), record(parameters={**PARAMS, "trees": 50}, states=other_states)])
    differing = {(section, name) for section, name, _, differs in rows if differs}
    assert differing == {("parameter", "trees"), ("metric", "train.accuracy"), ("output", "train.model")}
    values = {name: v for _, name, v, _ in rows}
    assert values["trees"] == ["100", "50"] and values["train.accuracy"] == ["0.9", "0.8"]


def test_items_of_a_fan_out_are_in_the_record_from_either_shell() -> None:
    items = record()["items"]["square"]
    assert [(u["key"], u["index"], u["outputs"][0]["digest"]) for u in items] == [
        ("square[0]", 0, digest("1")),
        ("square[1]", 1, digest("2")),
    ]


def grid_spec(*keys: str) -> PipelineSpec:
    grid = {"max_depth": [2, 6], "n_estimators": [10, 40], "max_features": ["sqrt", 0.5]}
    return spec(steps=[{**spec().to_wire()["steps"][2], "forEach": {"grid": {k: grid[k] for k in keys}}}])


def test_a_grids_key_order_is_part_of_the_spec_and_survives_the_store(tmp_path: Any) -> None:
    from conveyor.lifecycle.specs import load_spec, store_spec
    from conveyor.storage.local import LocalStore

    document_order = grid_spec("max_depth", "n_estimators", "max_features")
    sorted_order = grid_spec("max_depth", "max_features", "n_estimators")
    assert spec_digest(document_order) != spec_digest(sorted_order)  # their items come in another order
    store = LocalStore(tmp_path)
    loaded = load_spec(store, store_spec(store, document_order, "p"))
    assert loaded is not None and loaded.steps[0].for_each is not None and loaded.steps[0].for_each.grid is not None
    assert list(loaded.steps[0].for_each.grid) == ["max_depth", "n_estimators", "max_features"]
