"""The artifact store: content-addressed blobs plus a small keyspace of JSON documents.

Blobs live under their digest (so identical content is stored once and a reference can never
point at changed bytes); documents (cache entries, run records) live under names. A blob may have a
sidecar: a small JSON document beside it (a model's metadata), so a reader need not fetch the blob.
Below those, raw keys (listing, reading, writing and deleting any object under the store's root) serve
the garbage collector and the append-only logs other programs write. Both the local runner's directory
store and the S3 store implement this protocol, so no caller binds to either class.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


class ArtifactMissing(FileNotFoundError):
    """An artifact or document that should exist does not."""


class StoreUnavailable(OSError):
    """The store could not be reached or answered with an error; worth retrying later."""


class DigestMismatch(ValueError):
    """Stored bytes do not hash to the digest they were recorded with: corrupt or tampered."""


@dataclass(frozen=True)
class StoredArtifact:
    uri: str
    digest: str
    size: int


@dataclass(frozen=True)
class ListedObject:
    """One object under a store's root, as a listing shows it."""

    key: str
    """Relative to the store's root (its prefix), slash-separated."""
    modified: datetime
    size: int


class ArtifactStore(Protocol):
    def put_file(self, path: Path) -> StoredArtifact:
        """Store a file's content under its digest (a no-op when already present)."""
        ...

    def get_file(self, digest: str, dest: Path) -> None:
        """Write the blob to `dest`, verifying its digest; ArtifactMissing or DigestMismatch otherwise."""
        ...

    def exists(self, digest: str) -> bool: ...

    def uri_of(self, digest: str) -> str: ...

    def put_document(self, name: str, document: dict[str, Any]) -> str:
        """Write a JSON document under a name (e.g. cache/<key>.json); returns its URI."""
        ...

    def get_document(self, name: str) -> dict[str, Any] | None:
        """The document, or None when absent."""
        ...

    def put_text(self, name: str, text: str) -> str: ...

    def get_text(self, name: str) -> str | None: ...

    def put_sidecar(self, digest: str, document: dict[str, Any]) -> str:
        """Write the small JSON document kept beside a blob (e.g. a model's metadata); returns its URI."""
        ...

    def get_sidecar(self, digest: str) -> dict[str, Any] | None:
        """The blob's sidecar document, or None when it has none (written before sidecars existed)."""
        ...

    def list_objects(self, under: str, limit: int | None = None) -> list[ListedObject]:
        """Objects whose key starts with `under` (a raw key prefix, not only a directory), sorted by key."""
        ...

    def get_raw(self, key: str) -> bytes | None:
        """An object's bytes by key (None when absent)."""
        ...

    def put_raw(self, key: str, data: bytes, content_type: str | None = None) -> str:
        """Write an object by key, replacing any; returns its URI."""
        ...

    def delete(self, key: str) -> None:
        """Delete an object by key; already gone is fine."""
        ...

    def close(self) -> None:
        """Release the store's connections (a store opened for one listing)."""
        ...


def blob_key(hexdigest: str) -> str:
    """Where a blob lives: sharded by the first two hex characters to keep directories small."""
    return f"blobs/sha256/{hexdigest[:2]}/{hexdigest}"


SIDECAR_SUFFIX = ".meta.json"
"""A blob's sidecar lives at its key plus this suffix: beside it, and never taken for a blob (not a digest)."""


def sidecar_key(hexdigest: str) -> str:
    return blob_key(hexdigest) + SIDECAR_SUFFIX


def check_document_name(name: str) -> str:
    """Document names are relative, slash-separated, with no '..' (no path traversal)."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid document name {name!r}")
    return name
