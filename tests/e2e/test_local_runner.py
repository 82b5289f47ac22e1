"""The local runner end to end: real subprocesses through the step runtime, a real directory store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.api.pipeline import Pipeline
from conveyor.api.run import RunPhase, StepPhase
from conveyor.local.runner import LocalRunner, RunOutcome
from conveyor.storage.digest import hex_of, sha256_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "breast-cancer" / "pipeline.yaml"
PY = sys.executable


def load(path: Path) -> Pipeline:
    return Pipeline.model_validate(yaml.safe_load(path.read_text()))


def run_pipeline(pipeline: Pipeline, state: Path, **params: Any) -> RunOutcome:
    from conveyor.core.validation import resolve_parameters

    values, issues = resolve_parameters(pipeline.spec, params)
    assert issues == []
    return LocalRunner(pipeline.spec, values, pipeline_name="t", state_dir=state).run()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "conveyor.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def example_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunOutcome]:
    state = tmp_path_factory.mktemp("state")
    return state, run_pipeline(load(EXAMPLE), state)


def test_example_succeeds_with_real_metrics(example_state: tuple[Path, RunOutcome]) -> None:
    state, outcome = example_state
    assert outcome.phase is RunPhase.SUCCEEDED, outcome.message
    evaluate = outcome.states["evaluate"]
    assert evaluate.metrics["roc_auc"] >= 0.97
    assert 0.9 <= evaluate.metrics["accuracy"] <= 1.0
    # every output is in the store under its digest, with that content
    for name, st in outcome.states.items():
        assert st.outputs, name
        for ref in st.outputs.values():
            blob = state / "store" / "blobs" / "sha256" / hex_of(ref.digest)[:2] / hex_of(ref.digest)
            assert sha256_file(blob) == ref.digest
    record = json.loads(outcome.record_path.read_text())
    assert record["phase"] == "Succeeded" and record["parameters"]["n_estimators"] == 200
    assert {s["name"] for s in record["steps"]} == {"ingest", "validate", "split", "preprocess", "train", "evaluate"}
    assert all(s["outputs"][0]["digest"].startswith("sha256:") for s in record["steps"])


def test_unchanged_rerun_is_all_cache_hits(example_state: tuple[Path, RunOutcome]) -> None:
    state, first = example_state
    again = run_pipeline(load(EXAMPLE), state)
    assert again.phase is RunPhase.SUCCEEDED
    assert all(s.cache_hit and s.attempts == 0 for s in again.states.values())
    assert not again.logs  # no step process was started
    assert again.states["evaluate"].metrics == first.states["evaluate"].metrics
    assert again.seconds < 0.1 * first.seconds


def test_changed_preprocessing_reruns_it_and_what_follows(example_state: tuple[Path, RunOutcome]) -> None:
    state, _ = example_state
    outcome = run_pipeline(load(EXAMPLE), state, scaling="minmax")
    hits = {n for n, s in outcome.states.items() if s.cache_hit}
    assert hits == {"ingest", "validate", "split"}
    assert outcome.phase is RunPhase.SUCCEEDED


def test_changed_model_parameter_reruns_only_train_and_evaluate(example_state: tuple[Path, RunOutcome]) -> None:
    state, _ = example_state
    outcome = run_pipeline(load(EXAMPLE), state, n_estimators=50)
    hits = {n for n, s in outcome.states.items() if s.cache_hit}
    assert hits == {"ingest", "validate", "split", "preprocess"}


def test_deleted_artifact_is_never_a_cache_hit(example_state: tuple[Path, RunOutcome]) -> None:
    state, first = example_state
    ref = first.states["train"].outputs["model"]
    blob = state / "store" / "blobs" / "sha256" / hex_of(ref.digest)[:2] / hex_of(ref.digest)
    blob.unlink()
    outcome = run_pipeline(load(EXAMPLE), state)
    assert not outcome.states["train"].cache_hit and outcome.states["train"].attempts == 1
    new = outcome.states["train"].outputs["model"]
    assert (state / "store" / "blobs" / "sha256" / hex_of(new.digest)[:2] / hex_of(new.digest)).exists()
    assert outcome.phase is RunPhase.SUCCEEDED


def pipeline_of(steps: list[dict[str, Any]], **spec: Any) -> Pipeline:
    return Pipeline.model_validate({"metadata": {"name": "t"}, "spec": {"steps": steps, **spec}})


def py_step(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "local", "command": [PY, "-c", code]}, **extra}


def test_failing_step_is_retried_then_fails_the_run_with_its_log(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    code = (
        f"import pathlib,sys; p=pathlib.Path({str(counter)!r}); n=int(p.read_text()) if p.exists() else 0; "
        "p.write_text(str(n+1)); print('attempt', n+1, 'failing on purpose'); sys.exit(3)"
    )
    p = pipeline_of(
        [
            py_step("flaky", code, retries={"limit": 2, "backoff": {"initialSeconds": 0.1}}),
            py_step("after", "print(1)", dependsOn=["flaky"]),
        ]
    )
    outcome = run_pipeline(p, tmp_path / "state")
    assert outcome.phase is RunPhase.FAILED
    assert counter.read_text() == "3"
    flaky = outcome.states["flaky"]
    assert flaky.phase is StepPhase.FAILED and flaky.attempts == 3
    assert "command exited with code 3" in outcome.message
    assert "attempt 3 failing on purpose" in outcome.message  # the log tail
    assert outcome.states["after"].phase is StepPhase.CANCELLED


def test_retry_then_success(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    code = (
        f"import pathlib,sys; p=pathlib.Path({str(counter)!r}); n=int(p.read_text()) if p.exists() else 0; "
        "p.write_text(str(n+1)); sys.exit(0 if n >= 1 else 1)"
    )
    outcome = run_pipeline(
        pipeline_of([py_step("flaky", code, retries={"limit": 1, "backoff": {"initialSeconds": 0}})]),
        tmp_path / "state",
    )
    assert outcome.phase is RunPhase.SUCCEEDED and outcome.states["flaky"].attempts == 2


def test_container_outputs_flow_downstream_and_missing_output_fails(tmp_path: Path) -> None:
    write = py_step("write", "import sys; open(sys.argv[1], 'w').write('hello')", outputs=[{"name": "greeting"}])
    write["container"]["args"] = ["{{ outputs.greeting }}"]
    read = py_step(
        "read",
        "import sys,json,os; t=open(sys.argv[1]).read(); "
        "json.dump({'chars': len(t)}, open(os.environ['CONVEYOR_METRICS_FILE'], 'w'))",
        inputs=[{"name": "g", "step": "write", "output": "greeting"}],
    )
    read["container"]["args"] = ["{{ inputs.g }}"]
    outcome = run_pipeline(pipeline_of([write, read]), tmp_path / "s")
    assert outcome.phase is RunPhase.SUCCEEDED
    assert outcome.states["read"].metrics == {"chars": 5.0}

    lazy = py_step("lazy", "print('wrote nothing')", outputs=[{"name": "result"}])
    outcome = run_pipeline(pipeline_of([lazy]), tmp_path / "s")
    assert outcome.phase is RunPhase.FAILED and "did not write output(s) 'result'" in outcome.message


def test_independent_steps_run_in_parallel(tmp_path: Path) -> None:
    code = "import time,json,os; t=time.time(); time.sleep(1.5); print(json.dumps([t, time.time()]))"
    outcome = run_pipeline(pipeline_of([py_step("one", code), py_step("two", code)], parallelism=2), tmp_path / "s")
    assert outcome.phase is RunPhase.SUCCEEDED
    spans = []
    for name in ("one", "two"):
        line = next(ln for ln in outcome.logs[name].read_text().splitlines() if ln.startswith("["))
        spans.append(json.loads(line))
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # the intervals overlap


def test_cli_bad_input_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "conveyor.dev/v1alpha1",
                "kind": "Pipeline",
                "metadata": {"name": "b"},
                "spec": {"steps": [py_step("a", "1", dependsOn=["b"]), py_step("b", "1", dependsOn=["a"])]},
            }
        )
    )
    result = cli("run", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{bad}: spec.steps: the steps form a cycle: " in result.stderr
    assert "Traceback" not in result.stderr
    malformed = tmp_path / "m.yaml"
    malformed.write_text("kind: [")
    result = cli("validate", str(malformed), cwd=tmp_path)
    assert result.returncode == 2 and "malformed YAML" in result.stderr and "Traceback" not in result.stderr


def test_cli_failed_step_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "conveyor.dev/v1alpha1",
                "kind": "Pipeline",
                "metadata": {"name": "f"},
                "spec": {"steps": [py_step("boom", "raise SystemExit(4)")]},
            }
        )
    )
    result = cli("run", str(f), "--no-progress", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Failed" in result.stdout


def test_ctrl_c_stops_children_and_records_cancelled(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(120)"
    f = tmp_path / "p.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "conveyor.dev/v1alpha1",
                "kind": "Pipeline",
                "metadata": {"name": "c"},
                "spec": {"steps": [py_step("sleepy", code)]},
            }
        )
    )
    proc = subprocess.Popen(
        [PY, "-m", "conveyor.cli.main", "run", str(f), "--no-progress", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.1)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    record = json.loads(out)  # --json: the record alone on stdout, progress on stderr
    assert record["phase"] == "Cancelled"
    assert record["steps"][0]["phase"] == "Cancelled", record["steps"][0]
    assert "sleepy: Running" in err and "sleepy: Cancelled" in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def fan_pipeline() -> Pipeline:
    square = py_step("square", "import sys; open(sys.argv[1], 'w').write(str(int(sys.argv[2]) ** 2))",
                     outputs=[{"name": "value"}], forEach={"parameter": "xs", "maxConcurrency": 2})
    square["container"]["args"] = ["{{ outputs.value }}", "{{ item }}"]
    total = py_step("total", "import sys, json, os, pathlib; d = pathlib.Path(sys.argv[1]); "
                    "items = json.loads((d / 'items.json').read_text()); "
                    "json.dump({'total': sum(int((d / i['path']).read_text()) for i in items), 'n': len(items)}, "
                    "open(os.environ['CONVEYOR_METRICS_FILE'], 'w'))",
                    inputs=[{"name": "values", "step": "square", "output": "value"}])
    total["container"]["args"] = ["{{ inputs.values }}"]
    return pipeline_of([square, total], parameters=[{"name": "xs", "type": "list", "default": [1, 2, 3, 4]}])


def test_fan_out_and_fan_in(tmp_path: Path) -> None:
    state = tmp_path / "s"
    first = run_pipeline(fan_pipeline(), state)
    assert first.phase is RunPhase.SUCCEEDED, first.message
    assert first.states["total"].metrics == {"total": 30.0, "n": 4.0}
    assert [first.states[f"square[{i}]"].attempts for i in range(4)] == [1, 1, 1, 1]
    record = json.loads(first.record_path.read_text())
    square = next(s for s in record["steps"] if s["name"] == "square")
    assert square["fanOut"]["total"] == 4 and square["fanOut"]["succeeded"] == 4
    assert len(record["items"]["square"]) == 4
    # change one item: only that item and the fan-in step run again
    second = run_pipeline(fan_pipeline(), state, xs=[1, 2, 3, 5])
    hits = sorted(k for k, s in second.states.items() if s.cache_hit)
    assert hits == ["square[0]", "square[1]", "square[2]"]
    assert second.states["total"].metrics["total"] == 39.0


def test_cli_summary_counts_steps_not_fan_out_items(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": "conveyor.dev/v1alpha1", "kind": "Pipeline",
                                 "metadata": {"name": "fan"}, "spec": fan_pipeline().spec.to_wire()}))
    first = cli("run", str(f), "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "0/2 steps from cache" in first.stdout
    second = cli("run", str(f), "--no-progress", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "2/2 steps from cache" in second.stderr  # four items and the fan-in step: two steps
    assert json.loads(second.stdout)["phase"] == "Succeeded"


def test_a_file_ingest_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("x,y\n1,2\n3,4\n")
    p = pipeline_of([{"name": "ingest", "uses": "ingest", "with": {"source": data.as_uri()}}])
    state = tmp_path / "s"
    first = run_pipeline(p, state)
    assert first.phase is RunPhase.SUCCEEDED and not first.states["ingest"].cache_hit, first.message
    again = run_pipeline(p, state)
    assert again.states["ingest"].cache_hit
    data.write_text("x,y\n1,2\n3,5\n")
    changed = run_pipeline(p, state)
    assert not changed.states["ingest"].cache_hit
    assert changed.states["ingest"].outputs["dataset"].digest != first.states["ingest"].outputs["dataset"].digest
    record = json.loads(changed.record_path.read_text())
    assert record["externalInputs"] == {data.as_uri(): sha256_file(data)}
