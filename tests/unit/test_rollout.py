"""The rollout planner: rolling, canary, rollback, as tables of observations and expected plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.api.modeldeployment import (
    CanaryStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RejectedModel,
    ServedModel,
)
from conveyor.core.rollout import (
    DeploymentView,
    ServingObservation,
    VersionStats,
    canary_replicas,
    plan_rollout,
    version_of,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
A = ServedModel(uri="s3://b/a", digest="sha256:" + "a" * 64)
B = ServedModel(uri="s3://b/b", digest="sha256:" + "b" * 64)


def spec(**overrides: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": {"uri": B.uri, "digest": B.digest}, **overrides})


CANARY = {
    "rollout": {
        "strategy": "Canary",
        "steps": [{"weight": 25, "pauseSeconds": 30}, {"weight": 50, "pauseSeconds": 30}],
        "analysis": {"maxErrorRate": 0.05, "minRequests": 20},
    }
}


def view(model: ServedModel | None, replicas: int = 2, ready: int = 2, **kw: Any) -> DeploymentView:
    defaults: dict[str, Any] = {"updated": replicas, "total": replicas}
    defaults.update(kw)
    return DeploymentView(model.digest if model else None, replicas, ready, **defaults)


def cond(status: ModelDeploymentStatus, type_: str) -> tuple[str, str]:
    c = next(c for c in status.conditions if c.type == type_)
    return c.status.value, c.reason


def test_first_deploy_creates_the_stable_deployment_and_reports_starting() -> None:
    plan = plan_rollout(spec(), ModelDeploymentStatus(), B, ServingObservation(None), NOW, 1)
    assert plan.stable_model == B and plan.canary_model is None
    assert plan.status.current is None
    assert cond(plan.status, "Ready") == ("False", "Starting")


def test_first_deploy_becomes_current_when_rolled_out() -> None:
    plan = plan_rollout(spec(), ModelDeploymentStatus(), B, ServingObservation(view(B)), NOW, 1)
    assert plan.status.current == B
    assert plan.status.model_digest == version_of(B.digest)
    assert cond(plan.status, "Ready") == ("True", "Serving")
    assert [e.reason for e in plan.events] == ["Deployed"]
    assert plan.status.traffic[0].weight == 100


def test_first_deploy_refused_model_is_not_ready_with_the_servers_reason() -> None:
    observed = ServingObservation(view(B, ready=0, rejection="model digest mismatch: expected x, got y"))
    plan = plan_rollout(spec(), ModelDeploymentStatus(), B, observed, NOW, 1)
    assert plan.status.current is None
    assert plan.status.rejected is not None and plan.status.rejected.reason == "ModelRejected"
    assert cond(plan.status, "Ready") == ("False", "ModelRejected")
    assert cond(plan.status, "Degraded")[0] == "True"


@pytest.mark.parametrize(
    ("observed", "stable_model", "current", "previous", "events"),
    [
        # template not yet moved: move it
        (view(A), B, A, None, []),
        # moving: half the pods new
        (view(B, updated=1, total=3, ready=2), B, A, None, []),
        # done: B is current, A the rollback target
        (view(B), B, B, A, ["RolledOut"]),
        # B refused by its pods: back to A, remembered as rejected
        (view(B, ready=2, updated=1, total=3, rejection="model digest mismatch"), A, A, None, ["ModelRejected"]),
        # B never got ready in time: back to A
        (view(B, ready=2, updated=1, total=3, deadline_exceeded=True), A, A, None, ["ProgressDeadlineExceeded"]),
    ],
)
def test_rolling_update(
    observed: DeploymentView,
    stable_model: ServedModel,
    current: ServedModel,
    previous: ServedModel | None,
    events: list[str],
) -> None:
    status = ModelDeploymentStatus(current=A, observed_generation=2)
    plan = plan_rollout(spec(), status, B, ServingObservation(observed), NOW, 2)
    assert plan.stable_model == stable_model
    assert plan.canary_model is None
    assert plan.status.current == current
    assert plan.status.previous == previous
    assert [e.reason for e in plan.events] == events


def test_a_rejected_version_is_not_retried_until_the_spec_changes() -> None:
    rejected = RejectedModel(uri=B.uri, digest=B.digest, reason="ModelRejected", message="bad", at=NOW)
    status = ModelDeploymentStatus(current=A, rejected=rejected, observed_generation=2)
    same = plan_rollout(spec(), status, B, ServingObservation(view(A)), NOW, 2)
    assert same.stable_model == A and same.status.rejected is not None
    assert cond(same.status, "Degraded") == ("True", "ModelRejected")
    assert cond(same.status, "Ready") == ("True", "Serving")
    changed = plan_rollout(spec(), status, B, ServingObservation(view(A)), NOW, 3)
    assert changed.stable_model == B and changed.status.rejected is None


def test_rolling_back_reports_progressing() -> None:
    rejected = RejectedModel(uri=B.uri, digest=B.digest, reason="ModelRejected", message="bad", at=NOW)
    status = ModelDeploymentStatus(current=A, rejected=rejected, observed_generation=2)
    plan = plan_rollout(spec(), status, B, ServingObservation(view(B, ready=2, updated=1, total=3)), NOW, 2)
    assert plan.stable_model == A
    assert cond(plan.status, "Progressing") == ("True", "RollingBack")


@pytest.mark.parametrize(
    ("stable", "weight", "expected"),
    [(2, 25, 1), (3, 50, 3), (4, 20, 1), (6, 25, 2), (2, 100, 2), (0, 50, 1)],
)
def test_canary_size_follows_the_weight(stable: int, weight: int, expected: int) -> None:
    assert canary_replicas(stable, weight) == expected


def canary_status(step: int = 0, started: datetime | None = None, promoting: bool = False) -> ModelDeploymentStatus:
    return ModelDeploymentStatus(
        current=A,
        observed_generation=2,
        canary=CanaryStatus(model=B, step=step, step_started_at=started, promoting=promoting),
    )


def test_canary_starts_beside_the_stable_deployment() -> None:
    status = ModelDeploymentStatus(current=A, observed_generation=2)
    plan = plan_rollout(spec(**CANARY), status, B, ServingObservation(view(A)), NOW, 2)
    assert plan.stable_model == A and plan.canary_model == B and plan.canary_replicas == 1
    assert plan.status.canary is not None and plan.status.canary.step == 0
    assert [e.reason for e in plan.events] == ["CanaryStarted"]
    assert cond(plan.status, "Progressing") == ("True", "Canary")


def test_canary_pause_starts_when_its_pods_are_ready() -> None:
    observed = ServingObservation(view(A), view(B, replicas=1, ready=1))
    plan = plan_rollout(spec(**CANARY), canary_status(), B, observed, NOW, 2)
    assert plan.status.canary is not None and plan.status.canary.step_started_at == NOW
    assert {s.digest: s.weight for s in plan.status.traffic} == {A.digest: 67, B.digest: 33}


@pytest.mark.parametrize(
    ("elapsed", "stats", "step", "promoting", "canary_model"),
    [
        (10, VersionStats(100, 0, 0.01), 0, False, B),  # pausing
        (40, VersionStats(5, 0, 0.01), 0, False, B),  # paused long enough, too few requests to judge
        (40, VersionStats(100, 1, 0.01), 1, False, B),  # healthy: next step
        (10, VersionStats(100, 30, 0.01), None, False, None),  # 30% errors: rolled back at once
    ],
)
def test_canary_steps_and_analysis(
    elapsed: int, stats: VersionStats, step: int | None, promoting: bool, canary_model: ServedModel | None
) -> None:
    observed = ServingObservation(view(A), view(B, replicas=1, ready=1), stats)
    status = canary_status(started=NOW - timedelta(seconds=elapsed))
    plan = plan_rollout(spec(**CANARY), status, B, observed, NOW, 2)
    assert plan.canary_model == canary_model
    if step is None:
        assert plan.status.canary is None
        assert plan.status.rejected is not None and plan.status.rejected.reason == "CanaryFailed"
        assert "error rate 30.0%" in plan.status.rejected.message
        assert plan.stable_model == A and plan.status.current == A
    else:
        assert plan.status.canary is not None
        assert (plan.status.canary.step, plan.status.canary.promoting) == (step, promoting)


def test_canary_refused_model_rolls_back() -> None:
    observed = ServingObservation(view(A), view(B, replicas=1, ready=0, rejection="untrusted type os.system"))
    plan = plan_rollout(spec(**CANARY), canary_status(), B, observed, NOW, 2)
    assert plan.canary_model is None and plan.status.canary is None
    assert plan.status.rejected is not None and plan.status.rejected.reason == "ModelRejected"


def test_a_canary_is_not_judged_before_it_serves() -> None:
    observed = ServingObservation(view(A), view(B, replicas=1, ready=0, updated=1, total=1), VersionStats(50, 50))
    plan = plan_rollout(spec(**CANARY), canary_status(), B, observed, NOW, 2)
    assert plan.canary_model == B and plan.status.rejected is None


def test_latency_over_the_limit_rolls_back() -> None:
    s = spec(**{**CANARY, "rollout": {**CANARY["rollout"], "analysis": {"maxLatencyP99Seconds": 0.1}}})
    observed = ServingObservation(view(A), view(B, replicas=1, ready=1), VersionStats(100, 0, 0.5))
    plan = plan_rollout(s, canary_status(started=NOW), B, observed, NOW, 2)
    assert plan.status.rejected is not None and "p99 latency" in plan.status.rejected.message


def test_last_step_passed_promotes_then_removes_the_canary() -> None:
    observed = ServingObservation(view(A), view(B, replicas=2, ready=2), VersionStats(100, 0, 0.01))
    plan = plan_rollout(spec(**CANARY), canary_status(step=1, started=NOW - timedelta(seconds=31)), B, observed, NOW, 2)
    assert plan.status.canary is not None and plan.status.canary.promoting
    assert plan.stable_model == B and plan.canary_model == B  # canary stays until stable has moved
    assert [e.reason for e in plan.events] == ["CanaryPassed"]
    moving = plan_rollout(
        spec(**CANARY), plan.status, B, ServingObservation(view(B, updated=1, total=3), view(B)), NOW, 2
    )
    assert moving.canary_model == B and moving.status.current == A
    done = plan_rollout(spec(**CANARY), moving.status, B, ServingObservation(view(B), view(B)), NOW, 2)
    assert done.canary_model is None and done.status.canary is None
    assert done.status.current == B and done.status.previous == A
    assert [e.reason for e in done.events] == ["Promoted"]


def test_spec_moving_away_from_the_canary_model_aborts_it() -> None:
    observed = ServingObservation(view(A), view(B, replicas=1, ready=1))
    plan = plan_rollout(spec(**CANARY), canary_status(started=NOW), A, observed, NOW, 3)
    assert plan.canary_model is None and plan.status.canary is None and plan.stable_model == A


def test_unresolved_source_says_why() -> None:
    plan = plan_rollout(spec(), ModelDeploymentStatus(), None, ServingObservation(None), NOW, 1, "no run blessed")
    assert plan.stable_model is None
    assert cond(plan.status, "Ready") == ("False", "ModelUnresolved")
    assert next(c for c in plan.status.conditions if c.type == "Ready").message == "no run blessed"


def test_planning_twice_on_the_same_observation_is_stable() -> None:
    status = ModelDeploymentStatus(current=A, observed_generation=2)
    first = plan_rollout(spec(), status, B, ServingObservation(view(B)), NOW, 2)
    again = plan_rollout(spec(), first.status, B, ServingObservation(view(B)), NOW, 2)
    assert again.status == first.status and again.events == []


@pytest.mark.parametrize(
    ("canary", "says"),
    [
        (None, "waiting for its Deployment"),
        (view(B, replicas=2, ready=1), "waiting for its pods (1 of 2 ready)"),  # one pod found no room
        (view(B, replicas=2, ready=2, updated=1), "waiting for its pods (2 of 2 ready)"),  # old pod still there
        (view(B, replicas=1, ready=1), None),  # all ready: the pause runs
    ],
)
def test_a_canary_waiting_for_its_pods_says_how_many_are_ready(canary: DeploymentView | None, says: str | None) -> None:
    plan = plan_rollout(spec(**CANARY), canary_status(), B, ServingObservation(view(A), canary), NOW, 2)
    progressing = next(c for c in plan.status.conditions if c.type == "Progressing")
    assert progressing.reason == "Canary"
    if says is None:
        assert "waiting" not in progressing.message, progressing.message
        assert plan.status.canary is not None and plan.status.canary.step_started_at == NOW
    else:
        assert progressing.message.endswith(says), progressing.message
        assert plan.status.canary is not None and plan.status.canary.step_started_at is None
