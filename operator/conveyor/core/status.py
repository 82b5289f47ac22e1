"""Status in Kubernetes conventions, derived from step states: conditions, phase, progress."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from conveyor.api.base import Condition, ConditionStatus
from conveyor.api.run import ArtifactRef, FanOutStatus, RunPhase, StepPhase, StepStatus
from conveyor.core.planner import EXIT_FAILED, EXIT_SUCCEEDED, TERMINAL, Plan, StepState, units_of

EXIT_CONDITION = "ExitStepsSucceeded"


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


def exit_condition(plan: Plan, now: datetime, generation: int | None) -> Condition | None:
    """ExitStepsSucceeded: True once every onExit step succeeded or was skipped, False when one failed or they were
    cancelled, Unknown while they wait or run; None for a pipeline without onExit steps. Kept apart from
    Succeeded, which says how the steps ended, so a failed cleanup is visible without changing the Run's outcome."""
    if not plan.exit_reason:
        return None
    if plan.exit_reason == EXIT_SUCCEEDED:
        status = ConditionStatus.TRUE
    elif plan.exit_reason == EXIT_FAILED or plan.done:
        status = ConditionStatus.FALSE
    else:
        status = ConditionStatus.UNKNOWN
    return Condition(
        type=EXIT_CONDITION,
        status=status,
        reason=plan.exit_reason,
        message=plan.exit_message[:4000],
        last_transition_time=now,
        observed_generation=generation,
    )


def progress(states: Mapping[str, StepState], order: Sequence[str]) -> str:
    """Steps finished / total, for `kubectl get` (fan-out items count once, with their step)."""
    done = sum(1 for n in order if n in states and states[n].phase in TERMINAL)
    return f"{done}/{len(order)}"


def fan_out_status(states: Mapping[str, StepState], step: str, record_uri: str | None = None) -> FanOutStatus | None:
    """Counts only: a 1,000-way fan-out must not grow the Run object (per-item detail lives in the store)."""
    units = [u for _, u in units_of(states, step)]
    if not units:
        return None
    count = Counter(u.phase for u in units)
    return FanOutStatus(
        total=len(units),
        succeeded=count[StepPhase.SUCCEEDED],
        failed=count[StepPhase.FAILED],
        running=count[StepPhase.RUNNING] + count[StepPhase.WAITING],
        skipped=count[StepPhase.SKIPPED] + count[StepPhase.CANCELLED],
        record_uri=record_uri,
    )


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
                fan_out=fan_out_status(states, name),
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


def item_statuses(states: Mapping[str, StepState], step: str) -> list[dict[str, object]]:
    """Per-item detail of a fan-out, for the run record (never for the Run object)."""
    out: list[dict[str, object]] = []
    for index, (key, state) in enumerate(units_of(states, step)):
        (status,) = step_statuses([step], {step: state})
        out.append({**status.to_wire(), "index": index, "key": key})
    return out


def state_to_wire(s: StepState) -> dict[str, Any]:
    """A StepState as JSON (for the store), the inverse of state_from_wire."""
    return {
        "phase": s.phase.value,
        "attempts": s.attempts,
        "cacheKey": s.cache_key,
        "cacheHit": s.cache_hit,
        "outputs": [o.to_wire() for o in s.outputs.values()],
        "metrics": dict(s.metrics),
        "createdAt": _iso(s.created_at),
        "startedAt": _iso(s.started_at),
        "finishedAt": _iso(s.finished_at),
        "nextAttemptAt": _iso(s.next_attempt_at),
        "message": s.message,
    }


def state_from_wire(d: Mapping[str, Any]) -> StepState:
    outputs = [ArtifactRef.model_validate(o) for o in d.get("outputs", [])]
    return StepState(
        phase=StepPhase(d["phase"]),
        attempts=int(d.get("attempts", 0)),
        cache_key=d.get("cacheKey"),
        cache_hit=bool(d.get("cacheHit", False)),
        outputs={o.name: o for o in outputs},
        metrics={str(k): float(v) for k, v in d.get("metrics", {}).items()},
        created_at=_time(d.get("createdAt")),
        started_at=_time(d.get("startedAt")),
        finished_at=_time(d.get("finishedAt")),
        next_attempt_at=_time(d.get("nextAttemptAt")),
        message=d.get("message"),
    )


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _time(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None
