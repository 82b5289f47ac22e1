"""The ModelDeployment controller reads a model's metadata from its sidecar, never fetching the model.

Against the real MinIO: a model saved by the components' `save_artifact` and stored the way a step's
runtime stores its outputs gets a sidecar beside its blob; the controller's metadata read is recorded
request by request (botocore's before-send event on the store's client) and must not GET or HEAD the
model object. A model stored before sidecars existed still has its metadata read, from the model.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conveyor.api.modeldeployment import ServedModel
from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, save_artifact, sidecar_path
from conveyor.controller.config import OperatorConfig
from conveyor.controller.modeldeployments import ModelDeploymentReconciler
from conveyor.runtime.step import store_output
from conveyor.storage.digest import hex_of
from conveyor.storage.s3 import S3Store
from conveyor.storage.store import StoredArtifact, blob_key, sidecar_key
from testenv.minio import S3Endpoint


class Recorded:
    """Every request a boto3 client sends: (method, key within the bucket)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.requests: list[tuple[str, str]] = []
        self._bucket = bucket
        client.meta.events.register("before-send.s3", self._seen)

    def _seen(self, request: Any, **_: Any) -> None:
        path = urlparse(request.url).path.lstrip("/")
        self.requests.append((request.method, path.removeprefix(self._bucket + "/")))


@pytest.fixture
def store(minio: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", minio.region)
    # a prefix per test: the same model gives the same digest, and a sidecar one test wrote must not leak
    s = S3Store(minio.bucket, f"sidecar-test-{secrets.token_hex(4)}", minio.endpoint, client=minio.client())
    yield s
    s.close()


def saved_model(tmp: Path) -> tuple[Path, ArtifactMetadata]:
    x, y = load_iris(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    meta = ArtifactMetadata(
        kind="model",
        estimator="sklearn.linear_model.LogisticRegression",
        task="classification",
        label="target",
        classes=[0, 1, 2],
        inputs=[FeatureSpec(name=str(c), dtype=str(x[c].dtype)) for c in x.columns],
    )
    path = tmp / "model"
    return path, save_artifact(model, path, meta)


def reconciler(minio: S3Endpoint, store: S3Store) -> ModelDeploymentReconciler:
    config = OperatorConfig(s3_bucket=minio.bucket, s3_prefix=store.prefix, s3_endpoint=minio.endpoint)
    return ModelDeploymentReconciler(cast(Any, None), cast(Any, None), config, store=store)


def served(stored: StoredArtifact) -> ServedModel:
    return ServedModel(uri=stored.uri, digest=stored.digest)


def test_the_controller_reads_a_models_metadata_from_its_sidecar_without_fetching_the_model(
    minio: S3Endpoint, store: S3Store, tmp_path: Path
) -> None:
    path, written = saved_model(tmp_path)
    assert sidecar_path(path).is_file(), "save_artifact writes the sidecar beside the model"
    stored = store_output(store, path)
    model_key = f"{store.prefix}{blob_key(hex_of(stored.digest))}"
    recorded = Recorded(store.client, minio.bucket)

    meta = reconciler(minio, store).model_metadata(served(stored))

    assert meta == written
    assert recorded.requests == [("GET", f"{store.prefix}{sidecar_key(hex_of(stored.digest))}")]
    assert not [r for r in recorded.requests if r[1] == model_key]


def test_a_model_stored_before_sidecars_existed_has_its_metadata_read_from_the_model(
    minio: S3Endpoint, store: S3Store, tmp_path: Path
) -> None:
    path, written = saved_model(tmp_path)
    sidecar_path(path).unlink()
    stored = store.put_file(path)  # as the runtime stored outputs before: no sidecar
    model_key = f"{store.prefix}{blob_key(hex_of(stored.digest))}"
    recorded = Recorded(store.client, minio.bucket)
    r = reconciler(minio, store)

    assert r.model_metadata(served(stored)) == written
    assert ("GET", model_key) in recorded.requests  # the recorder sees a model GET when there is one
    before = len(recorded.requests)
    assert r.model_metadata(served(stored)) == written
    assert len(recorded.requests) == before, "metadata is read once per model digest"
