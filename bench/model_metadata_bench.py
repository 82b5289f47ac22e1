"""Store requests and bytes of a ModelDeployment pass's model-metadata read, before and after sidecars.

Against a real MinIO (the test env's binary): a random forest on breast_cancer is saved with the
components' `save_artifact` and stored as a step stores it (`runtime.step.store_output`: blob plus
sidecar). "before" runs what `_model_metadata` did until the sidecar existed (download the model with
`download_object`, read its meta.json); "after" runs the controller's `model_metadata`. With drift
monitoring and no live accuracy this read is the whole of a pass's store traffic (the first pass for a
model digest; later passes answer from memory). Every S3 request of every boto3 client is recorded with
botocore's before-send and after-call events, bytes from the response's Content-Length (a HEAD's
body is empty).

Usage: .venv/bin/python bench/model_metadata_bench.py [--trees 300]   (prints one JSON document)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import boto3.session  # noqa: E402

REQUESTS: list[dict[str, Any]] = []


def _record_every_client() -> None:
    """Hook every boto3 client made from now on (the controller and download_object make their own)."""
    original = boto3.session.Session.client

    def client(self: Any, *args: Any, **kwargs: Any) -> Any:
        c = original(self, *args, **kwargs)
        c.meta.events.register("before-send.s3", lambda request, **_: REQUESTS.append({"method": request.method}))
        c.meta.events.register(
            "after-call.s3",
            lambda http_response, **_: REQUESTS[-1].update(
                status=http_response.status_code,
                bytes=0 if REQUESTS[-1]["method"] == "HEAD" else int(http_response.headers.get("content-length", 0)),
            ),
        )
        return c

    boto3.session.Session.client = client  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=300)
    args = parser.parse_args()
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    from conveyor.api.modeldeployment import ServedModel
    from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, read_metadata, save_artifact
    from conveyor.controller.config import OperatorConfig
    from conveyor.controller.modeldeployments import ModelDeploymentReconciler
    from conveyor.runtime.step import store_output
    from conveyor.storage.s3 import S3Store, download_object
    from testenv.binaries import Binaries
    from testenv.minio import MinioServer

    _record_every_client()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        work = Path(tmp)
        minio = MinioServer(Binaries.locate(), work).start()
        try:
            end = minio.endpoint
            os.environ.update(AWS_ACCESS_KEY_ID=end.access_key, AWS_SECRET_ACCESS_KEY=end.secret_key,
                              AWS_DEFAULT_REGION=end.region)  # fmt: skip
            x, y = load_breast_cancer(return_X_y=True, as_frame=True)
            model = RandomForestClassifier(n_estimators=args.trees, random_state=0).fit(x, y)
            meta = ArtifactMetadata(
                kind="model", estimator="sklearn.ensemble.RandomForestClassifier", task="classification",
                label="target", classes=[0, 1], inputs=[FeatureSpec(name=str(c), dtype="float64") for c in x.columns],
            )  # fmt: skip
            path = work / "model"
            save_artifact(model, path, meta)
            store = S3Store(end.bucket, "bench", end.endpoint)
            stored = store_output(store, path)
            served = ServedModel(uri=stored.uri, digest=stored.digest)
            config = OperatorConfig(s3_bucket=end.bucket, s3_prefix="bench", s3_endpoint=end.endpoint)

            REQUESTS.clear()
            with tempfile.TemporaryDirectory() as t:  # the pass before sidecars (its _model_metadata, verbatim)
                download_object(served.uri, Path(t) / "model", end.endpoint, max_bytes=2 * 1024**3)
                before_meta = read_metadata(Path(t) / "model")
            before = list(REQUESTS)

            REQUESTS.clear()
            after_meta = ModelDeploymentReconciler(cast(Any, None), cast(Any, None), config).model_metadata(served)
            after = list(REQUESTS)
            assert after_meta == before_meta
        finally:
            minio.stop()
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, check=False, cwd=ROOT, capture_output=True, text=True)
    print(json.dumps({
        "commit": commit.stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "model_bytes": stored.size,
        "before": {"requests": before, "bytes": sum(r.get("bytes", 0) for r in before)},
        "after": {"requests": after, "bytes": sum(r.get("bytes", 0) for r in after)},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
