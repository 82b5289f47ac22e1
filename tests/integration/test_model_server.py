"""The model server as a real process on loopback: real HTTP, real MinIO, models trained by our components.

Covers predictions against the model in-process, tritonclient (binary and JSON tensors), digest
verification, refusal of untrusted and corrupt artifacts, a model and monitoring store in MinIO,
hostile requests (always 4xx with an error body, never 500), metrics, and a SIGTERM under load that
drops nothing and exits 0. Nothing is mocked; a missing prerequisite (MinIO binary, tritonclient)
fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import requests
import skops.io as sio
from prometheus_client.parser import text_string_to_metric_families
from sklearn.preprocessing import FunctionTransformer

from conveyor.api.modeldeployment import DriftMeasure
from conveyor.components.datasets import read_dataset
from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, load_artifact, read_metadata
from conveyor.components.registry import get_component
from conveyor.controller.modeldeployments import reference_profile
from conveyor.controller.scrape import category_totals, parse_metrics, window_delta
from conveyor.core.categories import OTHER_CATEGORY
from conveyor.core.monitoring import CategoryReference, CategoryWindow, judge
from conveyor.storage.digest import sha256_file
from testenv.binaries import Binaries
from testenv.minio import MinioServer, S3Endpoint
from testenv.processes import ServerProcess, free_port, wait_until

pytestmark = pytest.mark.integration

READY_TIMEOUT = 180.0  # importing scikit-learn and loading on a busy 2-core machine


def run_component(name: str, config: dict[str, Any], inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    component = get_component(name)
    component.run(component.config.model_validate(config), inputs, outputs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """breast_cancer through ingest, split, preprocess and train: a logistic regression and a small forest."""
    d = tmp_path_factory.mktemp("models")
    run_component("ingest", {"source": "sklearn://breast_cancer"}, {}, {"dataset": d / "dataset"})
    run_component(
        "split",
        {"label": "target", "strategy": "stratified", "seed": 0},
        {"dataset": d / "dataset"},
        {"train": d / "train", "test": d / "test"},
    )
    run_component("preprocess", {"label": "target"}, {"train": d / "train"}, {"transformer": d / "transformer"})
    for name, estimator, params in (
        ("lr", "sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
        ("rf", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 20}),
    ):
        run_component(
            "train",
            {"label": "target", "estimator": estimator, "params": params},
            {"train": d / "train", "transformer": d / "transformer"},
            {"model": d / name},
        )
    return {"lr": d / "lr", "rf": d / "rf", "test": d / "test"}


@pytest.fixture(scope="module")
def test_rows(trained: dict[str, Path]) -> tuple[list[str], np.ndarray[Any, Any]]:
    frame = read_dataset(trained["test"]).drop(columns=["target"])
    return list(frame.columns), frame.to_numpy(dtype=np.float64)


class ModelServer:
    """`python -m conveyor.serving` on a free loopback port, its JSON log in a file."""

    def __init__(self, log_dir: Path, uri: str, digest: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        argv = [
            sys.executable,
            "-m",
            "conveyor.serving",
            "--model-name",
            "bc",
            "--model-uri",
            uri,
            "--model-digest",
            digest,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--work-dir",
            str(log_dir),
            *args,
        ]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        child_env.update(env or {})
        self.process = ServerProcess("model-server", argv, self.log_path, env=child_env)

    def start(self) -> ModelServer:
        self.process.start()
        wait_until(self.live, timeout=60, what="model server /v2/health/live", process=self.process)
        return self

    def live(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{self.url}/v2/health/live", timeout=2).status_code == 200
        return False

    def readiness(self) -> requests.Response:
        return requests.get(f"{self.url}/v2/health/ready", timeout=5)

    def wait_ready(self) -> None:
        wait_until(
            lambda: self.readiness().status_code == 200,
            timeout=READY_TIMEOUT,
            what=f"model server ready; log:\n{self.log()}",
            interval=0.2,
            process=self.process,
        )

    def wait_failed(self) -> str:
        """Wait until readiness reports a reason other than 'loading'; return it."""

        def failed() -> str | None:
            reply = self.readiness()
            assert reply.status_code == 503, reply.text
            reason = str(reply.json()["error"])
            return None if reason == "loading" else reason

        return str(wait_until(failed, timeout=READY_TIMEOUT, what="load failure", interval=0.2, process=self.process))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                entries.append(orjson.loads(line))
        return entries

    def stop(self) -> None:
        self.process.stop()


@contextlib.contextmanager
def serving(log_dir: Path, uri: str, digest: str, *args: str, **kw: Any) -> Iterator[ModelServer]:
    server = ModelServer(log_dir, uri, digest, *args, **kw).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lr_server(tmp_path_factory: pytest.TempPathFactory, trained: dict[str, Path]) -> Iterator[ModelServer]:
    """One server for the read-mostly tests: LR, small body limit, predictions sampled to a directory."""
    d = tmp_path_factory.mktemp("lr-server")
    path = trained["lr"]
    with serving(
        d,
        path.as_uri(),
        sha256_file(path),
        "--max-request-bytes",
        str(2 << 20),
        "--monitoring-uri",
        (d / "monitoring").as_uri(),
        "--prediction-sample-rate",
        "1.0",
    ) as server:
        server.wait_ready()
        yield server


def v2_matrix(rows: np.ndarray[Any, Any], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}],
        **extra,
    }


# -- predictions -----------------------------------------------------------------------------------


def test_predictions_match_the_model_in_process(
    lr_server: ModelServer, trained: dict[str, Path], test_rows: tuple[list[str], np.ndarray[Any, Any]]
) -> None:
    import pandas as pd  # type: ignore[import-untyped]

    names, rows = test_rows
    model = load_artifact(trained["lr"]).obj
    frame = pd.DataFrame(rows, columns=names)
    expected, expected_proba = model.predict(frame), model.predict_proba(frame)
    url = f"{lr_server.url}/v2/models/bc/infer"
    outputs = [{"name": "predict"}, {"name": "predict_proba"}]

    whole = requests.post(url, json=v2_matrix(rows, id="batch-1", outputs=outputs), timeout=30)
    assert whole.status_code == 200, whole.text
    doc = whole.json()
    assert doc["id"] == "batch-1" and doc["model_name"] == "bc"
    assert doc["outputs"][0] == {
        "name": "predict",
        "datatype": "INT64",
        "shape": [len(rows)],
        "data": expected.tolist(),
    }
    np.testing.assert_allclose(np.array(doc["outputs"][1]["data"]).reshape(-1, 2), expected_proba, rtol=1e-12)

    per_feature = {
        "inputs": [
            {"name": n, "shape": [len(rows)], "datatype": "FP64", "data": rows[:, i].tolist()}
            for i, n in enumerate(names)
        ]
    }
    assert requests.post(url, json=per_feature, timeout=30).json()["outputs"][0]["data"] == expected.tolist()

    # One row at a time, concurrently, so that micro-batching mixes requests: each gets its own answer.
    session_answers: dict[int, int] = {}

    def one(i: int) -> None:
        reply = requests.post(url, json=v2_matrix(rows[i : i + 1], id=f"row-{i}"), timeout=30)
        assert reply.json()["id"] == f"row-{i}"
        session_answers[i] = reply.json()["outputs"][0]["data"][0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [session_answers[i] for i in range(40)] == expected[:40].tolist()

    plain = requests.post(
        f"{lr_server.url}/predict", json={"instances": [dict(zip(names, r, strict=True)) for r in rows[:5]]}, timeout=30
    )
    assert plain.status_code == 200
    body = plain.json()
    assert body["predictions"] == expected[:5].tolist() and body["model"] == "bc"
    np.testing.assert_allclose(body["probabilities"], expected_proba[:5], rtol=1e-12)
    assert (
        requests.post(f"{lr_server.url}/predict", json={"instances": rows[:5].tolist()}, timeout=30).json()[
            "predictions"
        ]
        == expected[:5].tolist()
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http(
    lr_server: ModelServer, trained: dict[str, Path], test_rows: tuple[list[str], np.ndarray[Any, Any]], binary: bool
) -> None:
    import pandas as pd
    import tritonclient.http as httpclient

    names, rows = test_rows
    model = load_artifact(trained["lr"]).obj
    frame = pd.DataFrame(rows.astype(np.float32).astype(np.float64), columns=names)
    client = httpclient.InferenceServerClient(url=lr_server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("bc")
        meta = client.get_model_metadata("bc")
        assert meta["platform"] == "sklearn" and [i["name"] for i in meta["inputs"]] == names
        assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
        tensor = httpclient.InferInput("input__0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows.astype(np.float32), binary_data=binary)
        result = client.infer(
            "bc",
            [tensor],
            request_id="triton-1",
            outputs=[
                httpclient.InferRequestedOutput("predict", binary_data=binary),
                httpclient.InferRequestedOutput("predict_proba", binary_data=binary),
            ],
        )
        assert result.get_response()["id"] == "triton-1"
        np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(frame))
        np.testing.assert_allclose(result.as_numpy("predict_proba"), model.predict_proba(frame), rtol=1e-9)
        version = meta["versions"][0]
        versioned = client.infer("bc", [tensor], model_version=version)
        np.testing.assert_array_equal(versioned.as_numpy("predict"), model.predict(frame))
    finally:
        client.close()


# -- refusing the wrong model ----------------------------------------------------------------------


def test_digest_mismatch_never_becomes_ready(tmp_path: Path, trained: dict[str, Path]) -> None:
    wrong = "sha256:" + "0" * 64
    with serving(tmp_path, trained["lr"].as_uri(), wrong) as server:
        reason = server.wait_failed()
        actual = sha256_file(trained["lr"])
        assert reason == f"model digest mismatch: expected {wrong}, got {actual}"
        time.sleep(2)
        for path in ("/v2/health/ready", "/v2/models/bc/ready"):
            reply = requests.get(server.url + path, timeout=5)
            assert (reply.status_code, reply.json()) == (503, {"error": reason})
        assert requests.get(server.url + "/v2/health/live", timeout=5).status_code == 200
        infer = requests.post(server.url + "/v2/models/bc/infer", json=v2_matrix(np.zeros((1, 30))), timeout=5)
        assert infer.status_code == 503 and "digest mismatch" in infer.json()["error"]
        failures = [e for e in server.log_entries() if e.get("reason") == reason]
        assert len(failures) == 1 and failures[0]["level"] == "error"
        assert "0" * 64 in str(failures[0]) and server.process.exit_code() is None


def _untrusted_artifact(path: Path) -> None:
    """What an attacker writes by hand: a 'model' holding os.system, declared as trusted."""
    data = sio.dumps(FunctionTransformer(os.system))
    meta = ArtifactMetadata(
        kind="model",
        estimator="sklearn.preprocessing.FunctionTransformer",
        inputs=[FeatureSpec(name="x", dtype="float64")],
        trusted_types=sio.get_untrusted_types(data=data),
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", meta.model_dump_json())
        archive.writestr("model.skops", data)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("untrusted", "refused to load model artifact: untrusted type(s) posix.system"),
        ("corrupt", "is not a conveyor.model/v1 artifact"),
        ("truncated", "is not a conveyor.model/v1 artifact"),
    ],
)
def test_untrusted_or_corrupt_artifact_is_refused(
    tmp_path: Path, trained: dict[str, Path], kind: str, reason: str
) -> None:
    path = tmp_path / "artifact"
    if kind == "untrusted":
        _untrusted_artifact(path)
    elif kind == "corrupt":
        path.write_bytes(os.urandom(4096))
    else:
        path.write_bytes(trained["lr"].read_bytes()[:2000])
    # The digest is right: the server must refuse on content, not because the bytes changed.
    with serving(tmp_path, path.as_uri(), sha256_file(path)) as server:
        found = server.wait_failed()
        assert reason in found
        assert server.readiness().status_code == 503
        assert server.process.exit_code() is None


# -- MinIO: the model and the monitoring store -----------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A real MinIO on loopback (the test environment's binary and harness)."""
    server = MinioServer(Binaries.locate(), tmp_path_factory.mktemp("minio-logs")).start()
    try:
        yield server.endpoint
    finally:
        server.stop()


def _objects(s3: S3Endpoint, prefix: str) -> dict[str, bytes]:
    client = s3.client()
    try:
        listing = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])
        return {o["Key"]: client.get_object(Bucket=s3.bucket, Key=o["Key"])["Body"].read() for o in listing}
    finally:
        client.close()


def test_model_and_monitoring_in_minio(
    tmp_path: Path, s3: S3Endpoint, trained: dict[str, Path], test_rows: tuple[list[str], np.ndarray[Any, Any]]
) -> None:
    client = s3.client()
    try:
        client.upload_file(str(trained["rf"]), s3.bucket, "models/bc/rf.zip")
    finally:
        client.close()
    digest = sha256_file(trained["rf"])
    env = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key, "AWS_DEFAULT_REGION": s3.region}
    _, rows = test_rows
    with serving(
        tmp_path,
        f"s3://{s3.bucket}/models/bc/rf.zip",
        digest,
        "--s3-endpoint",
        s3.endpoint,
        "--monitoring-uri",
        f"s3://{s3.bucket}/monitoring/bc",
        "--prediction-sample-rate",
        "0.5",
        "--model-version",
        "rf-1",
        env=env,
    ) as server:
        server.wait_ready()
        ids = [f"req-{i}" for i in range(40)]
        for i, rid in enumerate(ids):
            reply = requests.post(
                server.url + "/v2/models/bc/versions/rf-1/infer", json=v2_matrix(rows[i : i + 3], id=rid), timeout=30
            )
            assert reply.status_code == 200, reply.text
        feedback = requests.post(
            server.url + "/v2/models/bc/feedback",
            json={"labels": [{"id": "req-0", "row": r, "label": 1} for r in range(3)]},
            timeout=10,
        )
        assert (feedback.status_code, feedback.json()) == (202, {"accepted": 3})
        single = requests.post(server.url + "/v2/models/bc/feedback", json={"id": "req-1", "label": 0}, timeout=10)
        assert single.status_code == 202

        def landed() -> bool:
            return bool(_objects(s3, "monitoring/bc/feedback/")) and bool(
                _objects(s3, "monitoring/bc/predictions/rf-1/")
            )

        wait_until(landed, timeout=20, what="monitoring objects in MinIO")
        time.sleep(2.5)  # let a flush that raced the check finish
        predictions = [
            orjson.loads(line)
            for body in _objects(s3, "monitoring/bc/predictions/rf-1/").values()
            for line in body.splitlines()
        ]
        sampled = {p["id"] for p in predictions}
        # Sampling is by request id: 0 < kept < all, and every kept request has all three rows.
        assert 0 < len(sampled) < len(ids)
        assert sorted((p["id"], p["row"]) for p in predictions) == sorted((i, r) for i in sampled for r in range(3))
        assert all(p["version"] == "rf-1" and p["digest"] == digest and p["prediction"] in (0, 1) for p in predictions)
        labels = [
            orjson.loads(line)
            for body in _objects(s3, "monitoring/bc/feedback/").values()
            for line in body.splitlines()
        ]
        assert sorted((x["id"], x["row"], x["label"]) for x in labels) == [
            ("req-0", 0, 1),
            ("req-0", 1, 1),
            ("req-0", 2, 1),
            ("req-1", 0, 0),
        ]
        keys = list(_objects(s3, "monitoring/bc/").keys())
        assert all(
            k.rsplit("/", 1)[1][:8].isdigit() and k.rsplit("/", 1)[1][8] == "T" and k.endswith(".jsonl") for k in keys
        )
    assert not any(str(s3.secret_key) in line for line in server.log().splitlines())


# -- hostile requests ------------------------------------------------------------------------------

HOSTILE: list[tuple[str, bytes, dict[str, str]]] = [
    ("/v2/models/bc/infer", b"", {}),
    ("/v2/models/bc/infer", b"null", {}),
    ("/v2/models/bc/infer", b'{"inputs": "x"}', {}),
    ("/v2/models/bc/infer", b'{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": {}}]}', {}),
    ("/v2/models/bc/infer", b'{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": [1]}]}', {}),
    (
        "/v2/models/bc/infer",
        orjson.dumps({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": ["a"] * 30}]}),
        {},
    ),
    (
        "/v2/models/bc/infer",
        orjson.dumps({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "BYTES", "data": ["1"] * 30}]}),
        {},
    ),
    (
        "/v2/models/bc/infer",
        orjson.dumps({"inputs": [{"name": "x", "shape": [2**40, 2**40], "datatype": "FP32", "data": [1]}]}),
        {},
    ),
    ("/v2/models/bc/infer", orjson.dumps({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32"}]}), {}),
    (
        "/v2/models/bc/infer",
        orjson.dumps(
            {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}
        ),
        {"Inference-Header-Content-Length": "9999"},
    ),
    (
        "/v2/models/bc/infer",
        orjson.dumps(
            {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}
        )
        + b"\0" * 7,
        {"Inference-Header-Content-Length": "-"},
    ),
    ("/v2/models/bc/infer", b'{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": [1e999]}]}', {}),
    ("/v2/models/bc/infer", b"\x00\x01\x02" * 100, {}),
    ("/v2/models/bc/infer", b'{"inputs": [' * 5000, {}),
    ("/v2/models/other/infer", b"{}", {}),
    ("/v2/models/bc/versions/nope/infer", b"{}", {}),
    ("/predict", b'{"instances": [[1, 2]]}', {}),
    ("/predict", b'{"instances": [{"mean radius": "big"}]}', {}),
    ("/predict", b'{"instances": [[' + b"[]," * 29 + b"[]]]}", {}),
    ("/v2/models/bc/feedback", b'{"id": 3, "label": 1}', {}),
    ("/v2/models/bc/feedback", b'{"labels": [null]}', {}),
]


@pytest.mark.parametrize(("path", "body", "headers"), HOSTILE)
def test_hostile_requests_get_4xx_with_an_error_body(
    lr_server: ModelServer, path: str, body: bytes, headers: dict[str, str]
) -> None:
    reply = requests.post(lr_server.url + path, data=body, headers=headers, timeout=30)
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text)
    assert isinstance(reply.json()["error"], str) and reply.json()["error"]


def test_oversized_and_mangled_requests(
    lr_server: ModelServer, test_rows: tuple[list[str], np.ndarray[Any, Any]]
) -> None:
    _, rows = test_rows
    big = np.tile(rows, (200, 1))  # ~6 MB of JSON, over the 2 MiB limit this server runs with
    reply = requests.post(f"{lr_server.url}/v2/models/bc/infer", json=v2_matrix(big), timeout=60)
    assert reply.status_code == 413 and "over the limit" in reply.json()["error"]

    # Every truncation and a sweep of byte flips of a valid request: never a 5xx, never a crash.
    valid = orjson.dumps(v2_matrix(rows[:2]))
    rng = np.random.default_rng(7)
    bodies = [valid[:n] for n in range(0, len(valid), max(1, len(valid) // 60))]
    for _ in range(150):
        mangled = bytearray(valid)
        for position in rng.integers(0, len(valid), size=3):
            mangled[position] = int(rng.integers(0, 256))
        bodies.append(bytes(mangled))
    with requests.Session() as session:
        for body in bodies:
            reply = session.post(f"{lr_server.url}/v2/models/bc/infer", data=body, timeout=30)
            assert reply.status_code < 500, (reply.status_code, reply.text, body[:200])
            if reply.status_code != 200:
                assert reply.json()["error"]
    assert lr_server.readiness().status_code == 200


# -- metrics ---------------------------------------------------------------------------------------


def _samples(server: ModelServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(server.url + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, labels[k]) in ls for k in labels))


def test_metrics_are_present_and_count(
    lr_server: ModelServer, test_rows: tuple[list[str], np.ndarray[Any, Any]]
) -> None:
    names, rows = test_rows
    version = requests.get(lr_server.url + "/v2/models/bc", timeout=5).json()["versions"][0]
    before = _samples(lr_server)
    for _ in range(3):
        assert requests.post(f"{lr_server.url}/v2/models/bc/infer", json=v2_matrix(rows[:10]), timeout=30).ok
    assert requests.post(f"{lr_server.url}/v2/models/bc/infer", data=b"{", timeout=30).status_code == 400
    after = _samples(lr_server)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    ok = {"model": "bc", "version": version}
    assert delta("conveyor_server_requests_total", code="200", **ok) == 3
    assert delta("conveyor_server_requests_total", code="400", **ok) == 1
    assert delta("conveyor_server_request_duration_seconds_count", **ok) == 4
    assert delta("conveyor_server_input_rows_total", **ok) == 30
    assert delta("conveyor_server_predictions_total", **ok) == 30
    assert delta("conveyor_server_input_feature_sum", feature=names[0], **ok) == pytest.approx(3 * rows[:10, 0].sum())
    assert delta("conveyor_server_input_feature_sum_squares", feature=names[0], **ok) == pytest.approx(
        3 * np.square(rows[:10, 0]).sum()
    )
    assert delta("conveyor_server_input_feature_missing_total", feature=names[0], **ok) == 0
    assert delta("conveyor_server_batch_size_count") >= 1
    assert _value(after, "conveyor_server_model_info", **ok) == 1
    assert _value(after, "conveyor_server_inflight_requests", model="bc") == 0
    assert ("conveyor_server_monitoring_dropped_total", ()) in after
    features = {dict(ls).get("feature") for (n, ls) in after if n == "conveyor_server_input_feature_sum"}
    assert features == set(names)


@pytest.fixture(scope="module")
def categorical_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CSV with a categorical column through ingest, preprocess (one-hot) and train."""
    d = tmp_path_factory.mktemp("categorical")
    rng = np.random.default_rng(3)
    colour = rng.choice(["red", "green", "blue"], 400, p=[0.5, 0.3, 0.2])
    x = rng.normal(size=400)
    target = ((colour == "red") ^ (x > 0)).astype(int)
    csv = d / "colours.csv"
    csv.write_text("x,colour,target\n" + "".join(f"{a},{c},{t}\n" for a, c, t in zip(x, colour, target, strict=True)))
    run_component("ingest", {"source": csv.as_uri()}, {}, {"dataset": d / "dataset"})
    run_component("preprocess", {"label": "target"}, {"train": d / "dataset"}, {"transformer": d / "transformer"})
    run_component(
        "train",
        {"label": "target", "estimator": "sklearn.linear_model.LogisticRegression"},
        {"train": d / "dataset", "transformer": d / "transformer"},
        {"model": d / "model"},
    )
    return d / "model"


def test_categorical_inputs_are_counted_by_training_category_and_judged_for_drift(
    tmp_path: Path, categorical_model: Path
) -> None:
    """The server counts a categorical feature under the training top list's labels only, and the
    operator's scrape and drift functions judge its windows: training-like traffic does not drift,
    traffic full of colours never seen in training does."""
    rng = np.random.default_rng(4)
    reference = reference_profile(read_metadata(categorical_model))
    assert isinstance(reference["colour"], CategoryReference)

    def body(colours: list[str]) -> dict[str, Any]:
        return {
            "inputs": [
                {
                    "name": "x",
                    "shape": [len(colours)],
                    "datatype": "FP64",
                    "data": rng.normal(size=len(colours)).tolist(),
                },
                {"name": "colour", "shape": [len(colours)], "datatype": "BYTES", "data": colours},
            ]
        }

    with serving(tmp_path, categorical_model.as_uri(), sha256_file(categorical_model)) as server:
        server.wait_ready()
        version = requests.get(server.url + "/v2/models/bc", timeout=5).json()["versions"][0]

        def scrape() -> dict[str, CategoryWindow]:
            return category_totals(parse_metrics(requests.get(server.url + "/metrics", timeout=10).text), version)

        before = scrape()
        like_training = rng.choice(["red", "green", "blue"], 300, p=[0.5, 0.3, 0.2]).tolist()
        for chunk in range(0, 300, 50):
            assert requests.post(
                f"{server.url}/v2/models/bc/infer", json=body(like_training[chunk : chunk + 50]), timeout=30
            ).ok
        calm = scrape()
        unseen = [f"colour-{i}" if i % 2 else "red" for i in range(300)]  # half of them never seen in training
        assert requests.post(f"{server.url}/v2/models/bc/infer", json=body(unseen), timeout=30).ok
        shifted = scrape()

    assert set(shifted["colour"].counts) == {"red", "green", "blue", OTHER_CATEGORY}  # no label from a request
    assert shifted["colour"].counts[OTHER_CATEGORY] == 150
    first = window_delta(calm, before)
    assert first["colour"].rows == 300
    assert not judge(reference, first)["colour"].drifted
    second = window_delta(shifted, calm)
    verdict = judge(reference, second)["colour"]
    assert verdict.drifted and verdict.measure == DriftMeasure.PSI and verdict.rows == 300


# -- graceful shutdown -----------------------------------------------------------------------------


def test_sigterm_under_load_drops_nothing_and_exits_zero(
    tmp_path: Path, trained: dict[str, Path], test_rows: tuple[list[str], np.ndarray[Any, Any]]
) -> None:
    _, rows = test_rows
    monitoring = tmp_path / "monitoring"
    server = ModelServer(
        tmp_path,
        trained["lr"].as_uri(),
        sha256_file(trained["lr"]),
        "--drain-seconds",
        "5",
        "--monitoring-uri",
        monitoring.as_uri(),
        "--prediction-sample-rate",
        "1",
    ).start()
    try:
        server.wait_ready()
        stop_sending = threading.Event()
        results: list[tuple[str, int | str]] = []
        lock = threading.Lock()

        def load(worker: int) -> None:
            with requests.Session() as session:
                i = 0
                while not stop_sending.is_set():
                    rid = f"w{worker}-{i}"
                    try:
                        reply = session.post(
                            f"{server.url}/v2/models/bc/infer",
                            json=v2_matrix(rows[i % 50 : i % 50 + 2], id=rid),
                            timeout=30,
                        )
                        outcome: int | str = reply.status_code
                    except requests.RequestException as exc:
                        outcome = f"{type(exc).__name__}: {exc}"
                    with lock:
                        results.append((rid, outcome))
                    i += 1

        workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        time.sleep(1.0)
        os.kill(server.process.pid, signal.SIGTERM)
        signalled = time.monotonic()
        # Readiness turns 503 at once; requests keep being served through the drain period.
        wait_until(lambda: server.readiness().status_code == 503, timeout=2.0, what="readiness 503 after SIGTERM")
        assert server.readiness().json() == {"error": "shutting down"}
        time.sleep(1.5)  # the load balancer takes the endpoint out well within --drain-seconds
        stop_sending.set()
        for w in workers:
            w.join(timeout=30)
        served_during_drain = len(results)
        wait_until(lambda: server.process.exit_code() is not None, timeout=30, what="server exit after drain")
        assert server.process.exit_code() == 0, server.log()
        assert time.monotonic() - signalled >= 5.0
    finally:
        server.stop()
    failures = [r for r in results if r[1] != 200]
    assert failures == [] and served_during_drain > 20
    messages = [e["message"] for e in server.log_entries()]
    assert "draining: readiness is 503, serving continues" in messages and messages[-1] == "stopped"
    # The monitoring buffer was flushed on the way out: every request (sample rate 1) has both rows.
    lines = [
        orjson.loads(line)
        for f in (monitoring / "predictions").rglob("*.jsonl")
        for line in f.read_bytes().splitlines()
    ]
    assert sorted({line["id"] for line in lines}) == sorted(rid for rid, _ in results)
    assert len(lines) == 2 * len(results)
