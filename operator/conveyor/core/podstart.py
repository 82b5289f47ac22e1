"""Why a Run's step pods have not started, as a condition: a missing Secret or ConfigMap, an image that cannot be
pulled or no node to run on shows on the Run at once, instead of only when the attempt's start deadline fails it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from conveyor.api.base import Condition, ConditionStatus

POD_CONDITION = "StepPodsStarted"
_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@dataclass(frozen=True, order=True)
class WaitingPod:
    """An attempt whose pod exists but has not started, with what the kubelet or the scheduler says it waits for."""

    step: str
    """The step's state key (`train`, or `train[2]` for an item of a fan-out)."""
    job: str
    waiting: str
    """`Reason: message` (pod_waiting's words), e.g. `CreateContainerConfigError: secret "db" not found`."""
    limit_seconds: float = 0.0
    """How long the attempt may take to start before it fails (0: no limit)."""


def _reason(waiting: str) -> str:
    head = waiting.split(":", 1)[0].strip()
    return head if _CAMEL.match(head) else "PodNotStarted"


def pods_started_condition(
    waiting: Sequence[WaitingPod], previous: Condition | None, now: datetime, generation: int | None
) -> Condition | None:
    """The StepPodsStarted condition to set, or None to leave the conditions alone (nothing waits and nothing
    ever did). False names every waiting pod, its reason first; True once none waits any more."""
    if not waiting:
        if previous is None:
            return None
        return Condition(
            type=POD_CONDITION,
            status=ConditionStatus.TRUE,
            reason="NoneWaiting",
            message="no step pod is waiting to start",
            last_transition_time=now,
            observed_generation=generation,
        )
    ordered = sorted(waiting)
    parts = []
    for w in ordered:
        deadline = f"; the attempt fails if not started {w.limit_seconds:g}s after launch" if w.limit_seconds else ""
        parts.append(f"step {w.step!r} (Job {w.job}) cannot start: {w.waiting}{deadline}")
    return Condition(
        type=POD_CONDITION,
        status=ConditionStatus.FALSE,
        reason=_reason(ordered[0].waiting),
        message="; ".join(parts)[:32768],
        last_transition_time=now,
        observed_generation=generation,
    )
