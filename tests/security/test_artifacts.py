"""Artifacts an attacker could tamper with: a blob whose content does not match its digest, a model file
holding an untrusted type, and document names that try to leave the store.

The tampered blob is refused by the S3 store on the real MinIO here, and by the step runtime inside a
Run on the cluster in test_cluster.py.
"""

from __future__ import annotations

import os
import secrets
import zipfile
from pathlib import Path

import pytest
from sklearn.preprocessing import FunctionTransformer

from conveyor.components.base import ComponentError
from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, UntrustedTypeError, load_artifact
from conveyor.storage.digest import hex_of, sha256_bytes
from conveyor.storage.local import LocalStore
from conveyor.storage.s3 import S3Store
from conveyor.storage.store import DigestMismatch, blob_key
from testenv.minio import S3Endpoint

pytestmark = pytest.mark.e2e

TRAVERSALS = ["../escape", "../../etc/passwd", "/etc/passwd", "runs/../../escape", "runs//x", "./x", "runs/.", ""]


def test_a_blob_whose_content_does_not_match_its_digest_is_refused_by_the_s3_store(
    minio: S3Endpoint, tmp_path: Path
) -> None:
    client = minio.client()
    try:
        store = S3Store(minio.bucket, prefix=f"security-{secrets.token_hex(4)}", client=client)
        genuine, forged = b"the model that was evaluated", b"a model someone swapped in"
        digest = sha256_bytes(genuine)
        client.put_object(Bucket=minio.bucket, Key=store._key(blob_key(hex_of(digest))), Body=forged)
        dest = tmp_path / "model.zip"
        with pytest.raises(DigestMismatch) as refused:
            store.get_file(digest, dest)
        assert f"artifact {digest} is corrupt in the store: its content hashes to {sha256_bytes(forged)}" in str(
            refused.value
        )
        assert not dest.exists() and list(tmp_path.iterdir()) == []  # no forged byte reaches the step
    finally:
        client.close()


def _metadata(trusted: list[str]) -> ArtifactMetadata:
    return ArtifactMetadata(
        kind="transformer",
        estimator="sklearn.preprocessing.FunctionTransformer",
        inputs=[FeatureSpec(name="x", dtype="float64")],
        trusted_types=trusted,
    )


@pytest.mark.parametrize(("func", "type_name"), [(os.system, "posix.system"), (exec, "builtins.exec")])
def test_a_model_file_with_an_untrusted_type_is_refused_even_when_it_declares_it(
    tmp_path: Path, func: object, type_name: str
) -> None:
    """An attacker writes the artifact by hand (save_artifact would refuse) and lists the type as trusted."""
    import skops.io as sio

    data = sio.dumps(FunctionTransformer(func))
    untrusted = sio.get_untrusted_types(data=data)
    assert type_name in untrusted
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", _metadata(untrusted).model_dump_json())
        archive.writestr("model.skops", data)
    with pytest.raises(UntrustedTypeError, match=type_name.replace(".", r"\.")) as refused:
        load_artifact(path)
    assert str(refused.value).startswith("refused to load model artifact: untrusted type(s)")
    assert isinstance(refused.value, ComponentError)  # a step fails with this message, it does not crash


@pytest.mark.parametrize("name", TRAVERSALS)
def test_a_path_traversal_document_name_is_refused_by_both_stores(name: str, tmp_path: Path, minio: S3Endpoint) -> None:
    local = LocalStore(tmp_path / "store")
    with pytest.raises(ValueError, match="invalid document name"):
        local.put_text(name, "x")
    with pytest.raises(ValueError, match="invalid document name"):
        local.get_text(name)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "store").exists()
    client = minio.client()
    try:
        prefix = f"security-{secrets.token_hex(4)}"
        s3 = S3Store(minio.bucket, prefix=prefix, client=client)
        with pytest.raises(ValueError, match="invalid document name"):
            s3.put_text(name, "x")
        with pytest.raises(ValueError, match="invalid document name"):
            s3.get_document(name)
        assert client.list_objects_v2(Bucket=minio.bucket, Prefix=prefix).get("KeyCount", 0) == 0
    finally:
        client.close()
