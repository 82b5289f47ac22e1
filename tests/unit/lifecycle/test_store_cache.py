"""StoreCache never offers a hit on an artifact that is gone or no longer hashes to its digest."""

from __future__ import annotations

import stat
from pathlib import Path

from conveyor.api.run import ArtifactRef
from conveyor.storage.cache import StoreCache
from conveyor.storage.local import LocalStore

KEY = f"sha256:{'1' * 64}"


def cached(tmp_path: Path, content: bytes = b"model bytes", **kwargs: int) -> tuple[StoreCache, Path]:
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "model.bin"
    src.write_bytes(content)
    art = store.put_file(src)
    cache = StoreCache(store, **kwargs)
    cache.record(
        KEY,
        "run-1",
        "train",
        {"model": ArtifactRef(name="model", uri=art.uri, digest=art.digest, size=art.size)},
        {"acc": 1.0},
    )
    blob = store.root / "blobs" / "sha256" / art.digest[7:9] / art.digest[7:]
    return cache, blob


def test_intact_entry_is_a_hit(tmp_path: Path) -> None:
    cache, _ = cached(tmp_path)
    entry = cache.get(KEY)
    assert entry is not None
    assert entry.outputs[0].name == "model" and entry.metrics == {"acc": 1.0}
    assert cache.get("sha256:" + "2" * 64) is None


def test_deleted_artifact_is_never_a_hit(tmp_path: Path) -> None:
    cache, blob = cached(tmp_path)
    assert cache.get(KEY) is not None  # verified once, remembered
    blob.unlink()
    assert cache.get(KEY) is None  # existence is checked on every lookup


def test_corrupt_artifact_is_never_a_hit(tmp_path: Path) -> None:
    cache, blob = cached(tmp_path)
    blob.chmod(stat.S_IRUSR | stat.S_IWUSR)
    blob.write_bytes(b"tampered!!!")
    assert cache.get(KEY) is None


def test_large_artifacts_are_only_checked_for_existence(tmp_path: Path) -> None:
    cache, blob = cached(tmp_path, b"x" * 100, verify_max_bytes=10)
    blob.chmod(stat.S_IRUSR | stat.S_IWUSR)
    blob.write_bytes(b"y" * 100)
    assert cache.get(KEY) is not None  # too big to re-hash on every planner pass; the consumer's download verifies it
    blob.unlink()
    assert cache.get(KEY) is None


def test_a_lookup_reads_the_entry_once(tmp_path: Path) -> None:
    """One lookup, one read of the entry's document (a Mapping's `in` then `[]` read it twice)."""
    cache, _ = cached(tmp_path)
    reads: list[str] = []
    get_document = cache.store.get_document

    def counting(name: str) -> object:
        reads.append(name)
        return get_document(name)

    cache.store.get_document = counting  # type: ignore[method-assign]
    assert cache.get(KEY) is not None
    assert len(reads) == 1
