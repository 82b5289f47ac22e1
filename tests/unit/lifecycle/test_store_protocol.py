"""The store protocol's raw keys and sidecars over the local store, and the collector's use of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.lifecycle.inventory import inventory_of
from conveyor.storage.digest import hex_of
from conveyor.storage.local import LocalStore
from conveyor.storage.store import blob_key, sidecar_key


def test_raw_keys_list_by_key_prefix_read_write_and_delete(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_raw("predictions/v1/b.jsonl", b"2\n")
    store.put_raw("predictions/v1/a.jsonl", b"1\n")
    store.put_raw("predictions/v10/c.jsonl", b"3\n")
    (store.root / "predictions" / "v1" / ".a.jsonl.tmp").write_bytes(b"half")  # a write in progress
    assert [o.key for o in store.list_objects("predictions/v1/")] == [
        "predictions/v1/a.jsonl",
        "predictions/v1/b.jsonl",
    ]
    assert [o.key for o in store.list_objects("predictions/v1")][-1] == "predictions/v10/c.jsonl"  # a key prefix
    assert [o.key for o in store.list_objects("predictions/", limit=1)] == ["predictions/v1/a.jsonl"]
    assert store.list_objects("nothing/") == []
    assert store.get_raw("predictions/v1/a.jsonl") == b"1\n"
    store.delete("predictions/v1/a.jsonl")
    store.delete("predictions/v1/a.jsonl")  # already gone is fine
    assert store.get_raw("predictions/v1/a.jsonl") is None
    with pytest.raises(ValueError):
        store.get_raw("../outside")


def test_a_blob_sidecar_is_no_blob_and_goes_when_the_collector_deletes_the_blob(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    model = tmp_path / "model"
    model.write_bytes(b"a model")
    stored = store.put_file(model)
    assert store.get_sidecar(stored.digest) is None
    store.put_sidecar(stored.digest, {"kind": "model"})
    assert store.get_sidecar(stored.digest) == {"kind": "model"}
    assert (store.root / sidecar_key(hex_of(stored.digest))).is_file()
    inventory = inventory_of(store)
    assert list(inventory.blobs()) == [stored.digest]
    inventory.delete_blob(stored.digest)
    assert not (store.root / blob_key(hex_of(stored.digest))).exists()
    assert store.get_sidecar(stored.digest) is None
