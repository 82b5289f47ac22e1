"""Opens the artifact store a TaskSpec or the configuration names."""

from __future__ import annotations

from pathlib import Path

from conveyor.core.task import StoreConfig
from conveyor.storage.store import ArtifactStore


def open_store(config: StoreConfig) -> ArtifactStore:
    if config.kind == "local":
        from conveyor.storage.local import LocalStore  # noqa: PLC0415

        if not config.root:
            raise ValueError("a local store needs a root directory")
        return LocalStore(Path(config.root))
    from conveyor.storage.s3 import S3Store  # noqa: PLC0415 - boto3 only where S3 is used

    if not config.bucket:
        raise ValueError("an S3 store needs a bucket")
    return S3Store(config.bucket, config.prefix, config.endpoint)
