"""Listing and deleting in the artifact store, which the ArtifactStore protocol does not offer (yet).

The protocol covers what steps and the planner need (put, get, exists, documents by name). Garbage
collection also needs to enumerate blobs and documents and to delete them; until the two stores grow
those methods this module provides them over each store's known layout (`blobs/sha256/xx/<hex>`,
`docs/<name>`), through the store's own root directory or S3 client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from conveyor.storage.digest import hex_of
from conveyor.storage.local import LocalStore
from conveyor.storage.s3 import S3Store
from conveyor.storage.store import ArtifactStore, StoreUnavailable, blob_key, check_document_name

_BLOBS = "blobs/sha256/"


class StoreInventory(Protocol):
    def blobs(self) -> Iterator[str]:
        """The digest of every stored blob."""
        ...

    def documents(self, prefix: str) -> Iterator[str]:
        """The names of the documents under `prefix` (e.g. `cache/`)."""
        ...

    def delete_blob(self, digest: str) -> None:
        """Delete a blob; already gone is fine."""
        ...

    def delete_document(self, name: str) -> None: ...


def _digest_of(name: str) -> str | None:
    hexpart = name.rsplit("/", 1)[-1]
    try:
        hex_of(f"sha256:{hexpart}")
    except ValueError:
        return None  # a stray object (an interrupted upload's temporary file): not an artifact
    return f"sha256:{hexpart}"


class LocalInventory:
    def __init__(self, store: LocalStore) -> None:
        self.root = store.root

    def blobs(self) -> Iterator[str]:
        base = self.root / _BLOBS
        if not base.is_dir():
            return
        for path in sorted(base.glob("*/*")):
            if path.is_file() and (digest := _digest_of(path.name)) is not None:
                yield digest

    def documents(self, prefix: str) -> Iterator[str]:
        docs = self.root / "docs"
        base = docs / check_document_name(prefix.rstrip("/"))
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                yield str(path.relative_to(docs))

    def delete_blob(self, digest: str) -> None:
        path: Path = self.root / blob_key(hex_of(digest))
        path.unlink(missing_ok=True)

    def delete_document(self, name: str) -> None:
        (self.root / "docs" / check_document_name(name)).unlink(missing_ok=True)


class S3Inventory:
    def __init__(self, store: S3Store) -> None:
        self.store = store

    def _keys(self, prefix: str) -> Iterator[str]:
        paginator = self.store.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.store.bucket, Prefix=self.store.prefix + prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.store.prefix) :]
        except Exception as e:  # botocore's errors: only storage/s3.py imports boto3 and botocore
            raise StoreUnavailable(f"listing s3://{self.store.bucket} failed: {type(e).__name__}") from None

    def blobs(self) -> Iterator[str]:
        for key in self._keys(_BLOBS):
            if (digest := _digest_of(key)) is not None:
                yield digest

    def documents(self, prefix: str) -> Iterator[str]:
        for key in self._keys("docs/" + check_document_name(prefix.rstrip("/")) + "/"):
            yield key.removeprefix("docs/")

    def _delete(self, key: str) -> None:
        try:
            self.store.client.delete_object(Bucket=self.store.bucket, Key=self.store.prefix + key)
        except Exception as e:  # see _keys
            raise StoreUnavailable(f"deleting from s3://{self.store.bucket} failed: {type(e).__name__}") from None

    def delete_blob(self, digest: str) -> None:
        self._delete(blob_key(hex_of(digest)))

    def delete_document(self, name: str) -> None:
        self._delete("docs/" + check_document_name(name))


def inventory_of(store: ArtifactStore | Any) -> StoreInventory:
    if isinstance(store, LocalStore):
        return LocalInventory(store)
    if isinstance(store, S3Store):
        return S3Inventory(store)
    raise TypeError(f"cannot list or delete in a {type(store).__name__}: garbage collection needs a local or S3 store")
