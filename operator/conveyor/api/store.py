"""What the artifact store is and what it keeps for the planner: types shared by core/ and storage/.

They live here, below both, so that storage/ imports only api/ and the packages form no loop
(core -> components -> storage -> core, when storage took these from core).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

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
