"""Cron schedules of Pipelines, decided purely: (schedule, last scheduled time, now, its Runs) → what to do.

The rules follow Kubernetes CronJob, which people already know:

- At most ONE Run per pass, for the latest scheduled time that is due. Times missed while the
  operator was down (or while Forbid held them back) are not replayed one by one: a pipeline
  that retrains daily should retrain once after an outage, not once per missed day. The number
  passed over is reported so the shell can say so.
- A due time stays due until a Run exists for it: under Forbid, the newest missed time starts as
  soon as the unfinished Run ends (as a CronJob without startingDeadlineSeconds does).
- Time zones are IANA names read with zoneinfo. A wall-clock time that does not exist (spring
  forward) fires at the first instant after the gap; a wall-clock time that occurs twice (fall
  back) fires once, unless the hour field is a wildcard, in which case elapsed time rules and
  both occurrences fire (as in Vixie cron).
- Run names are deterministic (`<pipeline>-<unix minutes of the scheduled time>`), so creating
  the Run again after a crash is a no-op, and a Run that already exists for the due time counts
  as created.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from conveyor.api.pipeline import ConcurrencyPolicy, Schedule
from conveyor.api.run import RunPhase

FINISHED = frozenset({RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED})
MAX_NAME = 63
MISSED_COUNT_CAP = 100
"""Counting missed times stops here: an every-minute schedule after a week's outage says "100 or more"."""


@dataclass(frozen=True)
class ScheduledRun:
    """A Run this schedule created, as the shell observed it."""

    name: str
    phase: RunPhase
    created_at: datetime
    scheduled_at: datetime | None = None
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    def sort_key(self) -> tuple[datetime, datetime, str]:
        return (self.scheduled_at or self.created_at, self.created_at, self.name)


@dataclass(frozen=True)
class CreateRun:
    """Start a Run of the pipeline for this scheduled time."""

    name: str
    scheduled_at: datetime


@dataclass(frozen=True)
class CancelRun:
    """Ask an unfinished Run to stop (spec.cancel = true), keeping its record: the Replace policy."""

    name: str


@dataclass(frozen=True)
class DeleteRun:
    """Garbage-collect a finished Run beyond the history limit of its kind."""

    name: str
    phase: RunPhase


Action = CreateRun | CancelRun | DeleteRun


@dataclass(frozen=True)
class SchedulePlan:
    """What one pass decided. Actions are in order: cancel, then create, then delete."""

    actions: tuple[Action, ...] = ()
    last_scheduled_time: datetime | None = None
    """The scheduled time a Run now exists for (record in status), or None when unchanged."""
    last_run: str | None = None
    """The Run created (or found) for that time."""
    due: datetime | None = None
    """The latest scheduled time that is due, whether or not a Run was created for it."""
    missed: int = 0
    """Due times passed over in favour of `due` (capped at MISSED_COUNT_CAP)."""
    blocked_by: tuple[str, ...] = ()
    """Under Forbid: the unfinished Runs that held `due` back."""
    next_time: datetime | None = None
    """The next scheduled time after now (None while suspended): when to look again."""


# ---------------------------------------------------------------- names


def _clean(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def run_name(pipeline: str, scheduled_at: datetime) -> str:
    """`<pipeline>-<unix minutes>`, a DNS-1123 label of at most 63 characters.

    A pipeline name that had to be shortened or cleaned (it may be a 253-character subdomain with
    dots) gets a short hash of the original, so two pipelines never share Run names.
    """
    suffix = f"-{int(scheduled_at.timestamp()) // 60}"
    head = _clean(pipeline) or "run"
    if head == pipeline and len(head) + len(suffix) <= MAX_NAME:
        return head + suffix
    digest = hashlib.sha256(pipeline.encode()).hexdigest()[:6]
    keep = MAX_NAME - len(suffix) - len(digest) - 1
    return f"{head[:keep].strip('-')}-{digest}{suffix}".lstrip("-")


# ---------------------------------------------------------------- cron arithmetic


def _hour_is_wildcard(cron: str) -> bool:
    fields = cron.split()
    return len(fields) >= 2 and fields[1].startswith("*")


def _repeated_wall_time(t: datetime) -> bool:
    """The second occurrence of a wall-clock time that happens twice (the hour after a fall-back)."""
    return t.fold == 1 and t.replace(fold=0).utcoffset() != t.utcoffset()


def _times(cron: str, zone: ZoneInfo, start: datetime, forward: bool) -> Iterator[datetime]:
    """Scheduled times strictly after (or before) `start`, in UTC."""
    it = croniter(cron, start.astimezone(zone))
    skip_repeats = not _hour_is_wildcard(cron)
    while True:
        t = it.get_next(datetime) if forward else it.get_prev(datetime)
        if skip_repeats and _repeated_wall_time(t):
            continue
        yield t.astimezone(UTC)


def latest_due(cron: str, zone: ZoneInfo, last: datetime, now: datetime) -> tuple[datetime | None, int]:
    """(the latest scheduled time in (last, now], how many earlier ones in that window were passed over)."""
    # croniter's get_prev is strict: start one second past `now` (whole seconds, so never past the
    # next minute) to include a time equal to it.
    latest = next(_times(cron, zone, now.replace(microsecond=0) + timedelta(seconds=1), forward=False))
    if latest <= last:
        return None, 0
    missed = 0
    for t in _times(cron, zone, last, forward=True):
        if t >= latest or missed >= MISSED_COUNT_CAP:
            break
        missed += 1
    return latest, missed


def next_time(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first scheduled time strictly after `after`, in UTC."""
    return next(_times(cron, zone, after, forward=True))


# ---------------------------------------------------------------- the plan


def _history_gc(schedule: Schedule, runs: Sequence[ScheduledRun]) -> list[DeleteRun]:
    """Finished Runs beyond the limits, oldest first; Succeeded and Failed/Cancelled counted apart."""
    out: list[ScheduledRun] = []
    groups = (
        (schedule.successful_runs_history_limit, {RunPhase.SUCCEEDED}),
        (schedule.failed_runs_history_limit, {RunPhase.FAILED, RunPhase.CANCELLED}),
    )
    for limit, phases in groups:
        kept = sorted((r for r in runs if r.phase in phases), key=ScheduledRun.sort_key)
        excess = kept[: max(0, len(kept) - limit)]
        out += excess
    return [DeleteRun(r.name, r.phase) for r in sorted(out, key=ScheduledRun.sort_key)]


def plan_schedule(
    pipeline: str,
    schedule: Schedule,
    last_scheduled: datetime,
    now: datetime,
    runs: Sequence[ScheduledRun],
) -> SchedulePlan:
    """Decide one pass of a Pipeline's schedule. `schedule` must have passed validation (cron, zone).

    `last_scheduled` is status.lastScheduledTime, or the Pipeline's creation time before the first Run;
    `runs` are the Runs this schedule created (its label), finished or not.
    """
    zone = ZoneInfo(schedule.time_zone)
    gc = _history_gc(schedule, runs)
    if schedule.suspend:
        return SchedulePlan(actions=tuple(gc))
    upcoming = next_time(schedule.cron, zone, max(now, last_scheduled))
    due, missed = latest_due(schedule.cron, zone, last_scheduled, now)
    if due is None:
        return SchedulePlan(actions=tuple(gc), next_time=upcoming)

    name = run_name(pipeline, due)
    if any(r.name == name for r in runs):
        # Created in an earlier pass whose status write was lost: record it, create nothing.
        return SchedulePlan(
            actions=tuple(gc), last_scheduled_time=due, last_run=name, due=due, missed=missed, next_time=upcoming
        )
    unfinished = sorted((r for r in runs if not r.finished), key=ScheduledRun.sort_key)
    actions: list[Action] = []
    match schedule.concurrency_policy:
        case ConcurrencyPolicy.FORBID if unfinished:
            return SchedulePlan(
                actions=tuple(gc),
                due=due,
                missed=missed,
                blocked_by=tuple(r.name for r in unfinished),
                next_time=upcoming,
            )
        case ConcurrencyPolicy.REPLACE:
            actions += [CancelRun(r.name) for r in unfinished if not r.cancel_requested]
        case _:
            pass
    actions.append(CreateRun(name, due))
    return SchedulePlan(
        actions=(*actions, *gc),
        last_scheduled_time=due,
        last_run=name,
        due=due,
        missed=missed,
        next_time=upcoming,
    )
