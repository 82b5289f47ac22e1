"""The artifact store: content-addressed blobs plus a small keyspace of JSON documents.

Blobs live under their digest (so identical content is stored once and a reference can never
point at changed bytes); documents (cache entries, run records) live under names. Both the
local runner's directory store and the S3 store implement this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def blob_key(hexdigest: str) -> str:
    """Where a blob lives: sharded by the first two hex characters to keep directories small."""
    return f"blobs/sha256/{hexdigest[:2]}/{hexdigest}"


def check_document_name(name: str) -> str:
    """Document names are relative, slash-separated, with no '..' (no path traversal)."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid document name {name!r}")
    return name
