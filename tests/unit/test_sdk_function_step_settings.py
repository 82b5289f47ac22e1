"""Function steps with per-step pod settings, and onExit function steps given the Run's outcome as arguments
(what tests/e2e/test_sdk_on_the_cluster.py runs on the test cluster)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor import sdk
from conveyor.sdk import PipelineError
from conveyor.sdk.function_runtime import main as run_function

SECRET_ENV = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}}


@sdk.function_step(pod={"env": [SECRET_ENV], "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]})
def fetch(out: sdk.OutputPath) -> None:
    import os

    out.write_text(os.environ["TOKEN"][:0])


@sdk.function_step
def report(phase: str, failed: str, seen: sdk.OutputPath) -> None:
    seen.write_text(phase + "|" + failed)


@sdk.pipeline(name="settings", pod={"volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]})
def with_settings() -> None:
    fetch()
    plain = report.with_options(name="plain")
    plain("x", "y")
    with sdk.on_exit():
        report(sdk.run_phase, sdk.run_failed_steps)


def test_a_function_step_takes_pod_settings_of_its_own() -> None:
    spec = with_settings.build().spec
    by_name = {s.name: s for s in spec.all_steps()}
    pod: Any = by_name["fetch"].pod
    assert [e.name for e in pod.env] == ["TOKEN"] and pod.env[0].value_from.secret_key_ref.name == "api"
    assert [m.mount_path for m in pod.volume_mounts] == ["/etc/cfg"]
    assert by_name["plain"].pod is None  # another step of the same function keeps none
    assert "secretKeyRef" in with_settings.to_yaml()


def test_a_function_step_with_a_mount_of_no_declared_volume_is_refused_at_its_line() -> None:
    @sdk.function_step(pod={"volumeMounts": [{"name": "nowhere", "mountPath": "/data"}]})
    def lost() -> None:
        pass

    @sdk.pipeline(name="lost")
    def broken() -> None:
        lost()

    with pytest.raises(PipelineError) as e:
        broken.build()
    assert "nowhere" in str(e.value) and Path(__file__).name in str(e.value)


def test_an_exit_function_step_gets_the_run_outcome_as_its_arguments(tmp_path: Path) -> None:
    spec = with_settings.build().spec
    (exit_step,) = spec.on_exit or []
    assert exit_step.container is not None
    assert exit_step.container.args[:2] == ["str:phase={{ run.phase }}", "str:failed={{ run.failedSteps }}"]
    # what the runtime does once the step runtime has rendered the templates
    source = {"CONVEYOR_FUNCTION_SOURCE": exit_step.container.env[0].value}
    seen = tmp_path / "seen"
    code = run_function(
        ["report", "str:phase=Failed", "str:failed=fetch", f"output:seen={seen}"], {**os.environ, **source}
    )
    assert code == 0 and seen.read_text() == "Failed|fetch"


def test_run_local_puts_this_python_first_for_an_exit_function_step_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @sdk.pipeline(name="exit-only")
    def exit_only() -> None:
        sdk.step("work", image="local", command=["true"])
        with sdk.on_exit():
            report(sdk.run_phase, sdk.run_failed_steps)

    paths: list[str] = []

    def fake_run(spec: Any, params: Any, **options: Any) -> object:
        paths.append(os.environ.get("PATH", ""))
        return object()

    monkeypatch.setattr("conveyor.local.view.run_with_progress", fake_run)
    exit_only.run_local(state_dir=tmp_path, progress=False)
    assert paths[0].split(os.pathsep)[0] == str(Path(sys.executable).parent)
