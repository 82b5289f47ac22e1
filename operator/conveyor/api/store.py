"""What the artifact store is and what it keeps for the planner: types shared by core/ and storage/.

They live here, below both, so that storage/ imports only api/ and the packages form no loop
(core -> components -> storage -> core, when storage took these from core).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from conveyor.api.run import ArtifactRef


class StoreConfig(BaseModel):
    """Which store a step or a shell opens: a local directory, or an S3 bucket and prefix."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "s3"]
    root: str | None = None
    """Directory of a local store."""
    endpoint: str | None = None
    bucket: str | None = None
    prefix: str = ""


@dataclass(frozen=True)
class CacheEntry:
    """An earlier successful execution under a cache key (offered only if its artifacts still exist)."""

    key: str
    outputs: tuple[ArtifactRef, ...]
    metrics: Mapping[str, float]


class CacheLookup(Protocol):
    """What the planner asks of the step cache: one lookup per key, answering the entry or None.

    Explicit rather than a Mapping: a lookup reads the store (the entry, then its artifacts' existence), and a
    `key in cache` followed by `cache[key]` would read it twice. A plain dict of entries satisfies it (tests)."""

    def get(self, key: str, /) -> CacheEntry | None: ...
