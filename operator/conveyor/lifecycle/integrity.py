"""Bad input: which artifacts a run record names are missing or corrupt, and what depends on them.

Pure over a checker (digest → None when sound, else what is wrong), so the same walk serves a quick
existence check and a full re-hash. Dependents are the steps that read the artifact, and everything
downstream of those (their outputs were made from it), so a person sees the whole blast radius.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.storage.store import ArtifactMissing, ArtifactStore, DigestMismatch

MISSING = "missing"


@dataclass(frozen=True)
class Problem:
    digest: str
    what: str
    """`missing`, or `corrupt: ...`."""
    source: str
    """Who made it: `step.output`, or the external URI."""
    readers: tuple[str, ...]
    """Steps that read it directly."""
    downstream: tuple[str, ...]
    """Every step depending on it, directly or through other steps' outputs."""

    def text(self) -> str:
        deps = ", ".join(self.downstream) or "no step of this run reads it"
        return f"{self.source} {self.digest} is {self.what}; depends on it: {deps}"


def collections(record: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Fan-in collection digest → its members (item output `step[i].output` → digest), in item order.

    A fanned-out step's output is the list of its items' outputs (`collection:step/output`), addressed by
    the digest of that list: it is never a blob in the store, its members are."""
    items = record.get("items") or {}
    out: dict[str, dict[str, str]] = {}
    for s in record.get("steps", []):
        for o in s.get("outputs", []):
            if str(o.get("uri", "")).startswith("collection:"):
                out[o["digest"]] = {
                    f"{u['key']}.{m['name']}": m["digest"]
                    for u in items.get(s["name"], [])
                    for m in u.get("outputs", [])
                    if m["name"] == o["name"]
                }
    return out


def _artifacts(record: Mapping[str, Any]) -> dict[str, str]:
    """digest → where it came from (first mention wins: a producer before a reader); a collection stands
    for its members."""
    groups = collections(record)
    out: dict[str, str] = {}
    for s in record.get("steps", []):
        for o in s.get("outputs", []):
            if o["digest"] in groups:
                for where, digest in groups[o["digest"]].items():
                    out.setdefault(digest, where)
            else:
                out.setdefault(o["digest"], f"{s['name']}.{o['name']}")
    for s in record.get("steps", []):
        for i in s.get("inputs", []):
            if i.get("digest") and i["digest"] not in groups:
                where = f"{i['step']}.{i['output']}" if i.get("step") else f"input {i.get('uri', '?')}"
                out.setdefault(i["digest"], where)
    return out


def downstream_of(record: Mapping[str, Any], digest: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(steps reading `digest`, directly or as a member of a collection, every step depending on it
    transitively), in the record's order."""
    steps = record.get("steps", [])
    read_as = {digest} | {c for c, members in collections(record).items() if digest in members.values()}
    readers = [s["name"] for s in steps if any(i.get("digest") in read_as for i in s.get("inputs", []))]
    tainted = set(readers)
    changed = True
    while changed:
        changed = False
        for s in steps:
            if s["name"] not in tainted and any(i.get("step") in tainted for i in s.get("inputs", [])):
                tainted.add(s["name"])
                changed = True
    return tuple(readers), tuple(s["name"] for s in steps if s["name"] in tainted)


def check_record(record: Mapping[str, Any], check: Callable[[str], str | None]) -> list[Problem]:
    """Every artifact the record names, checked; the unsound ones with what depends on them."""
    problems = []
    for digest, source in _artifacts(record).items():
        what = check(digest)
        if what is not None:
            readers, downstream = downstream_of(record, digest)
            problems.append(Problem(digest, what, source, readers, downstream))
    return problems


def store_checker(store: ArtifactStore, *, content: bool) -> Callable[[str], str | None]:
    """Existence only, or (content=True) a full download and re-hash of each blob."""

    def check(digest: str) -> str | None:
        if not store.exists(digest):
            return MISSING
        if not content:
            return None
        with tempfile.TemporaryDirectory(prefix="conveyor-verify-") as tmp:
            try:
                store.get_file(digest, Path(tmp) / "blob")
            except ArtifactMissing:
                return MISSING
            except DigestMismatch as e:
                return f"corrupt ({e})"
        return None

    return check
