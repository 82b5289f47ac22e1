"""Pipeline triggers as tables: new objects under a prefix, drift episodes, never two Runs at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.api.pipeline import TriggerStatus
from conveyor.core.triggers import ObjectSeen, drift_decision, s3_decision

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


def seen(key: str, minutes: int) -> ObjectSeen:
    return ObjectSeen(key, T0 + timedelta(minutes=minutes))


def test_the_first_look_records_what_is_there_without_starting_a_run() -> None:
    d = s3_decision(TriggerStatus(index=0), [seen("a", 1), seen("b", 5), seen("c", 5)], True, NOW)
    assert not d.fire
    assert d.status.watermark == T0 + timedelta(minutes=5) and d.status.watermark_keys == ["b", "c"]
    empty = s3_decision(TriggerStatus(index=0), [], True, NOW)
    assert not empty.fire and empty.status.watermark == NOW


WATCHING = TriggerStatus(index=0, watermark=T0 + timedelta(minutes=5), watermark_keys=["b"])


@pytest.mark.parametrize(
    ("objects", "finished", "fire", "watermark_minutes", "keys"),
    [
        ([seen("a", 1), seen("b", 5)], True, False, 5, ["b"]),  # nothing new
        ([seen("b", 5), seen("c", 9)], True, True, 9, ["c"]),  # a new object
        ([seen("b", 5), seen("c", 5)], True, True, 5, ["b", "c"]),  # new key in the watermark's second
        ([seen("b", 5), seen("c", 9)], False, False, 5, ["b"]),  # last Run unfinished: wait, stay new
    ],
)
def test_new_objects_start_one_run(
    objects: list[ObjectSeen], finished: bool, fire: bool, watermark_minutes: int, keys: list[str]
) -> None:
    d = s3_decision(WATCHING, objects, finished, NOW)
    assert d.fire == fire
    assert d.status.watermark == T0 + timedelta(minutes=watermark_minutes)
    assert d.status.watermark_keys == keys
    if fire:
        assert d.status.last_fired_at == NOW and "new object" in d.reason


def test_objects_seen_while_waiting_fire_once_the_run_finishes() -> None:
    objects = [seen("b", 5), seen("c", 9), seen("d", 10)]
    waiting = s3_decision(WATCHING, objects, False, NOW)
    assert not waiting.fire
    later = s3_decision(waiting.status, objects, True, NOW)
    assert later.fire and "2 new object(s): c, d" in later.reason
    again = s3_decision(later.status, objects, True, NOW)
    assert not again.fire


EPISODE = T0 + timedelta(minutes=30)


@pytest.mark.parametrize(
    ("status", "drifting", "episode", "finished", "fire"),
    [
        (TriggerStatus(index=0), True, EPISODE, True, True),
        (TriggerStatus(index=0), False, EPISODE, True, False),  # not (or no longer) drifting
        (TriggerStatus(index=0, episode=EPISODE), True, EPISODE, True, False),  # this episode already answered
        (TriggerStatus(index=0, episode=T0), True, EPISODE, True, True),  # a new episode
        (TriggerStatus(index=0), True, EPISODE, False, False),  # the last Run still runs
        (TriggerStatus(index=0), True, None, True, False),
    ],
)
def test_a_drift_episode_starts_one_run(
    status: TriggerStatus, drifting: bool, episode: datetime | None, finished: bool, fire: bool
) -> None:
    d = drift_decision(status, drifting, episode, finished, NOW, "cancer")
    assert d.fire == fire
    if fire:
        assert d.status.episode == episode and "cancer" in d.reason
