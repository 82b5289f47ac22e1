"""The garbage-collection decision, pure: (stored artifacts, live references, cache entries, marks, now) → a plan.

An artifact is referenced by the record (or status) of a Run that still exists, by a deployed model (a
ModelDeployment's current, previous or requested digest), or by a cache entry whose Run still exists.
A cache entry of a Run that is gone is weak: it keeps nothing alive, and it is dropped, before any blob
it names is deleted, so the planner can never be offered a hit on a deleted artifact.

Unreferenced artifacts are not deleted at once: the first pass that finds one writes a mark with the
time; a later pass deletes it if it is still unreferenced once the grace period has passed since the
mark; a reference in between clears the mark. The grace period covers the races a single listing
cannot see (a step uploading its outputs before its Run's status names them, a cache hit being decided).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

MARKS_DOCUMENT = "gc/marks.json"
"""Where the marks live in the store: one small document, written by one collector at a time."""

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> timedelta:
    """`24h`, `90m`, `1d12h`, `30s`, `0` (or a plain number of seconds) → timedelta; ValueError otherwise."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"a duration cannot be negative: {text!r}")
        return timedelta(seconds=seconds)
    m = _DURATION.match(text)
    if not text or m is None or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 24h, 90m, 1d12h, 30s)")
    d, h, mins, s = m.groups()
    return timedelta(days=int(d or 0), hours=int(h or 0), minutes=int(mins or 0), seconds=float(s or 0))


@dataclass(frozen=True)
class CacheEntryInfo:
    """One cache entry: its document name, the Run that wrote it, and the artifacts it would hand out."""

    document: str
    run: str
    digests: frozenset[str]


@dataclass(frozen=True)
class GcInputs:
    """Everything the decision needs, gathered by a shell."""

    stored: frozenset[str]
    """Digests of the blobs in the store."""
    references: Mapping[str, tuple[str, ...]]
    """Strong references: digest → who holds it (for people: `run default/rec-a`, `deployment default/md`)."""
    live_runs: frozenset[str]
    """Ids of the Runs that still exist (cache entries of these are strong references too)."""
    cache_entries: tuple[CacheEntryInfo, ...]
    marks: Mapping[str, datetime]
    """digest → when it was first seen unreferenced."""


@dataclass(frozen=True)
class Pending:
    digest: str
    marked_at: datetime
    due: datetime


@dataclass(frozen=True)
class GcPlan:
    mark: Mapping[str, datetime]
    """New marks to write (first seen unreferenced now)."""
    unmark: frozenset[str]
    """Marks to clear: referenced again, or the blob is gone."""
    drop_cache_entries: tuple[str, ...]
    """Cache documents to delete first: they name an artifact being deleted, or one already missing."""
    delete: frozenset[str]
    """Blobs to delete now (unreferenced for at least the grace period)."""
    pending: tuple[Pending, ...]
    """Unreferenced, marked, waiting for the grace period."""
    kept: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Referenced blobs and who holds them."""


def next_marks(marks: Mapping[str, datetime], plan: GcPlan) -> dict[str, datetime]:
    """The marks to store after `plan`: old ones minus cleared and deleted, plus new ones."""
    out = {d: t for d, t in marks.items() if d not in plan.unmark and d not in plan.delete}
    out.update(plan.mark)
    return dict(sorted(out.items()))


def strong_references(inputs: GcInputs) -> dict[str, tuple[str, ...]]:
    """Every holder of every digest: the given references plus the cache entries of live Runs."""
    refs: dict[str, list[str]] = {d: list(h) for d, h in inputs.references.items() if h}
    for entry in inputs.cache_entries:
        if entry.run in inputs.live_runs:
            for d in entry.digests:
                refs.setdefault(d, []).append(f"cache entry {entry.document}")
    return {d: tuple(sorted(set(h))) for d, h in refs.items()}


def plan_collection(inputs: GcInputs, now: datetime, grace: timedelta) -> GcPlan:
    """Decide what to mark, unmark, drop and delete. A grace of zero deletes on first sight."""
    refs = strong_references(inputs)
    mark: dict[str, datetime] = {}
    delete: set[str] = set()
    pending: list[Pending] = []
    unmark = {d for d in inputs.marks if d in refs or d not in inputs.stored}
    for digest in sorted(inputs.stored):
        if digest in refs:
            continue
        marked_at = inputs.marks.get(digest, now)
        if now - marked_at >= grace:
            delete.add(digest)
        else:
            if digest not in inputs.marks:
                mark[digest] = now
            pending.append(Pending(digest, marked_at, marked_at + grace))
    drop = tuple(
        sorted(
            e.document
            for e in inputs.cache_entries
            if e.run not in inputs.live_runs and (e.digests & delete or not e.digests <= inputs.stored)
        )
    )
    return GcPlan(
        mark=mark,
        unmark=frozenset(unmark),
        drop_cache_entries=drop,
        delete=frozenset(delete),
        pending=tuple(pending),
        kept={d: h for d, h in sorted(refs.items()) if d in inputs.stored},
    )


# ------------------------------------------------------------------ references, from the documents that hold them


def record_digests(record: Mapping[str, Any]) -> set[str]:
    """Every artifact a Run record names: its steps' (and fan-out items') outputs and the inputs they read."""
    out: set[str] = set()
    for step in record.get("steps", []):
        out.update(o["digest"] for o in step.get("outputs", []) if o.get("digest"))
        out.update(i["digest"] for i in step.get("inputs", []) if i.get("digest"))
    for items in (record.get("items") or {}).values():
        for item in items:
            out.update(o["digest"] for o in item.get("outputs", []) if o.get("digest"))
    return out


def status_digests(status: Mapping[str, Any]) -> set[str]:
    """The outputs a Run's status names (a running Run has no record yet)."""
    return {o["digest"] for s in status.get("steps", []) for o in s.get("outputs", []) if o.get("digest")}


def units_digests(units: Mapping[str, Any]) -> set[str]:
    """The outputs of a running fan-out's items (the units document the operator keeps in the store)."""
    out: set[str] = set()
    for unit in (units.get("units") or {}).values():
        outputs = unit.get("outputs") or {}
        values = outputs.values() if isinstance(outputs, Mapping) else outputs
        out.update(o["digest"] for o in values if isinstance(o, Mapping) and o.get("digest"))
    return out


def deployment_digests(body: Mapping[str, Any]) -> dict[str, str]:
    """The models a ModelDeployment serves or is asked to serve: digest → role (current, previous, ...)."""
    out: dict[str, str] = {}
    spec_model = (body.get("spec") or {}).get("model") or {}
    if spec_model.get("digest"):
        out[spec_model["digest"]] = "requested"
    status = body.get("status") or {}
    for share in status.get("traffic") or []:
        if share.get("digest"):
            out.setdefault(share["digest"], "in traffic")
    for role in ("previous", "current"):
        served = status.get(role) or {}
        if served.get("digest"):
            out[served["digest"]] = role
    return out


def cache_entry_info(document: str, doc: Mapping[str, Any]) -> CacheEntryInfo:
    return CacheEntryInfo(
        document=document,
        run=str(doc.get("run", "")),
        digests=frozenset(o["digest"] for o in doc.get("outputs", []) if o.get("digest")),
    )


def add_references(refs: dict[str, list[str]], digests: Iterable[str], holder: str) -> None:
    for d in digests:
        refs.setdefault(d, []).append(holder)
