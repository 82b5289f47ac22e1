"""Retry decisions: whether a failed or stopped attempt gets another, and after how long.

Decided here once, so the local runner and the operator give one spec one behaviour: a step that runs
past its `timeoutSeconds` is a failed attempt under the step's retry policy on both shells.
"""

from __future__ import annotations

from enum import StrEnum

from conveyor.api.pipeline import RetryPolicy


class Stop(StrEnum):
    """Why a shell stopped an attempt before it ended by itself."""

    STEP_TIMEOUT = "StepTimedOut"
    """The attempt ran past its step's `timeoutSeconds`."""
    RUN_TIMEOUT = "RunTimedOut"
    """The run ran past its `timeoutSeconds`: nothing new may start, so a retry would never run."""
    RUN_CANCELLED = "RunCancelled"
    """A person cancelled the run."""


class Outcome(StrEnum):
    """What becomes of a step after one of its attempts ended without success."""

    RETRY = "Retry"
    """Waits for its backoff, then runs again."""
    FAIL = "Fail"
    """Failed for good."""
    CANCEL = "Cancel"
    """Cancelled: stopped on purpose, not a failure."""


def may_retry(policy: RetryPolicy, attempts: int) -> bool:
    """`attempts` have been made; the policy allows `limit` retries after the first."""
    return attempts <= policy.limit


def after_failure(policy: RetryPolicy, attempts: int) -> Outcome:
    """An attempt that failed by itself (its command's exit, a pod that never started, a lost Job)."""
    return Outcome.RETRY if may_retry(policy, attempts) else Outcome.FAIL


def after_stop(policy: RetryPolicy, attempts: int, stop: Stop) -> Outcome:
    """An attempt the shell stopped: a step timeout is a failure like any other (the policy decides); a run's
    timeout fails it without a retry that could never start; a cancel cancels it."""
    if stop is Stop.RUN_CANCELLED:
        return Outcome.CANCEL
    if stop is Stop.RUN_TIMEOUT:
        return Outcome.FAIL
    return after_failure(policy, attempts)


def step_timeout_message(timeout_seconds: int | None) -> str:
    """One message for a step timeout, whichever noticed it first: the planner, or (on a cluster) the Job
    controller enforcing the Job's activeDeadlineSeconds."""
    return f"step exceeded its timeout of {timeout_seconds}s"


def backoff_seconds(policy: RetryPolicy, attempts: int) -> float:
    """Delay before attempt `attempts + 1`: initial * factor^(attempts-1), capped."""
    b = policy.backoff
    return float(min(b.max_seconds, b.initial_seconds * b.factor ** max(0, attempts - 1)))
