"""Opens the artifact store a TaskSpec or the configuration names."""

from __future__ import annotations

from pathlib import Path

from conveyor.api.store import StoreConfig
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


def open_location(uri: str, s3_endpoint: str | None = None) -> tuple[ArtifactStore, str]:
    """A store rooted at the bucket of `s3://bucket/prefix`, with a connection of its own, and the key prefix
    within it: for reading data outside the artifact store (a trigger's watched prefix). Close it when done."""
    from conveyor.storage.s3 import S3Store  # noqa: PLC0415 - boto3 only where S3 is used

    return S3Store.at(uri, s3_endpoint)
