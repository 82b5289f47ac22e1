"""Status in Kubernetes conventions, derived from step states: conditions, phase, progress."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from conveyor.api.base import Condition, ConditionStatus
from conveyor.api.run import RunPhase, StepStatus
from conveyor.core.planner import TERMINAL, StepState


def set_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """Replace the condition of the same type; lastTransitionTime moves only when status flips."""
    out = []
    replaced = False
    for c in conditions:
        if c.type == new.type:
            replaced = True
            if c.status == new.status:
                new = new.model_copy(update={"last_transition_time": c.last_transition_time})
            out.append(new)
        else:
            out.append(c)
    if not replaced:
        out.append(new)
    return out


def succeeded_condition(phase: RunPhase, reason: str, message: str, now: datetime, generation: int | None) -> Condition:
    status = {
        RunPhase.SUCCEEDED: ConditionStatus.TRUE,
        RunPhase.FAILED: ConditionStatus.FALSE,
        RunPhase.CANCELLED: ConditionStatus.FALSE,
    }.get(phase, ConditionStatus.UNKNOWN)
    return Condition(
        type="Succeeded",
        status=status,
        reason=reason or phase.value,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )


def progress(states: Mapping[str, StepState], total: int) -> str:
    done = sum(1 for s in states.values() if s.phase in TERMINAL)
    return f"{done}/{total}"


def step_statuses(order: Sequence[str], states: Mapping[str, StepState]) -> list[StepStatus]:
    out = []
    for name in order:
        s = states.get(name, StepState())
        out.append(
            StepStatus(
                name=name,
                phase=s.phase,
                attempts=s.attempts,
                cache_key=s.cache_key,
                cache_hit=s.cache_hit,
                created_at=s.created_at,
                started_at=s.started_at,
                finished_at=s.finished_at,
                next_attempt_at=s.next_attempt_at,
                outputs=list(s.outputs.values()),
                metrics=dict(s.metrics),
                message=(s.message[:4000] if s.message else None),
            )
        )
    return out


def states_from_status(steps: Sequence[StepStatus]) -> dict[str, StepState]:
    """The planner's view of a Run, read back from its status (the operator keeps no memory)."""
    return {
        s.name: StepState(
            phase=s.phase,
            attempts=s.attempts,
            cache_key=s.cache_key,
            cache_hit=s.cache_hit,
            outputs={o.name: o for o in s.outputs},
            metrics=dict(s.metrics),
            created_at=s.created_at,
            started_at=s.started_at,
            finished_at=s.finished_at,
            next_attempt_at=s.next_attempt_at,
            message=s.message,
        )
        for s in steps
    }
