"""The garbage-collection decision, table-driven: (stored, references, cache entries, marks, now) → plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.lifecycle.gc import (
    CacheEntryInfo,
    GcInputs,
    deployment_digests,
    next_marks,
    parse_duration,
    plan_collection,
    record_digests,
    units_digests,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GRACE = timedelta(hours=1)
A, B, C, D = (f"sha256:{c * 64}" for c in "abcd")


@dataclass
class Case:
    name: str
    stored: set[str]
    refs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)
    cache: list[CacheEntryInfo] = field(default_factory=list)
    marks: dict[str, datetime] = field(default_factory=dict)
    now: datetime = T0
    grace: timedelta = GRACE
    # expected
    mark: set[str] = field(default_factory=set)
    unmark: set[str] = field(default_factory=set)
    delete: set[str] = field(default_factory=set)
    drop: list[str] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)


def entry(doc: str, run: str, *digests: str) -> CacheEntryInfo:
    return CacheEntryInfo(doc, run, frozenset(digests))


CASES = [
    Case("nothing stored, nothing to do", stored=set()),
    Case("referenced by a run: kept, never marked", stored={A}, refs={A: ("run r1",)}),
    Case("first seen unreferenced: marked, not deleted", stored={A}, mark={A}, pending={A}),
    Case(
        "marked, grace not over: waits",
        stored={A},
        marks={A: T0 - timedelta(minutes=59)},
        pending={A},
    ),
    Case("marked, grace over: deleted, mark goes with it", stored={A}, marks={A: T0 - GRACE}, delete={A}),
    Case(
        "a new reference clears the mark", stored={A}, refs={A: ("deployment d (current)",)}, marks={A: T0}, unmark={A}
    ),
    Case("a mark for a blob already gone is cleared", stored=set(), marks={A: T0 - GRACE}, unmark={A}),
    Case("grace zero deletes on first sight", stored={A}, grace=timedelta(0), delete={A}),
    Case(
        "a cache entry of a live run is a reference",
        stored={A},
        live={"r1"},
        cache=[entry("cache/1.json", "r1", A)],
    ),
    Case(
        "a cache entry of a deleted run keeps nothing alive, and is dropped before its blob goes",
        stored={A, B},
        refs={B: ("run r2",)},
        cache=[entry("cache/1.json", "r1", A, B)],
        marks={A: T0 - GRACE},
        delete={A},
        drop=["cache/1.json"],
    ),
    Case(
        "an orphan cache entry whose blobs all stay is kept (still a valid hit)",
        stored={A},
        refs={A: ("run r2",)},
        cache=[entry("cache/1.json", "r1", A)],
    ),
    Case(
        "an orphan cache entry naming a missing blob is dropped",
        stored={B},
        refs={B: ("run r2",)},
        cache=[entry("cache/1.json", "r1", A, B)],
        drop=["cache/1.json"],
    ),
    Case(
        "an orphan cache entry whose blob is only marked is kept until the blob goes",
        stored={A},
        cache=[entry("cache/1.json", "r1", A)],
        mark={A},
        pending={A},
    ),
    Case(
        "shared blob: the deleted run's other blobs go, the one a live run shares stays",
        stored={A, B, C},
        refs={B: ("run r2",), C: ("deployment default/md (current)",)},
        live={"r2"},
        marks={A: T0 - 2 * GRACE, B: T0 - 2 * GRACE},
        delete={A},
        unmark={B},
    ),
    Case(
        "marks are per blob: one due, one not",
        stored={A, B, D},
        refs={D: ("run r",)},
        marks={A: T0 - GRACE - timedelta(seconds=1), B: T0 - timedelta(seconds=1)},
        delete={A},
        pending={B},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan(case: Case) -> None:
    inputs = GcInputs(
        stored=frozenset(case.stored),
        references=case.refs,
        live_runs=frozenset(case.live),
        cache_entries=tuple(case.cache),
        marks=case.marks,
    )
    plan = plan_collection(inputs, case.now, case.grace)
    assert set(plan.mark) == case.mark
    assert all(t == case.now for t in plan.mark.values())
    assert set(plan.unmark) == case.unmark
    assert set(plan.delete) == case.delete
    assert list(plan.drop_cache_entries) == case.drop
    assert {p.digest for p in plan.pending} == case.pending
    assert all(p.due == p.marked_at + case.grace for p in plan.pending)
    assert not (set(plan.kept) & set(plan.delete))
    # never delete a referenced blob, whatever the marks say
    for digest in plan.delete:
        assert digest not in case.refs


def test_converges_mark_then_delete_then_nothing() -> None:
    """Apply each plan's marks to the next pass: mark, wait, delete, then nothing is left to do."""
    stored, marks = {A, B}, {}
    refs = {B: ("run r",)}
    seen = []
    for now in (T0, T0 + GRACE / 2, T0 + GRACE, T0 + 2 * GRACE):
        plan = plan_collection(GcInputs(frozenset(stored), refs, frozenset(), (), marks), now, GRACE)
        marks = next_marks(marks, plan)
        stored -= plan.delete
        seen.append((set(plan.mark), set(plan.delete)))
    assert seen == [({A}, set()), (set(), set()), (set(), {A}), (set(), set())]
    assert stored == {B} and marks == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1.5s", timedelta(seconds=1.5)),
        ("0", timedelta(0)),
        ("30", timedelta(seconds=30)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "24x", "-5", "1h1d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_references_from_documents() -> None:
    record = {
        "steps": [
            {"outputs": [{"digest": A}], "inputs": [{"digest": B}, {"digest": None}]},
            {"outputs": [], "inputs": []},
        ],
        "items": {"fan": [{"outputs": [{"digest": C}]}]},
    }
    assert record_digests(record) == {A, B, C}
    md = {
        "spec": {"model": {"uri": "s3://b/x", "digest": A}},
        "status": {"current": {"digest": B}, "previous": {"digest": C}, "traffic": [{"digest": B, "weight": 100}]},
    }
    assert deployment_digests(md) == {A: "requested", B: "current", C: "previous"}
    assert deployment_digests({"spec": {"model": {"pipeline": {"name": "p"}}}}) == {}
    assert units_digests({"units": {"s[0]": {"outputs": [{"name": "o", "digest": D}]}}}) == {D}
