"""StoreCache never offers a hit on an artifact that is gone or no longer hashes to its digest."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

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
    assert KEY in cache
    entry = cache[KEY]
    assert entry.outputs[0].name == "model" and entry.metrics == {"acc": 1.0}
    assert "sha256:" + "2" * 64 not in cache


def test_deleted_artifact_is_never_a_hit(tmp_path: Path) -> None:
    cache, blob = cached(tmp_path)
    assert KEY in cache  # verified once, remembered
    blob.unlink()
    assert KEY not in cache  # existence is checked on every lookup
    with pytest.raises(KeyError):
        cache[KEY]


def test_corrupt_artifact_is_never_a_hit(tmp_path: Path) -> None:
    cache, blob = cached(tmp_path)
    blob.chmod(stat.S_IRUSR | stat.S_IWUSR)
    blob.write_bytes(b"tampered!!!")
    assert KEY not in cache
    with pytest.raises(KeyError):
        cache[KEY]


def test_large_artifacts_are_only_checked_for_existence(tmp_path: Path) -> None:
    cache, blob = cached(tmp_path, b"x" * 100, verify_max_bytes=10)
    blob.chmod(stat.S_IRUSR | stat.S_IWUSR)
    blob.write_bytes(b"y" * 100)
    assert KEY in cache  # too big to re-hash on every planner pass; the consumer's download verifies it
    blob.unlink()
    assert KEY not in cache


def test_lookup_then_get_answers_the_same_entry(tmp_path: Path) -> None:
    cache, blob = cached(tmp_path)
    assert KEY in cache
    first = cache[KEY]
    blob.unlink()
    with pytest.raises(KeyError):  # the remembered entry is used once, never again
        cache[KEY]
    assert first.key == KEY
