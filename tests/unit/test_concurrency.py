"""Which waiting Runs of a pipeline may start under maxConcurrentRuns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.core.concurrency import RunSlot, may_start

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def slot(name: str, minute: int, started: bool = False, finished: bool = False) -> RunSlot:
    return RunSlot(name, T0 + timedelta(minutes=minute), started, finished)


CASES = [
    ("first of none", "a", [slot("a", 0)], 1, (True, 0)),
    ("blocked by a running one", "b", [slot("a", 0, started=True), slot("b", 1)], 1, (False, 1)),
    ("a finished one does not count", "b", [slot("a", 0, True, True), slot("b", 1)], 1, (True, 0)),
    ("older waiting run goes first", "b", [slot("a", 0), slot("b", 1)], 1, (False, 0)),
    ("two slots, second in line", "b", [slot("a", 0), slot("b", 1), slot("c", 2)], 2, (True, 0)),
    ("two slots, third in line", "c", [slot("a", 0), slot("b", 1), slot("c", 2)], 2, (False, 0)),
    ("ties broken by name", "b", [slot("b", 0), slot("a", 0)], 1, (False, 0)),
    ("limit reached by two running", "c", [slot("a", 0, True), slot("b", 1, True), slot("c", 2)], 2, (False, 2)),
]


@pytest.mark.parametrize(("run", "runs", "limit", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_may_start(run: str, runs: list[RunSlot], limit: int, expected: tuple[bool, int]) -> None:
    assert may_start(run, runs, limit) == expected
