"""Per-Pipeline concurrency: which waiting Runs may start, first come first served."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RunSlot:
    """What the decision needs to know about one Run of the pipeline."""

    name: str
    created: datetime
    started: bool
    finished: bool


def may_start(run: str, runs: Iterable[RunSlot], limit: int) -> tuple[bool, int]:
    """(whether `run` may start now, how many Runs of the pipeline are running). Waiting Runs start in
    creation order (name breaks ties), so a burst of Runs drains fairly and nothing starves."""
    runs = list(runs)
    running = sum(1 for r in runs if r.started and not r.finished and r.name != run)
    queue = sorted((r for r in runs if not r.started and not r.finished), key=lambda r: (r.created, r.name))
    position = next((i for i, r in enumerate(queue) if r.name == run), len(queue))
    return position < limit - running, running
