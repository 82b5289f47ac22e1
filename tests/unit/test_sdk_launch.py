"""Running a Python pipeline from Python: the local runner gets what `conveyor run` gives it, and the Run
object a submit creates is the one the operator accepts (no cluster: a recording stand-in for it)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor import sdk
from conveyor.api.run import Run
from conveyor.core.validation import InvalidSpec, parse_document
from conveyor.sdk.compiler import load
from conveyor.sdk.launch import LABEL_SDK_PIPELINE, run_object, submit

ROOT = Path(__file__).resolve().parents[2]


@sdk.pipeline(name="tiny")
def tiny(rounds: int = 2, note: str = sdk.param(description="required")) -> None:
    """A pipeline of one container step."""
    sdk.step("echo", image="busybox", command=["echo", f"{note} x{rounds}"])


class RecordingCluster:
    """Stands in for conveyor.kube.cluster.Cluster: keeps what it is asked to create, reports given phases."""

    def __init__(self, phases: list[str | None] | None = None) -> None:
        self.created: list[dict[str, Any]] = []
        self.phases = list(phases or [])
        self.exists = False

    def create_run(self, run: dict[str, Any]) -> bool:
        if self.exists:
            return False
        self.created.append(run)
        return True

    def create_generated_run(self, run: dict[str, Any]) -> str:
        self.created.append(run)
        return str(run["metadata"]["generateName"]) + "x7k2p"

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert plural == "runs"
        phase = self.phases.pop(0) if self.phases else "Succeeded"
        return {"metadata": {"name": name}, "status": {"phase": phase} if phase else {}}


def test_the_submitted_run_carries_the_compiled_spec_inline() -> None:
    cluster = RecordingCluster()
    submitted = tiny.submit({"note": "hi"}, namespace="ml", cluster=cluster)
    assert (submitted.namespace, submitted.name, submitted.phase) == ("ml", "tiny-x7k2p", None)
    (body,) = cluster.created
    assert body["metadata"] == {"namespace": "ml", "labels": {LABEL_SDK_PIPELINE: "tiny"}, "generateName": "tiny-"}
    run = parse_document(body)  # what `conveyor validate` and the operator's admission accept
    assert isinstance(run, Run)
    assert run.spec.pipeline_spec == tiny.build().spec
    assert run.spec.parameters == {"note": "hi"}


def test_a_named_submit_refuses_to_replace_an_existing_run() -> None:
    cluster = RecordingCluster()
    assert tiny.submit({"note": "a"}, name="tiny-1", cluster=cluster).name == "tiny-1"
    assert cluster.created[0]["metadata"]["name"] == "tiny-1"
    cluster.exists = True
    with pytest.raises(InvalidSpec, match="run default/tiny-1 exists already"):
        tiny.submit({"note": "a"}, name="tiny-1", cluster=cluster)


def test_submit_waits_for_a_finished_phase() -> None:
    cluster = RecordingCluster(phases=[None, "Running", "Running", "Failed"])
    done = submit(tiny.build(), {"note": "a"}, name="w", cluster=cluster, wait=True, poll_seconds=0)
    assert cluster.phases == [] and done.phase == "Failed" and done.status == {"phase": "Failed"}
    slow = RecordingCluster(phases=["Running"] * 1000)
    with pytest.raises(TimeoutError, match="did not finish within 0s"):
        submit(tiny.build(), {"note": "a"}, name="w", cluster=slow, wait=True, timeout_seconds=0, poll_seconds=0)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({}, "parameters.note: required parameter has no value"),
        ({"note": "a", "rounds": "two"}, "parameters.rounds: expected an integer, got str 'two'"),
        ({"note": "a", "nope": 1}, "parameters.nope: unknown parameter (declared: rounds, note)"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_created(parameters: dict[str, Any], message: str) -> None:
    cluster = RecordingCluster()
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        tiny.submit(parameters, cluster=cluster)
    assert cluster.created == []


def test_a_scheduled_pipeline_submits_but_does_not_run_locally(tmp_path: Path) -> None:
    nightly = load(str(ROOT / "examples/gitops/ml/base/pipeline.py"))
    assert run_object(nightly, name="now")["spec"]["pipelineSpec"]["schedule"]["cron"] == "0 3 * * *"
    with pytest.raises(InvalidSpec, match="a schedule is not supported yet by the local runner"):
        sdk.launch.run_local(nightly, state_dir=tmp_path)


def test_run_local_hands_the_local_runner_what_conveyor_run_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    outcome = object()

    def fake_run(spec: Any, params: Any, **options: Any) -> object:
        seen.update(spec=spec, params=params, **options)
        return outcome

    monkeypatch.setattr("conveyor.local.view.run_with_progress", fake_run)
    assert tiny.run_local({"note": "hi"}, state_dir=tmp_path, parallelism=3, progress=False) is outcome
    assert seen["spec"] == tiny.build().spec
    assert seen["params"] == {"rounds": 2, "note": "hi"}  # defaults resolved, as `conveyor run -p` does
    assert (seen["pipeline_name"], seen["state_dir"], seen["parallelism"], seen["live"]) == (
        "tiny",
        tmp_path,
        3,
        False,
    )
    assert list((tmp_path / "store").rglob("*.json")), "the spec is stored for `conveyor rerun`"


def test_a_function_step_runs_locally_with_this_python_first_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @sdk.function_step
    def hello(who: str) -> None:
        print(who)

    @sdk.pipeline(name="hello")
    def greet() -> None:
        hello("world")

    paths: list[str] = []
    monkeypatch.setenv("PATH", "/nowhere")
    monkeypatch.setattr("conveyor.local.view.run_with_progress", lambda *a, **k: paths.append(os.environ["PATH"]))
    greet.run_local(state_dir=tmp_path)
    tiny.run_local({"note": "x"}, state_dir=tmp_path)
    assert paths == [f"{Path(sys.executable).parent}{os.pathsep}/nowhere", "/nowhere"]
    assert os.environ["PATH"] == "/nowhere"
