"""The Lineage and Pipelines documents, pure: which run made an artifact, the walk back to the data, redaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from console.harness import call
from conveyor.api.pipeline import PipelineSpec
from conveyor.console.app import ConsoleApp
from conveyor.console.lineage import artifact_index, lineage_view, models_view
from conveyor.console.pipelines import pipeline_view, pipelines_view, spec_view
from conveyor.console.source import LocalSource
from conveyor.console.views import BadQuery, RunRow
from conveyor.core.redact import REDACTED

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
D = {name: "sha256:" + (c * 64) for name, c in (("data", "a"), ("train", "b"), ("tf", "c"), ("m1", "d"), ("m2", "e"))}
EXTERNAL = "sha256:" + "f" * 64


def out(name: str, digest: str) -> dict[str, Any]:
    return {"name": name, "digest": digest, "uri": f"file:///store/{digest[7:15]}", "size": 10}


def frm(name: str, step: str, output: str, digest: str) -> dict[str, Any]:
    return {"name": name, "step": step, "output": output, "digest": digest}


def record(run: str, minutes: int, model: str, hit: bool, **parameters: Any) -> dict[str, Any]:
    """ingest (reads an external URI) → prep → train; with `hit`, ingest and prep were cache hits."""

    def s(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], cached: bool) -> dict[str, Any]:
        return {
            "name": name,
            "phase": "Succeeded",
            "cacheHit": cached,
            "cacheKey": f"k-{name}",
            "component": name,
            "image": None,
            "parameters": {k: v for k, v in parameters.items() if name == "train"},
            "inputs": inputs,
            "outputs": outputs,
        }

    return {
        "kind": "RunRecord",
        "runId": run,
        "name": run,
        "pipeline": "p",
        "pipelineSpecDigest": "sha256:" + "1" * 64,
        "codeVersion": "0.1.0",
        "phase": "Succeeded",
        "startedAt": (T0 + timedelta(minutes=minutes)).isoformat(),
        "parameters": parameters,
        "steps": [
            s("ingest", [{"name": "raw", "uri": "s3://u:pw@bucket/raw.csv", "digest": EXTERNAL}], [out("data", D["data"])], hit),
            s("prep", [frm("data", "ingest", "data", D["data"])], [out("train", D["train"]), out("tf", D["tf"])], hit),
            s("train", [frm("train", "prep", "train", D["train"]), frm("tf", "prep", "tf", D["tf"])], [out("model", model)], False),
            s("serve", [frm("model", "train", "model", model)], [], False),
        ],
    }  # fmt: skip


FIRST = record("r-1", 0, D["m1"], hit=False, depth=2, api_token="hunter2")
SECOND = record("r-2", 5, D["m2"], hit=True, depth=3, api_token="hunter2")


def test_lineage_walks_back_from_the_model_to_the_data_and_into_the_run_that_computed_cache_hits() -> None:
    view = lineage_view(artifact_index([SECOND, FIRST]), D["m2"])
    assert view["madeBy"]["run"] == "r-2" and view["madeBy"]["step"] == "train"
    assert [(h["step"], h["hops"], h["computedIn"]) for h in view["steps"]] == [
        ("train", 0, None),
        ("prep", 1, "r-1"),
        ("ingest", 2, "r-1"),
    ]
    assert [h["source"] for h in view["steps"]] == [False, False, True]
    assert view["data"] == [{"uri": f"s3://u:{REDACTED}@bucket/raw.csv", "digest": EXTERNAL, "readBy": "ingest"}]
    assert view["readBy"] == [{"run": "r-2", "step": "serve"}]
    assert view["runs"] == ["r-2", "r-1"]
    assert view["steps"][0]["parameters"] == {"depth": 3, "api_token": REDACTED}
    assert view["madeBy"]["parameters"]["api_token"] == REDACTED
    assert 'data-id="step:serve"' not in view["graph"] and 'data-id="step:ingest"' in view["graph"]
    assert "hunter2" not in str(view) and ":pw@" not in str(view)


def test_an_artifact_is_made_by_the_oldest_run_that_ran_the_step_not_one_that_reused_it() -> None:
    index = artifact_index([SECOND, FIRST])
    assert lineage_view(index, D["data"])["madeBy"]["run"] == "r-1"
    reused_only = artifact_index([SECOND])
    view = lineage_view(reused_only, D["data"])
    assert view["madeBy"]["run"] == "r-2" and view["madeBy"]["cacheHit"] is True
    assert view["steps"][0]["computedIn"] is None  # the run that ran it has no record here


def test_an_external_input_has_readers_but_no_producer() -> None:
    view = lineage_view(artifact_index([FIRST, SECOND]), EXTERNAL)
    assert view["found"] is False and view["steps"] == []
    assert [r["run"] for r in view["readBy"]] == ["r-1", "r-2"]


@pytest.mark.parametrize(
    ("given", "error", "says"),
    [
        (D["m1"][:16], None, ""),
        ("sha256:dd", BadQuery, "at least 6 hex digits"),
        ("nonsense", BadQuery, "expected sha256:"),
        ("sha256:" + "9" * 10, LookupError, "no recorded run"),
    ],
)
def test_a_digest_may_be_a_unique_prefix(given: str, error: type[Exception] | None, says: str) -> None:
    index = artifact_index([FIRST, SECOND])
    if error is None:
        assert lineage_view(index, given)["digest"] == D["m1"]
        return
    with pytest.raises(error, match=says):
        lineage_view(index, given)


def test_an_ambiguous_prefix_is_refused() -> None:
    near = record("r-3", 9, "sha256:" + "d" * 63 + "0", hit=False)
    with pytest.raises(BadQuery, match="matches 2 artifacts"):
        lineage_view(artifact_index([FIRST, near]), "sha256:dddddddd")


def test_with_the_stored_spec_each_step_shows_its_settings_redacted() -> None:
    spec = PipelineSpec.model_validate(
        {
            "steps": [
                {"name": "ingest", "uses": "ingest", "with": {"source": "s3://k:pw@b/raw.csv", "token": "hunter2"}},
                {"name": "prep", "uses": "preprocess"},
                {"name": "train", "uses": "train", "with": {"estimator": "sklearn.tree.DecisionTreeClassifier"}},
                {"name": "serve", "uses": "train"},
            ]
        }
    )
    view = lineage_view(artifact_index([FIRST]), D["m1"], specs={FIRST["pipelineSpecDigest"]: spec})
    settings = {h["step"]: h["settings"] for h in view["steps"]}
    assert settings == {
        "train": {"estimator": "sklearn.tree.DecisionTreeClassifier"},
        "prep": None,
        "ingest": {"source": f"s3://k:{REDACTED}@b/raw.csv", "token": REDACTED},
    }
    assert all(h["settings"] is None for h in lineage_view(artifact_index([FIRST]), D["m1"])["steps"])


def test_missing_artifacts_are_marked_where_they_appear() -> None:
    view = lineage_view(artifact_index([FIRST]), D["m1"], lambda d: "missing" if d == D["tf"] else None)
    assert view["problems"] == {D["tf"]: "missing"}
    train, prep = view["steps"][0], view["steps"][1]
    assert [i["problem"] for i in train["inputs"]] == [None, "missing"]
    assert [o["problem"] for o in prep["outputs"]] == [None, "missing"]
    assert 'data-state="problem"' in view["graph"]


def test_a_fan_out_item_model_is_traced_through_its_step() -> None:
    fanned = record("r-4", 1, "sha256:" + "0" * 64, hit=False)
    fanned["items"] = {
        "train": [{"key": "train[1]", "index": 1, "cacheHit": False, "outputs": [out("model", D["m1"])]}]
    }
    view = lineage_view(artifact_index([fanned]), D["m1"])
    assert view["madeBy"]["item"] == "train[1]" and [h["step"] for h in view["steps"]] == ["train", "prep", "ingest"]


def test_models_are_listed_once_newest_first_with_the_run_that_computed_them() -> None:
    again = record("r-5", 10, D["m1"], hit=True)  # reused r-1's model
    doc = models_view(artifact_index([FIRST, SECOND, again]))
    assert [(m["digest"], m["run"], m["runs"]) for m in doc["models"]] == [(D["m2"], "r-2", 1), (D["m1"], "r-1", 2)]
    assert doc["total"] == 2


SPEC = PipelineSpec.model_validate(
    {
        "description": "d",
        "parameters": [
            {"name": "depth", "type": "integer", "default": 2},
            {"name": "db_password", "type": "string", "default": "hunter2"},
        ],
        "steps": [
            {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
            {
                "name": "push",
                "container": {"image": "busybox", "command": ["sh", "-c", "curl -u x:hunter2 h"]},
                "inputs": [{"name": "d", "step": "ingest", "output": "dataset"}],
                "forEach": {"items": [1, 2]},
            },
        ],
        "schedule": {"cron": "0 * * * *"},
        "triggers": [{"s3": {"uri": "s3://bucket/new/"}}],
    }
)


def test_a_spec_shows_parameters_steps_schedule_and_triggers_but_no_command_or_secret() -> None:
    view = spec_view(SPEC)
    assert view["parameters"][0] == {"name": "depth", "type": "integer", "default": 2, "description": None}
    assert view["parameters"][1]["default"] == REDACTED
    assert [(s["name"], s["what"], s["forEach"]) for s in view["steps"]] == [
        ("ingest", "component ingest", None),
        ("push", "image busybox", "2 items"),
    ]
    assert view["steps"][1]["inputs"] == [{"name": "d", "from": "ingest.dataset", "digest": None}]
    assert view["schedule"]["cron"] == "0 * * * *" and view["triggers"][0]["what"] == "s3://bucket/new/"
    assert "hunter2" not in str(view) and "curl" not in str(view)


def rows() -> list[RunRow]:
    return [
        RunRow("r-1", "p", "Succeeded", T0, 3.0, "4/4"),
        RunRow("r-2", "p", "Succeeded", T0 + timedelta(minutes=5), 2.0, "4/4"),
        RunRow("r-9", "p", "Running", T0 + timedelta(minutes=9), None, "1/4"),  # no record yet
        RunRow("q-1", "q", "Failed", T0, 1.0, "1/2"),
    ]


def test_pipelines_list_counts_runs_by_phase_and_names_the_newest() -> None:
    doc = pipelines_view(rows(), [FIRST, SECOND])
    assert [(p["name"], p["runs"], p["phases"], p["versions"], p["lastRun"]["id"]) for p in doc["pipelines"]] == [
        ("p", 3, {"Running": 1, "Succeeded": 2}, 1, "r-9"),
        ("q", 1, {"Failed": 1}, 0, "q-1"),
    ]


def test_a_pipeline_shows_its_versions_and_recent_runs_newest_first() -> None:
    other = {**FIRST, "runId": "r-0", "pipelineSpecDigest": "sha256:" + "2" * 64}
    doc = pipeline_view("p", [*rows(), RunRow("r-0", "p", "Failed", T0 - timedelta(hours=1), 1.0, "1/4")],
                        [FIRST, SECOND, other], {FIRST["pipelineSpecDigest"]: SPEC})  # fmt: skip
    assert [r["id"] for r in doc["runs"]] == ["r-9", "r-2", "r-1", "r-0"] and doc["total"] == 4
    assert doc["runs"][1]["parameters"] == {"depth": 3, "api_token": REDACTED}
    assert doc["runs"][0]["pipelineSpecDigest"] is None  # still running: no record
    assert [(v["digest"][-4:], v["runs"], v["firstRun"], v["lastRun"], v["stored"]) for v in doc["versions"]] == [
        ("1111", 2, "r-1", "r-2", True),
        ("2222", 1, "r-0", "r-0", False),
    ]
    assert doc["versions"][0]["spec"]["parameters"][1]["default"] == REDACTED
    assert pipeline_view("p", rows(), [], {}, recent=1)["runs"][0]["id"] == "r-9"
    with pytest.raises(LookupError, match="no run"):
        pipeline_view("nope", rows(), [], {})


def test_the_app_serves_lineage_and_pipelines_from_a_state_directory(tmp_path: Path) -> None:
    """LocalSource over hand-written records (their artifacts never stored) through the ASGI app."""
    for r in (FIRST, SECOND):
        (tmp_path / "runs" / r["runId"]).mkdir(parents=True)
        (tmp_path / "runs" / r["runId"] / "record.json").write_text(json.dumps(r))
    app = ConsoleApp(LocalSource(tmp_path))
    for page in ("/lineage", "/lineage/" + D["m2"], "/pipelines", "/pipelines/p"):
        status, headers, body = call(app, "GET", page)
        assert status == 200 and headers[b"content-type"].startswith(b"text/html") and b"data-page=" in body

    def get(path: str) -> tuple[int, Any]:
        status, _, body = call(app, "GET", path)
        return status, json.loads(body)

    assert get("/api/lineage")[1]["total"] == 2
    status, view = get("/api/lineage/" + D["m2"][:20].replace(":", "%3A"))
    assert status == 200 and [h["step"] for h in view["steps"]] == ["train", "prep", "ingest"]
    assert set(view["problems"].values()) == {"missing"}  # nothing is in the (empty) store
    assert get("/api/pipelines")[1]["pipelines"][0]["name"] == "p"
    status, pipeline = get("/api/pipelines/p")
    assert status == 200 and pipeline["versions"][0]["stored"] is False and len(pipeline["runs"]) == 2
    assert get("/api/lineage/sha256:" + "9" * 64)[0] == 404
    assert get("/api/lineage/sha256:12")[0] == 400
    assert get("/api/pipelines/nope")[0] == 404
    assert all(b"hunter2" not in call(app, "GET", p)[2] for p in ("/api/lineage/" + D["m2"], "/api/pipelines/p"))
