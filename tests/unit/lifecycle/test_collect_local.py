"""The collector's shell over a local store: inventory, marks document, cache entries dropped before blobs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conveyor.api.run import ArtifactRef
from conveyor.core.record import record_document
from conveyor.lifecycle.collect import collect_garbage, local_inputs
from conveyor.lifecycle.gc import MARKS_DOCUMENT, GcInputs
from conveyor.lifecycle.inventory import inventory_of
from conveyor.storage.cache import StoreCache, cache_document
from conveyor.storage.local import LocalStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def put(store: LocalStore, tmp: Path, content: bytes) -> ArtifactRef:
    path = tmp / "x"
    path.write_bytes(content)
    art = store.put_file(path)
    return ArtifactRef(name="out", uri=art.uri, digest=art.digest, size=art.size)


def test_two_passes_delete_only_the_deleted_runs_own_artifact(tmp_path: Path) -> None:
    state = tmp_path / ".conveyor"
    store = LocalStore(state / "store")
    shared, own, stray = put(store, tmp_path, b"shared"), put(store, tmp_path, b"own"), put(store, tmp_path, b"stray")
    for run, key, refs in (("live", "a", [shared]), ("gone", "b", [shared, own])):
        (state / "runs" / run).mkdir(parents=True)
        store.put_document(
            record_document(run),
            {"kind": "RunRecord", "steps": [{"name": "s", "outputs": [r.to_wire() for r in refs], "inputs": []}]},
        )
        StoreCache(store).record(f"sha256:{key * 64}", run, "s", {r.digest: r for r in refs}, {})
    (state / "runs" / "gone").rmdir()
    inventory = inventory_of(store)
    assert set(inventory.blobs()) == {shared.digest, own.digest, stray.digest}

    def gather() -> GcInputs:
        return local_inputs(state, store)

    first = collect_garbage(store, gather, now=T0, grace=timedelta(hours=1))
    assert first.deleted == frozenset() and set(first.plan.mark) == {own.digest, stray.digest}
    marks = json.loads((store.root / "docs" / MARKS_DOCUMENT).read_text())["marks"]
    assert set(marks) == {own.digest, stray.digest}

    dry = collect_garbage(store, gather, now=T0 + timedelta(hours=2), grace=timedelta(hours=1), dry_run=True)
    assert dry.plan.delete == {own.digest, stray.digest} and dry.deleted == frozenset()
    assert set(inventory.blobs()) == {shared.digest, own.digest, stray.digest}

    second = collect_garbage(store, gather, now=T0 + timedelta(hours=2), grace=timedelta(hours=1))
    assert second.deleted == {own.digest, stray.digest}
    assert set(inventory.blobs()) == {shared.digest}
    # the gone run's cache entry named a deleted blob: dropped; the live run's stays and still hits
    assert second.plan.drop_cache_entries == (cache_document(f"sha256:{'b' * 64}"),)
    assert list(inventory.documents("cache/")) == [cache_document(f"sha256:{'a' * 64}")]
    assert StoreCache(store).get(f"sha256:{'a' * 64}") is not None
    assert json.loads((store.root / "docs" / MARKS_DOCUMENT).read_text())["marks"] == {}
