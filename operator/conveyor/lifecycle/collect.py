"""The garbage collector's shell: gather the world (local runner's state, or a cluster and its S3 store),
decide with lifecycle.gc, and apply the plan in a safe order.

Order matters: cache entries that name a blob about to go are deleted first, then the references are
gathered again and only blobs still unreferenced are deleted, so a Run that started using a blob in the
meantime keeps it. Listing failures abort the pass: a collector must never delete on partial knowledge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from conveyor.lifecycle.gc import (
    MARKS_DOCUMENT,
    GcInputs,
    GcPlan,
    add_references,
    cache_entry_info,
    deployment_digests,
    next_marks,
    plan_collection,
    record_digests,
    status_digests,
    strong_references,
    units_digests,
)
from conveyor.lifecycle.inventory import StoreInventory, inventory_of
from conveyor.storage.store import ArtifactStore

log = logging.getLogger("conveyor.gc")

GROUP, VERSION = "conveyor.dev", "v1alpha1"


@dataclass(frozen=True)
class GcResult:
    plan: GcPlan
    deleted: frozenset[str]
    """Blobs deleted (empty in a dry run)."""
    spared: frozenset[str]
    """Blobs the plan would have deleted that gained a reference before they were (kept, mark cleared)."""
    dry_run: bool


def load_marks(store: ArtifactStore) -> dict[str, datetime]:
    doc = store.get_document(MARKS_DOCUMENT) or {}
    return {d: datetime.fromisoformat(t) for d, t in (doc.get("marks") or {}).items()}


def _cache_entries(store: ArtifactStore, inventory: StoreInventory) -> tuple[Any, ...]:
    entries = []
    for name in inventory.documents("cache/"):
        doc = store.get_document(name)
        if doc is not None:
            entries.append(cache_entry_info(name, doc))
    return tuple(entries)


# ------------------------------------------------------------------ gathering


def local_inputs(state_dir: Path, store: ArtifactStore) -> GcInputs:
    """The local runner's world: a Run exists while its directory `STATE/runs/<id>` does."""
    from conveyor.core.record import record_document  # noqa: PLC0415

    inventory = inventory_of(store)
    runs_dir = state_dir / "runs"
    live = sorted(d.name for d in runs_dir.iterdir() if d.is_dir()) if runs_dir.is_dir() else []
    refs: dict[str, list[str]] = {}
    for run_id in live:
        record = store.get_document(record_document(run_id))
        if record is not None:
            add_references(refs, record_digests(record), f"run {run_id}")
    return GcInputs(
        stored=frozenset(inventory.blobs()),
        references={d: tuple(h) for d, h in refs.items()},
        live_runs=frozenset(live),
        cache_entries=_cache_entries(store, inventory),
        marks=load_marks(store),
    )


def runs_and_deployments(
    cluster: Any, namespaces: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every Run and ModelDeployment, as plain JSON: in `namespaces`, or (none given) in the whole cluster.

    A collector must see every Run that might use the bucket, so by default it lists cluster-wide (the
    same list permission kopf's cluster-wide watches need). Plurals are literals, for the chart's RBAC scan.
    """
    namespaces = list(namespaces)
    if namespaces:
        runs = [b for ns in namespaces for b in cluster.list_custom("runs", ns)]
        deployments = [b for ns in namespaces for b in cluster.list_custom("modeldeployments", ns)]
        return runs, deployments
    return cluster.list_all("runs"), cluster.list_all("modeldeployments")


def cluster_inputs(
    store: ArtifactStore, runs: Iterable[dict[str, Any]], deployments: Iterable[dict[str, Any]]
) -> GcInputs:
    """The cluster's world: Run objects (their records, or while running their status and fan-out items)
    and ModelDeployments (the models they serve or are asked to serve)."""
    from conveyor.core.record import record_document  # noqa: PLC0415
    from conveyor.core.task import units_document  # noqa: PLC0415

    inventory = inventory_of(store)
    refs: dict[str, list[str]] = {}
    live = set()
    for body in runs:
        meta = body["metadata"]
        uid, holder = meta["uid"], f"run {meta.get('namespace')}/{meta['name']}"
        live.add(uid)
        status = body.get("status") or {}
        record = store.get_document(record_document(uid)) if status.get("recordUri") else None
        if record is not None:
            add_references(refs, record_digests(record), holder)
            continue
        add_references(refs, status_digests(status), holder)
        if any(s.get("fanOut") for s in status.get("steps", [])):
            add_references(refs, units_digests(store.get_document(units_document(uid)) or {}), holder)
    for body in deployments:
        meta = body["metadata"]
        for digest, role in deployment_digests(body).items():
            add_references(refs, [digest], f"deployment {meta.get('namespace')}/{meta['name']} ({role})")
    return GcInputs(
        stored=frozenset(inventory.blobs()),
        references={d: tuple(h) for d, h in refs.items()},
        live_runs=frozenset(live),
        cache_entries=_cache_entries(store, inventory),
        marks=load_marks(store),
    )


def cluster_gatherer(cluster: Any, store: ArtifactStore, namespaces: Iterable[str] = ()) -> Callable[[], GcInputs]:
    return lambda: cluster_inputs(store, *runs_and_deployments(cluster, namespaces))


# ------------------------------------------------------------------ one pass


def collect_garbage(
    store: ArtifactStore,
    gather: Callable[[], GcInputs],
    *,
    now: datetime,
    grace: timedelta,
    dry_run: bool = False,
) -> GcResult:
    """One pass: gather, plan, and (unless a dry run) apply."""
    inventory = inventory_of(store)
    inputs = gather()
    plan = plan_collection(inputs, now, grace)
    if dry_run:
        return GcResult(plan, frozenset(), frozenset(), dry_run=True)
    for name in plan.drop_cache_entries:
        inventory.delete_document(name)
        log.info("dropped cache entry %s: it names an artifact being deleted or already gone", name)
    spared: frozenset[str] = frozenset()
    if plan.delete:
        again = strong_references(gather())
        spared = frozenset(d for d in plan.delete if d in again)
    deleted = plan.delete - spared
    for digest in sorted(deleted):
        inventory.delete_blob(digest)
        log.info("deleted artifact %s: unreferenced for at least %s", digest, grace)
    marks = next_marks(inputs.marks, plan)
    for digest in spared:
        marks.pop(digest, None)
    if marks != dict(sorted(inputs.marks.items())):
        store.put_document(MARKS_DOCUMENT, {"marks": {d: t.isoformat() for d, t in marks.items()}})
    return GcResult(plan, frozenset(deleted), spared, dry_run=False)
