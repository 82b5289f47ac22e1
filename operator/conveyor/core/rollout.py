"""Rolling out model versions: what the serving Deployments should run, decided from what they show.

Pure: `plan_rollout` takes the ModelDeployment's spec and status, the model its source resolves to
now, and an observation of the stable and canary Deployments (plus the canary's own request
metrics), and returns the model each Deployment must run, the new status and the Events to post.
The shell applies it; running the plan again on the same observation yields the same plan.

Strategies:
- Rolling: the one (stable) Deployment's pod template moves to the new model; Kubernetes rolls it
  with maxUnavailable 0, so old pods serve until new ones are ready. A new version whose pods
  refuse the model (digest mismatch, untrusted type) or are not ready by the progress deadline is
  rolled back: the template returns to the current model and the version is remembered as
  rejected, never retried until the spec changes.
- Canary: a second Deployment runs the new model beside the stable one; each step sizes it so its
  share of ready replicas is the step's weight (no service mesh: traffic follows replicas) and
  waits `pauseSeconds`, judging the canary's own error rate and p99 latency from the servers'
  metrics all the while. Worse than the analysis allows → the canary is removed (rolled back).
  After the last step the stable Deployment is moved to the new model (rolling, zero unavailable)
  and only then is the canary removed, so capacity never dips.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from conveyor.api.base import Condition, ConditionStatus
from conveyor.api.modeldeployment import (
    CanaryStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RejectedModel,
    RolloutStrategy,
    ServedModel,
    TrafficShare,
)
from conveyor.core.status import set_condition


def version_of(digest: str) -> str:
    """The short version name servers label their metrics with: 12 hex digits of the digest."""
    return digest.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class DeploymentView:
    """What one serving Deployment shows (from its object and its pods)."""

    model_digest: str | None
    """The model its pod template runs."""
    replicas: int
    """spec.replicas (the autoscaler's choice for the stable one)."""
    ready: int = 0
    """Ready pods, old and new."""
    updated: int = 0
    """Pods of the current template."""
    total: int = 0
    """All pods (status.replicas), old and new."""
    generation_observed: bool = True
    """The Deployment controller has seen the latest template."""
    deadline_exceeded: bool = False
    """The controller gave up waiting for new pods (progressDeadlineSeconds)."""
    rejection: str | None = None
    """Why a pod of the current template refuses to become ready (the server's own words)."""

    @property
    def rolled_out(self) -> bool:
        """Every pod runs the current template and is ready."""
        return (
            self.generation_observed
            and self.updated >= self.replicas
            and self.total == self.updated
            and self.ready >= self.replicas
        )


@dataclass(frozen=True)
class VersionStats:
    """One model version's answers so far, summed over its pods."""

    requests: int = 0
    errors: int = 0
    """Answers that were not 2xx (a model that refuses what the stable one accepts is worse)."""
    latency_p99_seconds: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class ServingObservation:
    stable: DeploymentView | None
    canary: DeploymentView | None = None
    canary_stats: VersionStats = field(default_factory=VersionStats)


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class ServingPlan:
    """What the shell must make true."""

    stable_model: ServedModel | None
    """Model of the stable Deployment (None: nothing to serve yet, create nothing)."""
    canary_model: ServedModel | None
    """Model of the canary Deployment (None: there must be none)."""
    canary_replicas: int
    status: ModelDeploymentStatus
    events: list[Event]
    wake_at: datetime | None = None
    """When the next decision falls due with nothing new observed (a canary step's pause ending): the shell
    must look again then, if nothing brings it sooner."""


def canary_replicas(stable_replicas: int, weight: int) -> int:
    """Canary size so that canary / (stable + canary) is about `weight` percent."""
    stable = max(stable_replicas, 1)
    if weight >= 100:
        return stable
    return max(1, round(stable * weight / (100 - weight)))


def _condition(type_: str, ok: bool, reason: str, message: str, now: datetime, gen: int | None) -> Condition:
    return Condition(
        type=type_,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=gen,
    )


def _failure(view: DeploymentView | None) -> tuple[str, str] | None:
    """(reason, message) when a Deployment's new pods will not serve."""
    if view is None:
        return None
    if view.rejection:
        return "ModelRejected", view.rejection
    if view.deadline_exceeded:
        return "ProgressDeadlineExceeded", "the new pods did not become ready within the progress deadline"
    return None


def _judge(spec: ModelDeploymentSpec, stats: VersionStats) -> str | None:
    """Why the canary is worse than the analysis allows, or None."""
    analysis = spec.rollout.analysis
    if stats.requests < max(analysis.min_requests, 1):
        return None
    rate = stats.error_rate or 0.0
    if rate > analysis.max_error_rate:
        return f"error rate {rate:.1%} over {stats.requests} requests exceeds the allowed {analysis.max_error_rate:.1%}"
    p99, limit = stats.latency_p99_seconds, analysis.max_latency_p99_seconds
    if limit is not None and p99 is not None and p99 > limit:
        return f"p99 latency {p99:.3f}s exceeds the allowed {limit:.3f}s"
    return None


def plan_rollout(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    desired: ServedModel | None,
    observed: ServingObservation,
    now: datetime,
    generation: int | None,
    unresolved: str = "",
) -> ServingPlan:
    """The next step of the rollout; `unresolved` says why `desired` is None (source not ready)."""
    events: list[Event] = []
    st = status.model_copy(deep=True)
    current = st.current
    stable = observed.stable
    canary_model: ServedModel | None = None
    n_canary = 0

    blocked = (
        desired is not None
        and st.rejected is not None
        and st.rejected.digest == desired.digest
        and st.observed_generation == generation
    )
    if st.rejected is not None and st.observed_generation != generation and not blocked:
        st.rejected = None  # the spec changed: a once-rejected version may be tried again
    target = (
        desired
        if desired is not None and not blocked and (current is None or desired.digest != current.digest)
        else None
    )

    def reject(model: ServedModel, reason: str, message: str) -> None:
        st.rejected = RejectedModel(uri=model.uri, digest=model.digest, reason=reason, message=message, at=now)
        action = "rolled back" if current is not None else "not serving"
        events.append(Event("Warning", reason, f"model {version_of(model.digest)} {action}: {message}"))

    if current is None:
        # First version: nothing to fall back on, so a rejected model just stays not ready.
        stable_model = target
        if target is not None and stable is not None and stable.model_digest == target.digest:
            failure = _failure(stable)
            if stable.rolled_out:
                st.current = target
                events.append(Event("Normal", "Deployed", f"serving model {version_of(target.digest)}"))
            elif failure is not None:
                reject(target, *failure)
                stable_model = target  # keep the object; the pods say why in their readiness
        if blocked and desired is not None:
            stable_model = desired
    elif target is None:
        stable_model = current
        st.canary = None
    elif spec.rollout.strategy == RolloutStrategy.ROLLING:
        st.canary = None
        stable_model = target
        if stable is not None and stable.model_digest == target.digest:
            failure = _failure(stable)
            if stable.rolled_out:
                st.previous, st.current = current, target
                events.append(
                    Event(
                        "Normal",
                        "RolledOut",
                        f"serving model {version_of(target.digest)} (was {version_of(current.digest)})",
                    )
                )
            elif failure is not None:
                reject(target, *failure)
                stable_model = current
    else:
        stable_model, canary_model, n_canary = _canary(spec, st, current, target, observed, now, events, reject)

    # ---- status summary
    cur = st.current
    st.observed_generation = generation
    st.model_digest = version_of(cur.digest) if cur else None
    ready_stable = stable.ready if stable else 0
    ready_canary = observed.canary.ready if (observed.canary and canary_model) else 0
    st.ready_replicas = ready_stable + ready_canary
    st.traffic = _traffic(stable, stable_model, observed.canary if canary_model else None, canary_model)
    canary_view = observed.canary if canary_model else None
    st.conditions = _conditions(
        st, stable_model, canary_model, stable, canary_view, target, desired, unresolved, now, generation
    )
    wake_at = pause_end(spec, st)
    return ServingPlan(
        stable_model, canary_model, n_canary, st, events, wake_at if wake_at is not None and wake_at > now else None
    )


def pause_end(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> datetime | None:
    """When the canary's current step has paused for its `pauseSeconds` (None: no step is pausing)."""
    state, steps = status.canary, spec.rollout.steps
    if state is None or state.promoting or state.step_started_at is None or not steps:
        return None
    return state.step_started_at + timedelta(seconds=steps[min(state.step, len(steps) - 1)].pause_seconds)


def _canary(
    spec: ModelDeploymentSpec,
    st: ModelDeploymentStatus,
    current: ServedModel,
    target: ServedModel,
    observed: ServingObservation,
    now: datetime,
    events: list[Event],
    reject: Callable[[ServedModel, str, str], None],
) -> tuple[ServedModel | None, ServedModel | None, int]:
    steps = spec.rollout.steps
    stable, canary = observed.stable, observed.canary
    state = st.canary
    if state is None or state.model.digest != target.digest:
        state = CanaryStatus(model=target, step=0)
        events.append(Event("Normal", "CanaryStarted", f"canary of model {version_of(target.digest)} started"))
    stats = observed.canary_stats
    state.requests = stats.requests
    state.error_rate = stats.error_rate
    state.latency_p99_seconds = stats.latency_p99_seconds
    st.canary = state

    if state.promoting:
        if stable is not None and stable.model_digest == target.digest:
            failure = _failure(stable)
            if stable.rolled_out:
                st.previous, st.current, st.canary = current, target, None
                events.append(
                    Event("Normal", "Promoted", f"canary model {version_of(target.digest)} promoted to stable")
                )
                return target, None, 0
            if failure is not None:
                reject(target, *failure)
                st.canary = None
                return current, None, 0
        return target, target, canary.replicas if canary else 1

    step = steps[min(state.step, len(steps) - 1)]
    size = canary_replicas(stable.replicas if stable else spec.autoscaling.min_replicas, step.weight)
    failure = _failure(canary) if canary is not None and canary.model_digest == target.digest else None
    ready = canary is not None and canary.model_digest == target.digest and canary.ready > 0
    if failure is None and ready:
        # Judged only once it serves: before that it has answered no traffic worth judging.
        verdict = _judge(spec, stats)
        failure = ("CanaryFailed", verdict) if verdict else None
    if failure is not None:
        reject(target, *failure)
        st.canary = None
        return current, None, 0
    if not (ready and canary is not None and canary.rolled_out):
        return current, target, size
    if state.step_started_at is None:
        state.step_started_at = now
        events.append(Event("Normal", "CanaryStep", f"canary at {step.weight}% of replicas"))
    elapsed = (now - state.step_started_at).total_seconds()
    enough = stats.requests >= spec.rollout.analysis.min_requests
    if elapsed < step.pause_seconds or not enough:
        return current, target, size
    if state.step + 1 < len(steps):
        state.step += 1
        state.step_started_at = None
        nxt = steps[state.step]
        return current, target, canary_replicas(stable.replicas if stable else 1, nxt.weight)
    state.promoting = True
    events.append(Event("Normal", "CanaryPassed", f"canary passed every step; promoting {version_of(target.digest)}"))
    return target, target, size


def _traffic(
    stable: DeploymentView | None,
    stable_model: ServedModel | None,
    canary: DeploymentView | None,
    canary_model: ServedModel | None,
) -> list[TrafficShare]:
    shares: dict[str, int] = {}
    if stable is not None and stable.model_digest and stable.ready:
        shares[stable.model_digest] = stable.ready
    if canary is not None and canary_model is not None and canary.ready:
        shares[canary_model.digest] = shares.get(canary_model.digest, 0) + canary.ready
    total = sum(shares.values())
    if not total:
        return []
    out = [TrafficShare(digest=d, weight=math.floor(100 * n / total)) for d, n in shares.items()]
    out[0].weight += 100 - sum(s.weight for s in out)
    return out


def _conditions(
    st: ModelDeploymentStatus,
    stable_model: ServedModel | None,
    canary_model: ServedModel | None,
    stable: DeploymentView | None,
    canary: DeploymentView | None,
    target: ServedModel | None,
    desired: ServedModel | None,
    unresolved: str,
    now: datetime,
    gen: int | None,
) -> list[Condition]:
    conds = st.conditions
    if st.current is not None and stable is not None and stable.ready > 0:
        ready = _condition("Ready", True, "Serving", f"serving model {version_of(st.current.digest)}", now, gen)
    elif desired is None:
        ready = _condition(
            "Ready", False, "ModelUnresolved", unresolved or "the model source has no model yet", now, gen
        )
    elif st.rejected is not None and st.current is None:
        ready = _condition("Ready", False, st.rejected.reason, st.rejected.message, now, gen)
    else:
        ready = _condition("Ready", False, "Starting", "waiting for model server replicas to become ready", now, gen)
    conds = set_condition(conds, ready)

    moving = target is not None and (
        stable_model is None
        or st.current is None
        or stable_model.digest != st.current.digest
        or canary_model is not None
    )
    rolling_back = (
        stable is not None
        and st.current is not None
        and stable.model_digest not in (None, st.current.digest)
        and target is None
    )
    if st.canary is not None:
        message = (
            f"promoting canary {version_of(st.canary.model.digest)}"
            if st.canary.promoting
            else f"canary {version_of(st.canary.model.digest)} at step {st.canary.step + 1}"
        )
        if not st.canary.promoting and (canary is None or not canary.rolled_out):
            # The step's pause starts only once every canary pod is ready; say what it waits for, since
            # pods that cannot be scheduled (no room on the nodes) otherwise look like a stalled rollout.
            message += (
                ": waiting for its Deployment"
                if canary is None
                else f": waiting for its pods ({canary.ready} of {canary.replicas} ready)"
            )
        progressing = _condition("Progressing", True, "Canary", message, now, gen)
    elif rolling_back:
        progressing = _condition("Progressing", True, "RollingBack", "returning to the current model", now, gen)
    elif moving and target is not None:
        progressing = _condition(
            "Progressing", True, "RollingOut", f"rolling out model {version_of(target.digest)}", now, gen
        )
    else:
        progressing = _condition("Progressing", False, "Stable", "no rollout in progress", now, gen)
    conds = set_condition(conds, progressing)

    if st.rejected is not None:
        degraded = _condition(
            "Degraded",
            True,
            st.rejected.reason,
            f"model {version_of(st.rejected.digest)}: {st.rejected.message}",
            now,
            gen,
        )
    else:
        degraded = _condition("Degraded", False, "AsExpected", "", now, gen)
    return set_condition(conds, degraded)
