"""The step cache, kept in the artifact store: cache key → the outputs of an earlier success.

One mechanism for caching and retry-from-failure in both shells. An entry is offered only while
every artifact it names still exists, so a deleted artifact can never produce a stale hit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from conveyor.api.run import ArtifactRef
from conveyor.core.planner import CacheEntry
from conveyor.storage.digest import hex_of
from conveyor.storage.store import ArtifactStore


def cache_document(key: str) -> str:
    return f"cache/{hex_of(key)}.json"


class StoreCache(Mapping[str, CacheEntry]):
    """A read-through view the planner can look keys up in (never enumerated)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def __getitem__(self, key: str) -> CacheEntry:
        doc = self.store.get_document(cache_document(key))
        if doc is None:
            raise KeyError(key)
        outputs = tuple(ArtifactRef.model_validate(o) for o in doc["outputs"])
        if not all(self.store.exists(o.digest) for o in outputs):
            raise KeyError(key)
        return CacheEntry(key=key, outputs=outputs, metrics=doc.get("metrics", {}))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

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
