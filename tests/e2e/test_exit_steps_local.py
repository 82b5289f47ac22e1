"""onExit steps on the local runner: real subprocesses after the steps end, reading how they ended."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from conveyor.api.pipeline import Pipeline
from conveyor.api.run import RunPhase, StepPhase
from conveyor.core.validation import parse_document, resolve_parameters
from conveyor.local.runner import LocalRunner, RunOutcome

PY = sys.executable


def py_step(name: str, code: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "local", "command": [PY, "-c", code, *args]}, **extra}


def run(spec: dict[str, Any], state: Path) -> RunOutcome:
    doc = parse_document(
        {"apiVersion": "conveyor.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "x"}, "spec": spec}
    )
    assert isinstance(doc, Pipeline)
    values, issues = resolve_parameters(doc.spec, {})
    assert issues == []
    return LocalRunner(doc.spec, values, pipeline_name="x", state_dir=state).run()


# The onExit step writes what it saw to a file: run.phase, run.failedSteps and run.message as the runtime passed them.
REPORT = "import json,sys; open(sys.argv[1],'w').write(json.dumps(sys.argv[2:]))"


def test_an_exit_step_runs_after_a_failed_step_and_sees_phase_failed(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    outcome = run(
        {
            "steps": [
                py_step(
                    "prepare",
                    "open(__import__('sys').argv[1],'w').write('x')",
                    "{{ outputs.data }}",
                    outputs=[{"name": "data"}],
                ),
                py_step("train", "import sys; print('no luck'); sys.exit(4)", dependsOn=["prepare"]),
                py_step("publish", "print('never')", dependsOn=["train"]),
            ],
            "onExit": [
                py_step("notify", REPORT, str(seen), "{{ run.phase }}", "{{ run.failedSteps }}", "{{ run.message }}"),
                # reads an output of a step that succeeded: runs, with the file in place
                py_step(
                    "cleanup",
                    "import sys; assert open(sys.argv[1]).read() == 'x'",
                    "{{ inputs.data }}",
                    inputs=[{"name": "data", "step": "prepare", "output": "data"}],
                ),
                py_step("only-on-failure", "print('cleaning up after a failure')", when="run.phase == 'Failed'"),
                py_step("only-on-success", "print('celebrating')", when="run.phase == 'Succeeded'"),
            ],
        },
        tmp_path / "state",
    )
    assert outcome.phase is RunPhase.FAILED  # the steps' outcome, the onExit steps' success does not change it
    assert outcome.states["train"].phase is StepPhase.FAILED
    assert outcome.states["publish"].phase is StepPhase.CANCELLED
    phase, failed, message = json.loads(seen.read_text())
    assert (phase, failed) == ("Failed", "train")
    assert "step 'train' failed" in message
    assert outcome.states["notify"].phase is StepPhase.SUCCEEDED
    assert outcome.states["cleanup"].phase is StepPhase.SUCCEEDED
    assert outcome.states["only-on-failure"].phase is StepPhase.SUCCEEDED
    assert outcome.states["only-on-success"].phase is StepPhase.SKIPPED
    assert outcome.exit_reason == "AllSucceeded"
    # the onExit steps started only once every step had finished
    ended = max(s.finished_at for n, s in outcome.states.items() if n in ("prepare", "train") and s.finished_at)
    assert outcome.states["notify"].started_at is not None and outcome.states["notify"].started_at >= ended
    record = json.loads(outcome.record_path.read_text())
    assert [s["name"] for s in record["steps"]][-4:] == ["notify", "cleanup", "only-on-failure", "only-on-success"]
    assert record["exitSteps"]["reason"] == "AllSucceeded"


def test_a_failed_exit_step_is_recorded_but_a_succeeded_run_stays_succeeded(tmp_path: Path) -> None:
    outcome = run(
        {
            "steps": [py_step("work", "print('fine')")],
            "onExit": [
                py_step("flaky-cleanup", "import sys; sys.exit(2)"),
                py_step("after-cleanup", "print('never')", dependsOn=["flaky-cleanup"]),
                py_step("independent", "print('still runs')"),
            ],
        },
        tmp_path / "state",
    )
    assert outcome.phase is RunPhase.SUCCEEDED
    assert outcome.states["flaky-cleanup"].phase is StepPhase.FAILED
    assert outcome.states["after-cleanup"].phase is StepPhase.CANCELLED
    assert outcome.states["independent"].phase is StepPhase.SUCCEEDED
    assert outcome.exit_reason == "StepFailed"
    assert "onExit step 'flaky-cleanup' failed" in outcome.exit_message
    assert "onExit step 'flaky-cleanup' failed" in outcome.message


def test_an_exit_step_reading_an_output_of_a_failed_step_is_skipped_with_the_reason(tmp_path: Path) -> None:
    outcome = run(
        {
            "steps": [py_step("train", "import sys; sys.exit(1)", outputs=[{"name": "model"}])],
            "onExit": [
                py_step(
                    "archive",
                    "print('never')",
                    "{{ inputs.model }}",
                    inputs=[{"name": "model", "step": "train", "output": "model"}],
                ),
            ],
        },
        tmp_path / "state",
    )
    assert outcome.phase is RunPhase.FAILED
    archive = outcome.states["archive"]
    assert archive.phase is StepPhase.SKIPPED and archive.attempts == 0
    assert archive.message == "input 'model' reads output 'model' of step 'train', which did not succeed (Failed)"


def test_a_cancelled_local_run_runs_its_exit_steps_and_ends_cancelled(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    started = tmp_path / "started"
    doc = parse_document(
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "x"},
            "spec": {
                "steps": [
                    py_step("sleepy", "import sys,time; open(sys.argv[1],'w').close(); time.sleep(120)", str(started))
                ],
                "onExit": [py_step("cleanup", REPORT, str(seen), "{{ run.phase }}")],
            },
        }
    )
    assert isinstance(doc, Pipeline)
    runner = LocalRunner(doc.spec, {}, pipeline_name="x", state_dir=tmp_path / "state")

    def cancel_once_started() -> None:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.cancel()  # what the first Ctrl-C does

    threading.Thread(target=cancel_once_started, daemon=True).start()
    outcome = runner.run()
    assert outcome.phase is RunPhase.CANCELLED
    assert outcome.states["sleepy"].phase is StepPhase.CANCELLED
    assert outcome.states["cleanup"].phase is StepPhase.SUCCEEDED
    assert json.loads(seen.read_text()) == ["Cancelled"]
    assert outcome.seconds < 60
