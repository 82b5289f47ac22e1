"""The step cache, kept in the artifact store: cache key → the outputs of an earlier success.

One mechanism for caching and retry-from-failure in both shells. An entry is offered only while
every artifact it names still exists and its content still hashes to the recorded digest, so a
deleted (garbage-collected) or corrupt artifact can never produce a stale hit: the step runs again.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from conveyor.api.run import ArtifactRef
from conveyor.api.store import CacheEntry
from conveyor.storage.digest import hex_of
from conveyor.storage.store import ArtifactMissing, ArtifactStore, DigestMismatch

log = logging.getLogger("conveyor.cache")

VERIFY_MAX_BYTES = 64 * 1024 * 1024
"""Artifacts up to this size are re-hashed before their first reuse by a process; larger ones are only
checked for existence (every consumer verifies the digest when it downloads them anyway)."""
_VERIFIED_MEMORY = 4096


def cache_document(key: str) -> str:
    return f"cache/{hex_of(key)}.json"


class StoreCache:
    """The step cache the planner looks keys up in (api.store.CacheLookup): one store read per lookup."""

    def __init__(self, store: ArtifactStore, *, verify_max_bytes: int = VERIFY_MAX_BYTES) -> None:
        self.store = store
        self.verify_max_bytes = verify_max_bytes
        self._verified: OrderedDict[str, None] = OrderedDict()
        self._verified_lock = threading.Lock()  # the operator plans Runs on several threads

    def _content_ok(self, ref: ArtifactRef) -> bool:
        """The blob still hashes to its digest (re-hashed once per process, while it is small enough)."""
        with self._verified_lock:
            known = ref.digest in self._verified
        if known or (ref.size is not None and ref.size > self.verify_max_bytes):
            return True
        with tempfile.TemporaryDirectory(prefix="conveyor-cache-check-") as tmp:
            try:
                self.store.get_file(ref.digest, Path(tmp) / "blob")
            except ArtifactMissing:
                return False
            except DigestMismatch as e:
                log.warning("refused a cache hit on corrupt artifact %s (%s): %s", ref.name, ref.digest, e)
                return False
        with self._verified_lock:
            self._verified[ref.digest] = None
            if len(self._verified) > _VERIFIED_MEMORY:
                self._verified.popitem(last=False)
        return True

    def get(self, key: str, /) -> CacheEntry | None:
        """The entry under `key`, or None when there is none or an artifact it names is gone or corrupt."""
        doc = self.store.get_document(cache_document(key))
        if doc is None:
            return None
        outputs = tuple(ArtifactRef.model_validate(o) for o in doc["outputs"])
        # existence every time (a garbage-collected blob must never be handed out), content once per process
        if not all(self.store.exists(o.digest) for o in outputs):
            return None
        if not all(self._content_ok(o) for o in outputs):
            return None
        return CacheEntry(key=key, outputs=outputs, metrics=doc.get("metrics", {}))

    def record(
        self, key: str, run_id: str, step: str, outputs: Mapping[str, ArtifactRef], metrics: Mapping[str, float]
    ) -> None:
        self.store.put_document(
            cache_document(key),
            {
                "key": key,
                "run": run_id,
                "step": step,
                "outputs": [o.to_wire() for o in outputs.values()],
                "metrics": dict(metrics),
                "createdAt": datetime.now(UTC).isoformat(),
            },
        )
