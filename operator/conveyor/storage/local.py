"""The local runner's artifact store: a directory, content-addressed, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor.storage.digest import hex_of, sha256_file
from conveyor.storage.store import (
    ArtifactMissing,
    DigestMismatch,
    ListedObject,
    StoredArtifact,
    blob_key,
    check_document_name,
    sidecar_key,
)


def _atomic_write(dest: Path, write: Any) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        Path(tmp).replace(dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore:
    """An ArtifactStore in a directory (default .conveyor/store)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _blob(self, digest: str) -> Path:
        return self.root / blob_key(hex_of(digest))

    def uri_of(self, digest: str) -> str:
        return self._blob(digest).as_uri()

    def put_file(self, path: Path) -> StoredArtifact:
        digest = sha256_file(path)
        dest = self._blob(digest)
        size = path.stat().st_size
        if not (dest.exists() and dest.stat().st_size == size):
            with path.open("rb") as src:
                _atomic_write(dest, lambda f: shutil.copyfileobj(src, f))
            dest.chmod(0o444)  # blobs are immutable
        return StoredArtifact(dest.as_uri(), digest, size)

    def get_file(self, digest: str, dest: Path) -> None:
        src = self._blob(digest)
        if not src.exists():
            raise ArtifactMissing(f"artifact {digest} is not in the store at {self.root}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        actual = sha256_file(dest)
        if actual != digest:
            dest.unlink()
            raise DigestMismatch(f"artifact {digest} is corrupt in the store: its content hashes to {actual}")

    def exists(self, digest: str) -> bool:
        return self._blob(digest).exists()

    def _doc(self, name: str) -> Path:
        return self.root / "docs" / check_document_name(name)

    def put_document(self, name: str, document: dict[str, Any]) -> str:
        data = json.dumps(document, indent=2, default=str).encode()  # key order kept: a grid's
        path = self._doc(name)
        _atomic_write(path, lambda f: f.write(data))
        return path.as_uri()

    def get_document(self, name: str) -> dict[str, Any] | None:
        path = self._doc(name)
        if not path.exists():
            return None
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc

    def put_text(self, name: str, text: str) -> str:
        path = self._doc(name)
        _atomic_write(path, lambda f: f.write(text.encode()))
        return path.as_uri()

    def get_text(self, name: str) -> str | None:
        path = self._doc(name)
        return path.read_text() if path.exists() else None

    def put_sidecar(self, digest: str, document: dict[str, Any]) -> str:
        return self.put_raw(sidecar_key(hex_of(digest)), json.dumps(document, indent=2, default=str).encode())

    def get_sidecar(self, digest: str) -> dict[str, Any] | None:
        raw = self.get_raw(sidecar_key(hex_of(digest)))
        if raw is None:
            return None
        doc: dict[str, Any] = json.loads(raw)
        return doc

    def _raw(self, key: str) -> Path:
        return self.root / check_document_name(key)

    def list_objects(self, under: str, limit: int | None = None) -> list[ListedObject]:
        """Files whose key starts with `under`; dot-files (an atomic write in progress) are not objects yet."""
        directory = under.rpartition("/")[0]
        base = self._raw(directory) if directory else self.root
        if not base.is_dir():
            return []
        out: list[ListedObject] = []
        for path in base.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(under) and path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                out.append(ListedObject(key, datetime.fromtimestamp(stat.st_mtime, UTC), stat.st_size))
        out.sort(key=lambda o: o.key)
        return out[:limit] if limit is not None else out

    def get_raw(self, key: str) -> bytes | None:
        path = self._raw(key)
        return path.read_bytes() if path.is_file() else None

    def put_raw(self, key: str, data: bytes, content_type: str | None = None) -> str:
        path = self._raw(key)
        _atomic_write(path, lambda f: f.write(data))
        return path.as_uri()

    def delete(self, key: str) -> None:
        self._raw(key).unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing to release: a directory holds no connections."""
