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


def _artifacts(record: Mapping[str, Any]) -> dict[str, str]:
    """digest → where it came from (first mention wins: a producer before a reader)."""
    out: dict[str, str] = {}
    for s in record.get("steps", []):
        for o in s.get("outputs", []):
            out.setdefault(o["digest"], f"{s['name']}.{o['name']}")
    for s in record.get("steps", []):
        for i in s.get("inputs", []):
            if i.get("digest"):
                where = f"{i['step']}.{i['output']}" if i.get("step") else f"input {i.get('uri', '?')}"
                out.setdefault(i["digest"], where)
    return out


def downstream_of(record: Mapping[str, Any], digest: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(steps reading `digest`, every step depending on it transitively), in the record's order."""
    steps = record.get("steps", [])
    readers = [s["name"] for s in steps if any(i.get("digest") == digest for i in s.get("inputs", []))]
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
