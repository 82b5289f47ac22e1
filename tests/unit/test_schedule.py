"""The schedule core on plain data: (schedule, last scheduled time, now, its Runs) → actions, and convergence."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.api.pipeline import Schedule
from conveyor.api.run import RunPhase
from conveyor.core.schedule import (
    MISSED_COUNT_CAP,
    CancelRun,
    CreateRun,
    DeleteRun,
    ScheduledRun,
    SchedulePlan,
    plan_schedule,
    run_name,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def sched(cron: str = "* * * * *", **extra: Any) -> Schedule:
    return Schedule.model_validate({"cron": cron, **extra})


def run(minute: int, phase: RunPhase = RunPhase.SUCCEEDED, cancel: bool = False, pipeline: str = "p") -> ScheduledRun:
    """A Run the schedule created for T0 + `minute` minutes."""
    at = T0 + timedelta(minutes=minute)
    return ScheduledRun(run_name(pipeline, at), phase, at + timedelta(seconds=1), at, cancel)


# ---------------------------------------------------------------- names


def test_run_name_is_the_pipeline_and_the_unix_minute() -> None:
    assert run_name("train", T0) == f"train-{int(T0.timestamp()) // 60}"
    assert run_name("train", T0 + timedelta(seconds=59)) == run_name("train", T0)  # deterministic per minute


@pytest.mark.parametrize(
    "pipeline",
    ["x" * 60, "a" * 253, "nightly.retrain.example", "Weird_Name", "-" * 10, "a" * 54 + "-" + "b" * 10],
)
def test_run_name_is_always_a_valid_label_and_unique_per_pipeline(pipeline: str) -> None:
    name = run_name(pipeline, T0)
    assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert name.endswith(f"-{int(T0.timestamp()) // 60}")
    assert run_name(pipeline + "x", T0) != name
    assert run_name(pipeline, T0) == name


def test_cleaned_names_do_not_collide() -> None:
    assert run_name("a.b", T0) != run_name("a-b", T0)


# ---------------------------------------------------------------- which time is due

DUE_CASES: list[tuple[str, Schedule, datetime, datetime, datetime | None, int, datetime | None]] = [
    # id, schedule, last scheduled (or creation), now → due, missed, next
    ("nothing-yet", sched(), utc(2026, 1, 1, 12, 0, 30), utc(2026, 1, 1, 12, 0, 50), None, 0, utc(2026, 1, 1, 12, 1)),
    ("exactly-on-time", sched(), T0, utc(2026, 1, 1, 12, 1), utc(2026, 1, 1, 12, 1), 0, utc(2026, 1, 1, 12, 2)),
    (
        "late-in-the-minute",
        sched(),
        T0,
        datetime(2026, 1, 1, 12, 1, 59, 900000, tzinfo=UTC),
        utc(2026, 1, 1, 12, 1),
        0,
        utc(2026, 1, 1, 12, 2),
    ),
    ("already-done", sched(), utc(2026, 1, 1, 12, 1), utc(2026, 1, 1, 12, 1, 40), None, 0, utc(2026, 1, 1, 12, 2)),
    (
        "missed-only-latest",
        sched(),
        T0,
        utc(2026, 1, 1, 12, 5, 10),
        utc(2026, 1, 1, 12, 5),
        4,
        utc(2026, 1, 1, 12, 6),
    ),
    (
        "missed-count-capped",
        sched(),
        T0,
        utc(2026, 1, 8, 12, 0, 10),
        utc(2026, 1, 8, 12, 0),
        MISSED_COUNT_CAP,
        utc(2026, 1, 8, 12, 1),
    ),
    ("hourly", sched("0 * * * *"), utc(2026, 1, 1, 12, 30), utc(2026, 1, 1, 13, 0, 5), utc(2026, 1, 1, 13), 0, None),
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC from 8 March 2026 (EDT)
    (
        "tz-dst-start-new-york",
        sched("0 9 * * *", timeZone="America/New_York"),
        utc(2026, 3, 7, 14),
        utc(2026, 3, 8, 13, 0, 30),
        utc(2026, 3, 8, 13),
        0,
        utc(2026, 3, 9, 13),
    ),
    (
        "tz-not-yet-by-wall-clock",
        sched("0 9 * * *", timeZone="America/New_York"),
        utc(2026, 3, 7, 14),
        utc(2026, 3, 8, 12, 59),
        None,
        0,
        utc(2026, 3, 8, 13),
    ),
    # 02:30 does not exist in Berlin on 29 March 2026: it fires at the end of the gap, 03:00 CEST
    (
        "spring-forward-gap",
        sched("30 2 * * *", timeZone="Europe/Berlin"),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0, 10),
        utc(2026, 3, 29, 1, 0),
        0,
        utc(2026, 3, 30, 0, 30),
    ),
    # 02:30 happens twice in Berlin on 25 October 2026: a fixed-time job fires once
    (
        "fall-back-once",
        sched("30 2 * * *", timeZone="Europe/Berlin"),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 30, 10),
        None,
        0,
        utc(2026, 10, 26, 1, 30),
    ),
    # ...but with a wildcard hour, elapsed time rules: both 02:30s fire
    (
        "fall-back-wildcard-hour",
        sched("30 * * * *", timeZone="Europe/Berlin"),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 30, 10),
        utc(2026, 10, 25, 1, 30),
        0,
        utc(2026, 10, 25, 2, 30),
    ),
]


@pytest.mark.parametrize(
    ("schedule", "last", "now", "due", "missed", "upcoming"), [c[1:] for c in DUE_CASES], ids=[c[0] for c in DUE_CASES]
)
def test_due_time(
    schedule: Schedule,
    last: datetime,
    now: datetime,
    due: datetime | None,
    missed: int,
    upcoming: datetime | None,
) -> None:
    plan = plan_schedule("p", schedule, last, now, [])
    assert (plan.due, plan.missed) == (due, missed)
    if upcoming is not None:
        assert plan.next_time == upcoming
    if due is None:
        assert plan.actions == () and plan.last_scheduled_time is None
    else:
        assert plan.actions == (CreateRun(run_name("p", due), due),)
        assert plan.last_scheduled_time == due and plan.last_run == run_name("p", due)


# ---------------------------------------------------------------- concurrency policies

NOW = T0 + timedelta(minutes=3, seconds=5)  # due: T0 + 3 min
DUE = T0 + timedelta(minutes=3)
LAST = T0 + timedelta(minutes=2)
NEW = run_name("p", DUE)

POLICY_CASES: list[tuple[str, str, list[ScheduledRun], tuple[Any, ...], tuple[str, ...]]] = [
    # id, policy, existing runs → actions, blocked_by
    ("allow-idle", "Allow", [run(2)], (CreateRun(NEW, DUE),), ()),
    ("allow-busy", "Allow", [run(2, RunPhase.RUNNING)], (CreateRun(NEW, DUE),), ()),
    ("forbid-idle", "Forbid", [run(1, RunPhase.FAILED), run(2)], (CreateRun(NEW, DUE),), ()),
    ("forbid-busy", "Forbid", [run(1, RunPhase.RUNNING), run(2, RunPhase.PENDING)], (), (run(1).name, run(2).name)),
    ("replace-idle", "Replace", [run(2, RunPhase.CANCELLED)], (CreateRun(NEW, DUE),), ()),
    (
        "replace-busy",
        "Replace",
        [run(1, RunPhase.RUNNING), run(2, RunPhase.PENDING)],
        (CancelRun(run(1).name), CancelRun(run(2).name), CreateRun(NEW, DUE)),
        (),
    ),
    (
        "replace-already-cancelling",
        "Replace",
        [run(2, RunPhase.RUNNING, cancel=True)],
        (CreateRun(NEW, DUE),),
        (),
    ),
]


@pytest.mark.parametrize(
    ("policy", "runs", "actions", "blocked"), [c[1:] for c in POLICY_CASES], ids=[c[0] for c in POLICY_CASES]
)
def test_concurrency_policy(
    policy: str, runs: list[ScheduledRun], actions: tuple[Any, ...], blocked: tuple[str, ...]
) -> None:
    plan = plan_schedule("p", sched(concurrencyPolicy=policy), LAST, NOW, runs)
    assert plan.actions == actions
    assert plan.blocked_by == blocked
    assert plan.due == DUE
    # a held-back time is not recorded as scheduled: it stays due until its Run exists
    assert plan.last_scheduled_time == (None if blocked else DUE)


def test_forbid_starts_the_held_back_time_once_the_run_ends() -> None:
    busy = [run(2, RunPhase.RUNNING)]
    later = NOW + timedelta(minutes=2, seconds=30)  # two more times passed while the run went on
    assert plan_schedule("p", sched(), LAST, later, busy).actions == ()
    plan = plan_schedule("p", sched(), LAST, later, [run(2, RunPhase.SUCCEEDED)])
    latest = T0 + timedelta(minutes=5)
    assert plan.actions == (CreateRun(run_name("p", latest), latest),)
    assert plan.missed == 2


def test_a_run_that_exists_for_the_due_time_is_recorded_not_recreated() -> None:
    # the Run was created but the status write was lost (operator killed in between)
    existing = run(3, RunPhase.RUNNING)
    for policy in ("Allow", "Forbid", "Replace"):
        plan = plan_schedule("p", sched(concurrencyPolicy=policy), LAST, NOW, [existing])
        assert plan.actions == ()
        assert (plan.last_scheduled_time, plan.last_run) == (DUE, existing.name)


def test_suspend_creates_nothing_but_still_collects_history() -> None:
    runs = [run(0), run(1), run(2, RunPhase.RUNNING)]
    plan = plan_schedule("p", sched(suspend=True, successfulRunsHistoryLimit=1), LAST, NOW, runs)
    assert plan == SchedulePlan(actions=(DeleteRun(run(0).name, RunPhase.SUCCEEDED),))
    assert plan.next_time is None and plan.due is None


# ---------------------------------------------------------------- history

GC_CASES: list[tuple[str, dict[str, int], list[ScheduledRun], list[str]]] = [
    # id, limits, runs → deleted (oldest first)
    ("within-limits", {}, [run(i) for i in range(3)], []),
    (
        "succeeded-over",
        {"successfulRunsHistoryLimit": 2},
        [run(i) for i in range(5)],
        [run(0).name, run(1).name, run(2).name],
    ),
    (
        "kinds-counted-apart",
        {"successfulRunsHistoryLimit": 1, "failedRunsHistoryLimit": 1},
        [run(0, RunPhase.FAILED), run(1), run(2, RunPhase.CANCELLED), run(3), run(4, RunPhase.FAILED)],
        [run(0).name, run(1).name, run(2).name],
    ),
    (
        "zero-keeps-none",
        {"successfulRunsHistoryLimit": 0, "failedRunsHistoryLimit": 0},
        [run(0), run(1, RunPhase.FAILED)],
        [run(0).name, run(1).name],
    ),
    (
        "unfinished-never-collected",
        {"successfulRunsHistoryLimit": 0, "failedRunsHistoryLimit": 0},
        [run(0, RunPhase.PENDING), run(1, RunPhase.RUNNING), run(2, RunPhase.RUNNING, cancel=True)],
        [],
    ),
]


@pytest.mark.parametrize(("limits", "runs", "deleted"), [c[1:] for c in GC_CASES], ids=[c[0] for c in GC_CASES])
def test_history_limits(limits: dict[str, int], runs: list[ScheduledRun], deleted: list[str]) -> None:
    # `now` has nothing due, so only the garbage collection acts
    plan = plan_schedule(
        "p", sched("* * * * *", **limits), T0 + timedelta(minutes=10), T0 + timedelta(minutes=10, seconds=1), runs
    )
    assert [a.name for a in plan.actions if isinstance(a, DeleteRun)] == deleted
    assert all(isinstance(a, DeleteRun) for a in plan.actions)


def test_history_orders_by_scheduled_time_not_creation() -> None:
    # a Run created late (held back by Forbid) for an earlier time is still the older one
    early = replace(run(1), created_at=T0 + timedelta(minutes=9))
    plan = plan_schedule(
        "p",
        sched(successfulRunsHistoryLimit=1),
        T0 + timedelta(minutes=10),
        T0 + timedelta(minutes=10),
        [run(5), early],
    )
    assert plan.actions == (DeleteRun(early.name, RunPhase.SUCCEEDED),)


# ---------------------------------------------------------------- convergence


def _apply(plan: SchedulePlan, runs: list[ScheduledRun], now: datetime) -> list[ScheduledRun]:
    by_name = {r.name: r for r in runs}
    for a in plan.actions:
        if isinstance(a, CreateRun):
            by_name.setdefault(a.name, ScheduledRun(a.name, RunPhase.PENDING, now, a.scheduled_at))
        elif isinstance(a, CancelRun):
            by_name[a.name] = replace(by_name[a.name], cancel_requested=True)
        else:
            del by_name[a.name]
    return list(by_name.values())


@pytest.mark.parametrize("policy", ["Allow", "Forbid", "Replace"])
def test_hours_of_passes_converge_and_keeps_the_history_bounded(policy: str) -> None:
    """Every 30 s for six hours: each pass applied to a simulated world, then planned again: nothing left to do."""
    schedule = sched("*/5 * * * *", concurrencyPolicy=policy, successfulRunsHistoryLimit=3, failedRunsHistoryLimit=2)
    runs: list[ScheduledRun] = []
    last = T0 - timedelta(seconds=30)  # the Pipeline's creation
    created: list[str] = []
    now = T0
    while now < T0 + timedelta(hours=6):
        plan = plan_schedule("p", schedule, last, now, runs)
        runs = _apply(plan, runs, now)
        created += [a.name for a in plan.actions if isinstance(a, CreateRun)]
        last = plan.last_scheduled_time or last
        again = plan_schedule("p", schedule, last, now, runs)
        assert again.actions == (), (now, again)
        # the world moves: runs take 7 minutes; every third fails; cancelled ones stop at once
        runs = [
            replace(r, phase=RunPhase.CANCELLED)
            if r.cancel_requested and not r.finished
            else replace(r, phase=RunPhase.RUNNING)
            if r.phase is RunPhase.PENDING
            else replace(r, phase=RunPhase.FAILED if int(r.name.rsplit("-", 1)[1]) % 3 == 0 else RunPhase.SUCCEEDED)
            if r.phase is RunPhase.RUNNING and now - r.created_at >= timedelta(minutes=7)
            else r
            for r in runs
        ]
        assert sum(r.phase is RunPhase.SUCCEEDED for r in runs) <= 3 + 1
        assert sum(r.phase in (RunPhase.FAILED, RunPhase.CANCELLED) for r in runs) <= 2 + 1
        if policy == "Forbid":
            assert sum(not r.finished for r in runs) <= 1
        now += timedelta(seconds=30)
    assert len(created) == len(set(created))
    if policy == "Forbid":  # a held-back time starts when the 7-minute run before it ends
        assert 6 * 60 / 8 < len(created) < 6 * 60 / 7
    else:
        assert len(created) == 6 * 12


def test_the_operator_supports_schedules_and_the_local_runner_does_not() -> None:
    from conveyor.api.pipeline import PipelineSpec
    from conveyor.core.support import LOCAL, OPERATOR, unsupported

    spec = PipelineSpec.model_validate(
        {"steps": [{"name": "a", "container": {"image": "i", "command": ["a"]}}], "schedule": {"cron": "0 3 * * *"}}
    )
    assert unsupported(spec, OPERATOR) == []
    assert [i.path for i in unsupported(spec, LOCAL)] == ["spec.schedule"]
