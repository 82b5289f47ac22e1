"""The REST adapter and data plane in-process (ASGI calls, no sockets): routes, error bodies, metrics, feedback."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd  # type: ignore[import-untyped]
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from conveyor.components.modelio import ArtifactMetadata, CategoryCount, FeatureProfile, FeatureSpec
from conveyor.serving.dataplane import DataPlane
from conveyor.serving.metrics import ServerMetrics
from conveyor.serving.model import ServedModel
from conveyor.serving.monitoring import DirectorySink, MonitoringBuffer
from conveyor.serving.rest import RestApp

DIGEST = "sha256:" + "ab" * 32


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(app: RestApp, method: str, path: str, body: bytes | dict[str, Any] = b"", **headers: str) -> Reply:
    raw = orjson.dumps(body) if isinstance(body, dict) else body
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    return Reply(sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"])


def classifier() -> ServedModel:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.normal(size=200), "b": rng.normal(size=200), "colour": rng.choice(["red", "blue"], 200)}
    )
    y = (frame["a"] + (frame["colour"] == "red") > 0.5).astype(int)
    pipeline = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["a", "b"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, y)
    meta = ArtifactMetadata(
        kind="model",
        estimator="sklearn.linear_model.LogisticRegression",
        task="classification",
        label="y",
        classes=[0, 1],
        inputs=[
            FeatureSpec(name="a", dtype="float64"),
            FeatureSpec(name="b", dtype="float64"),
            FeatureSpec(name="colour", dtype="object"),
        ],
    )
    return ServedModel("clf", "v1", DIGEST, pipeline, meta)


def regressor() -> ServedModel:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=50)})
    pipeline = Pipeline([("model", LinearRegression())]).fit(frame, frame["x"] * 3 + 1)
    meta = ArtifactMetadata(
        kind="model",
        estimator="sklearn.linear_model.LinearRegression",
        task="regression",
        label="y",
        inputs=[FeatureSpec(name="x", dtype="float64")],
    )
    return ServedModel("reg", "v1", DIGEST, pipeline, meta)


def app_for(model: ServedModel | None, *, monitoring: MonitoringBuffer | None = None, **kw: Any) -> RestApp:
    name = model.name if model else "clf"
    dataplane = DataPlane(name, "v1", DIGEST, ServerMetrics(name, "v1"), monitoring=monitoring)
    if model is not None:
        dataplane.model_loaded(model)
    return RestApp(dataplane, **kw)


@pytest.fixture(scope="module")
def clf() -> ServedModel:
    return classifier()


def infer_body(rows: list[tuple[float, float, str]], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "a", "shape": [len(rows)], "datatype": "FP64", "data": [r[0] for r in rows]},
            {"name": "b", "shape": [len(rows)], "datatype": "FP64", "data": [r[1] for r in rows]},
            {"name": "colour", "shape": [len(rows)], "datatype": "BYTES", "data": [r[2] for r in rows]},
        ],
        **extra,
    }


def test_infer_matches_the_model_in_process(clf: ServedModel) -> None:
    app = app_for(clf)
    rows = [(1.0, 0.0, "red"), (-2.0, 1.0, "blue"), (0.3, -1.0, "blue")]
    reply = call(
        app,
        "POST",
        "/v2/models/clf/infer",
        infer_body(rows, id="r-1", outputs=[{"name": "predict"}, {"name": "predict_proba"}]),
    )
    assert reply.status == 200, reply.body
    doc = reply.json()
    frame = pd.DataFrame(rows, columns=["a", "b", "colour"])
    assert doc["id"] == "r-1" and doc["model_name"] == "clf" and doc["model_version"] == "v1"
    assert doc["outputs"][0]["data"] == clf.pipeline.predict(frame).tolist()
    np.testing.assert_allclose(np.array(doc["outputs"][1]["data"]).reshape(3, 2), clf.pipeline.predict_proba(frame))
    predict = call(app, "POST", "/predict", {"instances": [{"a": r[0], "b": r[1], "colour": r[2]} for r in rows]})
    assert predict.status == 200
    assert predict.json()["predictions"] == doc["outputs"][0]["data"]
    np.testing.assert_allclose(predict.json()["probabilities"], clf.pipeline.predict_proba(frame))


def test_routes_and_metadata(clf: ServedModel) -> None:
    app = app_for(clf)
    assert call(app, "GET", "/v2/health/live").status == 200
    assert call(app, "GET", "/v2/health/ready").json() == {"ready": True}
    assert call(app, "GET", "/v2").json()["extensions"] == ["binary_tensor_data"]
    for path in ("/v2/models/clf", "/v2/models/clf/versions/v1"):
        meta = call(app, "GET", path).json()
        assert meta["platform"] == "sklearn" and meta["versions"] == ["v1"]
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
            ("a", "FP64"),
            ("b", "FP64"),
            ("colour", "BYTES"),
        ]
        assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert call(app, "GET", "/v2/models/clf/versions/v1/ready").json() == {"name": "clf", "ready": True}


ERRORS = [
    ("GET", "/v2/models/other", b"", 404, "model 'other' is not served here"),
    ("GET", "/v2/models/clf/versions/v9", b"", 404, "has no version 'v9'"),
    ("POST", "/v2/models/other/infer", b"{}", 404, "not served here"),
    ("GET", "/v2/models/clf/infer", b"", 405, "use POST"),
    ("POST", "/v2/models/clf/explain", b"{}", 404, "no route"),
    ("GET", "/nowhere", b"", 404, "no route"),
    ("POST", "/v2/models/clf/infer", b'{"inputs": [', 400, "not valid JSON"),
    ("POST", "/v2/models/clf/infer", b"\xff\xfe", 400, "not valid JSON"),
    (
        "POST",
        "/v2/models/clf/infer",
        orjson.dumps({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": ["x"]}]}),
        400,
        "got strings",
    ),
    (
        "POST",
        "/v2/models/clf/infer",
        orjson.dumps(infer_body([(1, 2, "red")], outputs=[{"name": "proba"}])),
        400,
        "unknown output 'proba'",
    ),
    ("POST", "/predict", b'{"instances": 3}', 400, "'instances' must be"),
    ("POST", "/v2/models/clf/feedback", b'{"id": "x", "label": 1}', 409, "no monitoring store"),
    ("POST", "/v2/models/clf/feedback", b'{"id": "x"}', 400, "'label' is missing"),
    (
        "POST",
        "/v2/models/clf/feedback",
        b'{"labels": [{"id": "x", "row": -1, "label": 1}]}',
        400,
        "'row' must be a non-negative integer",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), ERRORS)
def test_errors_have_the_protocol_body(
    clf: ServedModel, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    reply = call(app_for(clf), method, path, body)
    assert reply.status == status
    assert reply.headers[b"content-type"] == b"application/json"
    assert message in reply.json()["error"]


@pytest.mark.parametrize("declared", ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_refused_with_the_protocol_body(clf: ServedModel, declared: str) -> None:
    good = orjson.dumps(infer_body([(1.0, 2.0, "red")]))
    for path in ("/v2/models/clf/infer", "/predict"):
        reply = call(app_for(clf), "POST", path, good, content_type=declared)
        assert reply.status == 400 and reply.headers[b"content-type"] == b"application/json"
        assert f"Content-Type {declared.partition(';')[0]!r} is not accepted" in reply.json()["error"]
    for accepted in ("application/json", "application/json; charset=utf-8"):
        reply = call(app_for(clf), "POST", "/v2/models/clf/infer", good, content_type=accepted)
        assert reply.status == 200, reply.json()


def test_null_in_fp64_data_is_refused_with_the_protocol_body(clf: ServedModel) -> None:
    doc = infer_body([(1.0, 2.0, "red")])
    numeric = next(t for t in doc["inputs"] if t["datatype"] in ("FP64", "FP32"))
    numeric["data"] = [None] * len(numeric["data"])
    reply = call(app_for(clf), "POST", "/v2/models/clf/infer", doc, content_type="application/json")
    assert reply.status == 400 and "is not an" in reply.json()["error"]


def test_oversized_body_is_413(clf: ServedModel) -> None:
    app = app_for(clf, max_body_bytes=1000)
    big = orjson.dumps(infer_body([(1.0, 2.0, "red")] * 100))
    assert call(app, "POST", "/v2/models/clf/infer", big).status == 413
    assert call(app, "POST", "/v2/models/clf/infer", big, content_length=str(len(big))).status == 413


def test_readiness_while_loading_failed_and_draining(clf: ServedModel) -> None:
    app = app_for(None)
    for path in ("/v2/health/ready", "/v2/models/clf/ready", "/v2/models/clf"):
        reply = call(app, "GET", path)
        assert (reply.status, reply.json()) == (503, {"error": "loading"})
    assert call(app, "GET", "/v2/health/live").status == 200
    app.dataplane.model_failed("model digest mismatch: expected sha256:aa, got sha256:bb")
    reply = call(app, "POST", "/v2/models/clf/infer", orjson.dumps(infer_body([(1, 2, "red")])))
    assert reply.status == 503 and "digest mismatch" in reply.json()["error"]
    ready = app_for(clf)
    ready.dataplane.start_draining()
    assert call(ready, "GET", "/v2/health/ready").json() == {"error": "shutting down"}
    served = call(ready, "POST", "/v2/models/clf/infer", orjson.dumps(infer_body([(1, 2, "red")])))
    assert served.status == 200 and served.headers[b"connection"] == b"close"


def _sample(metrics_text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_count_requests_rows_features_and_classes(clf: ServedModel) -> None:
    app = app_for(clf)
    rows = [(1.0, 2.0, "red"), (3.0, None, "blue")]
    body = infer_body(rows)  # b's missing value travels as NaN in binary data (a null in JSON data is refused)
    del body["inputs"][1]["data"]
    body["inputs"][1]["parameters"] = {"binary_data_size": 16}
    header = orjson.dumps(body)
    raw = header + np.array([2.0, np.nan], "<f8").tobytes()
    length = str(len(header))
    assert call(app, "POST", "/v2/models/clf/infer", raw, inference_header_content_length=length).status == 200
    assert call(app, "POST", "/v2/models/nope/infer", raw, inference_header_content_length=length).status == 404
    assert call(app, "GET", "/v2/models/clf/ready").status == 200  # probes are not requests
    text = call(app, "GET", "/metrics").body.decode()
    assert _sample(text, "conveyor_server_requests_total", model="clf", version="v1", code="200") == 1
    assert _sample(text, "conveyor_server_requests_total", model="clf", version="v1", code="404") == 1
    assert _sample(text, "conveyor_server_request_duration_seconds_count", model="clf", version="v1") == 2
    assert _sample(text, "conveyor_server_inflight_requests", model="clf") == 0
    assert _sample(text, "conveyor_server_input_rows_total", model="clf", version="v1") == 2
    assert _sample(text, "conveyor_server_input_feature_sum", feature="a") == 4.0
    assert _sample(text, "conveyor_server_input_feature_sum_squares", feature="a") == 10.0
    assert _sample(text, "conveyor_server_input_feature_sum", feature="b") == 2.0
    assert _sample(text, "conveyor_server_input_feature_missing_total", feature="b") == 1
    assert _sample(text, "conveyor_server_input_feature_missing_total", feature="colour") == 0
    predicted = clf.pipeline.predict(
        pd.DataFrame([(1.0, 2.0, "red"), (3.0, np.nan, "blue")], columns=["a", "b", "colour"])
    )
    total = sum(_sample(text, "conveyor_server_predictions_total", version="v1", **{"class": str(c)}) for c in (0, 1))
    assert total == 2 and _sample(text, "conveyor_server_predictions_total", **{"class": str(predicted[0])}) >= 1
    assert _sample(text, "conveyor_server_batch_size_count") == 1
    assert _sample(text, "conveyor_server_model_info", model="clf", version="v1", digest=DIGEST) == 1
    assert _sample(text, "conveyor_server_monitoring_dropped_total") == 0


def test_categorical_inputs_are_counted_by_training_category(clf: ServedModel) -> None:
    profile = [
        FeatureProfile(name="a", kind="numeric", count=200, missing=0, mean=0.0, std=1.0),
        FeatureProfile(name="b", kind="numeric", count=200, missing=0, mean=0.0, std=1.0),
        FeatureProfile(
            name="colour",
            kind="categorical",
            count=200,
            missing=0,
            distinct=2,
            top=[
                CategoryCount(value="red", count=104, frequency=0.52),
                CategoryCount(value="blue", count=96, frequency=0.48),
            ],
        ),
    ]
    model = ServedModel("clf", "v1", DIGEST, clf.pipeline, clf.metadata.model_copy(update={"profile": profile}))
    app = app_for(model)
    body = infer_body([(1.0, 2.0, "red"), (3.0, 1.0, "blue"), (0.0, 0.0, "red"), (0.0, 0.0, "' OR 1=1 --")])
    body["inputs"][2]["data"][1] = None
    assert call(app, "POST", "/v2/models/clf/infer", orjson.dumps(body)).status == 200
    predict = {"instances": [{"a": 1.0, "b": 1.0, "colour": "mauve"}, {"a": 1.0, "b": 1.0, "colour": "blue"}]}
    assert call(app, "POST", "/predict", orjson.dumps(predict)).status == 200
    text = call(app, "GET", "/metrics").body.decode()
    series = {
        (
            sample.labels["model"],
            sample.labels["version"],
            sample.labels["feature"],
            sample.labels["category"],
        ): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "conveyor_server_input_category_total"
    }
    assert series == {
        ("clf", "v1", "colour", "red"): 2,
        ("clf", "v1", "colour", "blue"): 1,
        ("clf", "v1", "colour", "__other__"): 2,
    }
    assert _sample(text, "conveyor_server_input_feature_missing_total", feature="colour") == 1


def test_regression_value_histogram() -> None:
    app = app_for(regressor())
    body = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [0.0, 1.0, 100.0]}]}
    reply = call(app, "POST", "/v2/models/reg/infer", orjson.dumps(body))
    assert reply.status == 200
    np.testing.assert_allclose(reply.json()["outputs"][0]["data"], [1.0, 4.0, 301.0])
    assert reply.json()["outputs"][0]["datatype"] == "FP64"
    text = call(app, "GET", "/metrics").body.decode()
    assert _sample(text, "conveyor_server_prediction_value_count", model="reg") == 3
    assert _sample(text, "conveyor_server_prediction_value_sum", model="reg") == pytest.approx(306.0)
    assert _sample(text, "conveyor_server_prediction_value_bucket", le="5.0") == 2
    proba = dict(body, outputs=[{"name": "predict_proba"}])
    assert call(app, "POST", "/v2/models/reg/infer", orjson.dumps(proba)).status == 400


def test_feedback_and_sampled_predictions_reach_the_store(clf: ServedModel, tmp_path: Path) -> None:
    dropped: list[int] = []
    buffer = MonitoringBuffer(
        DirectorySink(tmp_path), version="v1", digest=DIGEST, sample_rate=1.0, on_dropped=dropped.append
    )
    app = app_for(clf, monitoring=buffer)
    assert (
        call(app, "POST", "/v2/models/clf/infer", orjson.dumps(infer_body([(1, 2, "red")] * 2, id="q1"))).status == 200
    )
    reply = call(
        app,
        "POST",
        "/v2/models/clf/feedback",
        {"labels": [{"id": "q1", "row": 1, "label": 1}, {"id": "q1", "label": 0}]},
    )
    assert (reply.status, reply.json()) == (202, {"accepted": 2})
    buffer.flush()
    (predictions,) = (tmp_path / "predictions" / "v1").glob("*.jsonl")
    lines = [orjson.loads(line) for line in predictions.read_bytes().splitlines()]
    assert [(r["id"], r["row"], r["version"], r["digest"]) for r in lines] == [
        ("q1", 0, "v1", DIGEST),
        ("q1", 1, "v1", DIGEST),
    ]
    assert all(r["time"].endswith("Z") and r["prediction"] in (0, 1) for r in lines)
    (feedback,) = (tmp_path / "feedback").glob("*.jsonl")
    labels = [orjson.loads(line) for line in feedback.read_bytes().splitlines()]
    assert [(r["id"], r["row"], r["label"]) for r in labels] == [("q1", 1, 1), ("q1", 0, 0)]
    assert dropped == []
