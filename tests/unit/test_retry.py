"""The retry decision both shells take: (policy, attempts made, why the attempt ended) → retry, fail or cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.api.pipeline import RetryPolicy, Step
from conveyor.api.run import StepPhase
from conveyor.core.planner import Kill, StepState, finished, killed
from conveyor.core.retry import Outcome, Stop, after_failure, after_stop, step_timeout_message
from conveyor.core.task import TaskResult

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ONE_RETRY = RetryPolicy.model_validate({"limit": 1, "backoff": {"initialSeconds": 3}})
NO_RETRY = RetryPolicy()

STOPS = [
    # (case, policy, attempts made, stop, outcome)
    ("step timeout, a retry left", ONE_RETRY, 1, Stop.STEP_TIMEOUT, Outcome.RETRY),
    ("step timeout, retries used up", ONE_RETRY, 2, Stop.STEP_TIMEOUT, Outcome.FAIL),
    ("step timeout, no retries", NO_RETRY, 1, Stop.STEP_TIMEOUT, Outcome.FAIL),
    ("run timeout never retries", ONE_RETRY, 1, Stop.RUN_TIMEOUT, Outcome.FAIL),
    ("cancel cancels", ONE_RETRY, 1, Stop.RUN_CANCELLED, Outcome.CANCEL),
    ("cancel cancels without retries too", NO_RETRY, 1, Stop.RUN_CANCELLED, Outcome.CANCEL),
]


@pytest.mark.parametrize(("policy", "attempts", "stop", "outcome"), [s[1:] for s in STOPS], ids=[s[0] for s in STOPS])
def test_after_stop_table(policy: RetryPolicy, attempts: int, stop: Stop, outcome: Outcome) -> None:
    assert after_stop(policy, attempts, stop) is outcome


FAILURES = [
    ("first failure, a retry left", ONE_RETRY, 1, Outcome.RETRY),
    ("second failure, retries used up", ONE_RETRY, 2, Outcome.FAIL),
    ("no retries", NO_RETRY, 1, Outcome.FAIL),
]


@pytest.mark.parametrize(("policy", "attempts", "outcome"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_after_failure_table(policy: RetryPolicy, attempts: int, outcome: Outcome) -> None:
    assert after_failure(policy, attempts) is outcome


def _step(policy: RetryPolicy) -> Step:
    return Step.model_validate(
        {"name": "s", "container": {"image": "i", "command": ["x"]}, "timeoutSeconds": 5, "retries": policy.to_wire()}
    )


def _running(attempts: int) -> StepState:
    return StepState(phase=StepPhase.RUNNING, attempts=attempts, started_at=NOW - timedelta(seconds=6))


KILLED = [
    # (case, policy, attempts, stop, phase after, next attempt after)
    ("timed out with a retry left: waits its backoff", ONE_RETRY, 1, Stop.STEP_TIMEOUT, StepPhase.WAITING, 3.0),
    ("timed out on its last attempt: fails", ONE_RETRY, 2, Stop.STEP_TIMEOUT, StepPhase.FAILED, None),
    ("stopped by the run's timeout: fails", ONE_RETRY, 1, Stop.RUN_TIMEOUT, StepPhase.FAILED, None),
    ("stopped by a cancel: cancelled", ONE_RETRY, 1, Stop.RUN_CANCELLED, StepPhase.CANCELLED, None),
]


@pytest.mark.parametrize(
    ("policy", "attempts", "stop", "phase", "delay"), [k[1:] for k in KILLED], ids=[k[0] for k in KILLED]
)
def test_killed_applies_the_decision(
    policy: RetryPolicy, attempts: int, stop: Stop, phase: StepPhase, delay: float | None
) -> None:
    after = killed(_running(attempts), _step(policy), Kill("s", "why", "s", stop), NOW)
    assert after.phase is phase and after.attempts == attempts and after.message == "why"
    assert after.finished_at == NOW
    assert after.next_attempt_at == (NOW + timedelta(seconds=delay) if delay is not None else None)


def test_a_step_timeout_and_a_failure_end_the_same_way() -> None:
    """Whether the planner's Kill or the step's own failure (a Job past its deadline) ends the attempt first."""
    step = _step(ONE_RETRY)
    message = step_timeout_message(step.timeout_seconds)
    by_kill = killed(_running(1), step, Kill("s", message, "s"), NOW)
    by_failure = finished(_running(1), step, TaskResult(ok=False, message=message), NOW)
    assert by_kill == by_failure
    assert message == "step exceeded its timeout of 5s"
