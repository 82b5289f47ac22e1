"""Which resource-step objects the Run no longer needs: pure, so a delete that failed once is retried next pass."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from conveyor.api.run import StepPhase
from conveyor.core.planner import StepState
from conveyor.core.task import step_of


def objects_to_delete(
    states: Mapping[str, StepState],
    resource_steps: Collection[str],
    run_over: bool,
    gone: Collection[tuple[str, int]],
) -> list[tuple[str, int]]:
    """Every (key, attempt) whose object should be deleted now and is not known `gone`: every ended attempt of a
    resource step (an earlier attempt of a retried step, or the last one once its step left RUNNING), and every
    attempt once the Run is over. The shell calls this each pass and records a delete that succeeded or found
    nothing (404) in `gone`, so a delete that failed is simply asked for again on the next pass."""
    out: list[tuple[str, int]] = []
    for key in sorted(states):
        state = states[key]
        if step_of(key) not in resource_steps or state.attempts < 1:
            continue
        last = state.attempts if run_over or state.phase is not StepPhase.RUNNING else state.attempts - 1
        out.extend((key, attempt) for attempt in range(1, last + 1) if (key, attempt) not in gone)
    return out
