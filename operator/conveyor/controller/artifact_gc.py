"""Periodic artifact garbage collection in the operator: `collect` is one pass, `start` runs it on a timer.

A pass lists every Run and ModelDeployment the operator is responsible for (cluster-wide, or the
namespaces it watches: one bucket/prefix per operator is assumed), reads the records and cache entries
in the store, and lets conveyor.lifecycle decide; see lifecycle/gc.py for the rules (marks, grace period,
weak cache entries). Two replicas collecting at once is harmless: every step is idempotent and a blob is
deleted only after the grace period and a second look at the references.

Settings (OperatorConfig; read with defaults until they are declared there):
  artifact_gc_interval_seconds  how often a pass runs (0: never; `conveyor gc` still works by hand)
  artifact_gc_grace_seconds     how long an artifact stays unreferenced before it is deleted
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.kube.cluster import Cluster
from conveyor.lifecycle.collect import GcResult, cluster_gatherer, collect_garbage
from conveyor.storage.store import ArtifactStore, StoreUnavailable

log = logging.getLogger("conveyor.operator.gc")

DEFAULT_INTERVAL_SECONDS = 3600.0
DEFAULT_GRACE_SECONDS = 86400.0


def _setting(config: Any, name: str, default: float) -> float:
    value = getattr(config, name, None)
    return default if value is None else float(value)


def collect(cluster: Cluster, store: ArtifactStore, config: Any, now: datetime, *, dry_run: bool = False) -> GcResult:
    """One garbage-collection pass over the operator's store; raises StoreUnavailable or the API client's
    error when the world cannot be read completely (nothing is deleted then)."""
    namespaces = list(getattr(config, "namespaces", None) or [])
    grace = timedelta(seconds=_setting(config, "artifact_gc_grace_seconds", DEFAULT_GRACE_SECONDS))

    result = collect_garbage(store, cluster_gatherer(cluster, store, namespaces), now=now, grace=grace, dry_run=dry_run)
    plan = result.plan
    log.info(
        "collected artifacts: %d referenced, %d newly marked, %d waiting, %d deleted, %d cache entries dropped",
        len(plan.kept),
        len(plan.mark),
        len(plan.pending),
        len(result.deleted),
        len(plan.drop_cache_entries),
    )
    return result


def start(
    cluster: Cluster, store: ArtifactStore, config: Any, stop: threading.Event | None = None
) -> threading.Thread | None:
    """Run `collect` every artifact_gc_interval_seconds on a daemon thread (None when the interval is 0).
    A failed pass is logged and retried at the next interval; it never stops the operator."""
    interval = _setting(config, "artifact_gc_interval_seconds", DEFAULT_INTERVAL_SECONDS)
    if interval <= 0:
        return None
    stopped = stop or threading.Event()

    def loop() -> None:
        while not stopped.wait(interval):
            try:
                collect(cluster, store, config, datetime.now(UTC))
            except StoreUnavailable as e:
                log.warning("artifact collection skipped: %s", e)
            except Exception:
                log.exception("artifact collection failed; retrying in %.0f s", interval)

    thread = threading.Thread(target=loop, name="artifact-gc", daemon=True)
    thread.start()
    return thread
