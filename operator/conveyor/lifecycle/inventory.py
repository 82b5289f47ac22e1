"""Listing and deleting blobs and documents for garbage collection, over the ArtifactStore protocol.

The store's layout (`blobs/sha256/xx/<hex>`, a blob's sidecar beside it, `docs/<name>`) is known here and
in storage/ only; any store that implements the protocol's raw keys can be collected.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from conveyor.storage.digest import hex_of
from conveyor.storage.store import ArtifactStore, blob_key, check_document_name, sidecar_key

_BLOBS = "blobs/sha256/"


class StoreInventory(Protocol):
    def blobs(self) -> Iterator[str]:
        """The digest of every stored blob."""
        ...

    def documents(self, prefix: str) -> Iterator[str]:
        """The names of the documents under `prefix` (e.g. `cache/`)."""
        ...

    def delete_blob(self, digest: str) -> None:
        """Delete a blob (and its sidecar); already gone is fine."""
        ...

    def delete_document(self, name: str) -> None: ...


def _digest_of(name: str) -> str | None:
    hexpart = name.rsplit("/", 1)[-1]
    try:
        hex_of(f"sha256:{hexpart}")
    except ValueError:
        return None  # a sidecar, or a stray object (an interrupted upload's temporary file): not an artifact
    return f"sha256:{hexpart}"


class LayoutInventory:
    """A StoreInventory over any ArtifactStore's raw keys (a listing failure raises StoreUnavailable)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def blobs(self) -> Iterator[str]:
        for obj in self.store.list_objects(_BLOBS):
            if (digest := _digest_of(obj.key)) is not None:
                yield digest

    def documents(self, prefix: str) -> Iterator[str]:
        for obj in self.store.list_objects("docs/" + check_document_name(prefix.rstrip("/")) + "/"):
            yield obj.key.removeprefix("docs/")

    def delete_blob(self, digest: str) -> None:
        self.store.delete(blob_key(hex_of(digest)))
        self.store.delete(sidecar_key(hex_of(digest)))

    def delete_document(self, name: str) -> None:
        self.store.delete("docs/" + check_document_name(name))


def inventory_of(store: ArtifactStore) -> StoreInventory:
    return LayoutInventory(store)
