"""sha256 digests of artifact content, in the "sha256:<hex>" form used everywhere in Conveyor."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    """(digest, size) of everything left in a binary stream, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


def sha256_file(path: Path) -> str:
    """Digest of a file's content."""
    with path.open("rb") as f:
        return sha256_stream(f)[0]


def sha256_bytes(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def hex_of(digest: str) -> str:
    """The hex part of a digest, after checking its form (it becomes part of storage keys)."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart
