"""Fuzzing the model server over real HTTP: hostile v2, /predict and feedback requests never get a 5xx.

Two real `python -m conveyor.serving` processes on loopback, started once for the module: an
all-numeric model in the train component's shape (so the numpy fast path serves it) and a mixed
model with a categorical feature (served by the full scikit-learn pipeline, with a monitoring
directory so feedback is accepted). Hypothesis sends them random JSON, type-confused and
mismatched tensors, NaN/inf/huge numbers, deep nesting, binary-extension bodies whose lengths lie,
huge declared shapes, unicode, wrong methods, paths and content types, and concurrent mixes of
good and bad requests (so a bad request shares a micro-batch with good ones).

Properties: every answer is a 2xx whose outputs have the right length, or a 4xx with the
protocol's `{"error": "<message>"}` body; never a 5xx, never a dropped connection; the servers stay
live and ready; their resident memory grows by less than `RSS_GROWTH_BOUND` over the run.
The counters land in `fuzz.figures` (printed at the end of the session).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import socket
import struct
import sys
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, save_artifact
from conveyor.storage.digest import sha256_file
from fuzz.figures import FIGURES
from testenv.processes import ServerProcess, free_port, wait_until

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
MAX_BODY = 1 << 20
"""The servers' --max-request-bytes: 1 MiB, so oversized bodies are cheap to send (the default is 64 MiB)."""
RSS_GROWTH_BOUND = 32 << 20
"""Resident memory may grow by at most this much between warm-up and the end of the module."""
NUMERIC = ["f0", "f1", "f2", "f3"]
MIXED = ["a", "b", "colour"]
READY_TIMEOUT = 180.0


# -- the servers -----------------------------------------------------------------------------------


def _numeric_artifact(path: Path) -> None:
    """The train component's shape: imputer and scaler over named columns, then a classifier."""
    import pandas as pd  # type: ignore[import-untyped]
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 4)), columns=NUMERIC)
    y = (frame["f0"] + frame["f1"] > 0).astype(int)
    pipeline = Pipeline(
        [
            ("preprocess", ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC)])),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, y)
    meta = ArtifactMetadata(
        kind="model",
        estimator="sklearn.linear_model.LogisticRegression",
        task="classification",
        label="y",
        classes=[0, 1],
        inputs=[FeatureSpec(name=n, dtype="float64") for n in NUMERIC],
    )
    save_artifact(pipeline, path, meta)


def _mixed_artifact(path: Path) -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"a": rng.normal(size=200), "b": rng.normal(size=200), "colour": rng.choice(["red", "blue", "green"], 200)}
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
    save_artifact(pipeline, path, meta)


@dataclass
class Server:
    name: str
    features: list[str]
    port: int
    process: ServerProcess

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        """Resident set size in bytes, from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def wait_ready(self) -> None:
        wait_until(
            lambda: self.status("/v2/health/ready") == 200,
            timeout=READY_TIMEOUT,
            what=f"model server {self.name} ready",
            interval=0.2,
            process=self.process,
        )

    def status(self, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            reply.read()
            return reply.status
        finally:
            conn.close()


def _start(tmp: Path, name: str, features: list[str], artifact: Path, *extra: str) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "conveyor.serving",
        "--model-name",
        name,
        "--model-uri",
        artifact.as_uri(),
        "--model-digest",
        sha256_file(artifact),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--work-dir",
        str(tmp),
        "--max-request-bytes",
        str(MAX_BODY),
        "--drain-seconds",
        "0",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = ServerProcess(f"model-server-{name}", argv, tmp / f"server-{name}.log", env=env).start()
    return Server(name, features, port, process)


@dataclass
class Servers:
    numeric: Server
    mixed: Server
    rss_before: dict[str, int]

    def __iter__(self) -> Iterator[Server]:
        return iter((self.numeric, self.mixed))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("fuzz-serving")
    _numeric_artifact(tmp / "numeric.model")
    _mixed_artifact(tmp / "mixed.model")
    numeric = _start(tmp, "num", NUMERIC, tmp / "numeric.model")
    mixed = _start(tmp, "mix", MIXED, tmp / "mixed.model", "--monitoring-uri", (tmp / "monitoring").as_uri())
    try:
        for server in (numeric, mixed):
            server.wait_ready()
        pair = Servers(numeric, mixed, {})
        # Warm-up: every code path once (valid tensor, binary, per-feature, predict, feedback, an
        # oversized body), so the baseline already holds the imports, caches and arenas they need.
        for server in pair:
            with Wire(server) as wire:
                for _ in range(20):
                    for request in _warm_up(server):
                        wire.send(request)
        pair.rss_before = {s.name: s.rss() for s in pair}
        yield pair
    finally:
        for server in (numeric, mixed):
            server.process.stop()


# -- sending and checking --------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] | None = None
    kind: str = "other"
    rows: int | None = None
    """For a request that may be valid: how many rows a 200 must answer for."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Dropped(AssertionError):
    """The server closed the connection or reset it instead of answering."""


class Wire:
    """One keep-alive HTTP/1.1 connection; a closed or reset connection is a failure, not a retry."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def send(self, request: Request) -> Answer:
        headers = {"Content-Length": str(len(request.body)), **(request.headers or {})}
        try:
            self.conn.request(request.method, request.path, body=request.body, headers=headers)
            reply = self.conn.getresponse()
            body = reply.read()
        except (http.client.HTTPException, OSError) as exc:
            FIGURES["model server: dropped connections"] += 1
            self.conn.close()
            raise Dropped(f"{request.method} {request.path}: {type(exc).__name__}: {exc}") from exc
        answer = Answer(reply.status, {k.lower(): v for k, v in reply.getheaders()}, body)
        if answer.headers.get("connection", "").lower() == "close":
            FIGURES["model server: connections closed by the server"] += 1
            self.conn.close()
        return answer


def check(server: Server, request: Request, answer: Answer) -> None:
    """The properties every answer must have."""
    FIGURES["model server: requests sent"] += 1
    FIGURES[f"model server: {request.kind} requests"] += 1
    FIGURES[f"model server: answered {answer.status // 100}xx"] += 1
    context = f"{request.method} {request.path} {request.headers} {request.body[:300]!r} -> {answer.status} {answer.body[:300]!r}"
    assert answer.status < 500, context
    if request.method == "HEAD":
        return
    if answer.status >= 400:
        assert answer.headers.get("content-type") == "application/json", context
        document = json.loads(answer.body)
        assert isinstance(document, dict) and list(document) == ["error"], context
        assert isinstance(document["error"], str) and document["error"], context
        return
    assert 200 <= answer.status < 300, context
    if request.kind.startswith("infer"):
        _check_infer_outputs(request, answer, context)
    elif request.kind == "predict":
        document = json.loads(answer.body)
        assert request.rows is not None, context
        assert len(document["predictions"]) == request.rows, context
        if "probabilities" in document:
            assert np.asarray(document["probabilities"]).shape == (request.rows, 2), context
    elif request.kind == "feedback":
        assert answer.status == 202, context
        assert json.loads(answer.body)["accepted"] >= 1, context


_ITEMSIZE = {"BOOL": 1, "INT64": 8, "FP64": 8, "FP32": 4, "INT32": 4}


def _check_infer_outputs(request: Request, answer: Answer, context: str) -> None:
    header_length = answer.headers.get("inference-header-content-length")
    raw = answer.body if header_length is None else answer.body[: int(header_length)]
    document = json.loads(raw)
    assert request.rows is not None, context
    blob = b"" if header_length is None else answer.body[int(header_length) :]
    offset = 0
    assert document["outputs"], context
    for output in document["outputs"]:
        shape = output["shape"]
        assert shape[0] == request.rows, context
        expected_shape = [request.rows] if output["name"] == "predict" else [request.rows, 2]
        assert shape == expected_shape, context
        count = math.prod(shape)
        if "data" in output:
            assert len(output["data"]) == count, context
        else:
            size = output["parameters"]["binary_data_size"]
            assert size == count * _ITEMSIZE[output["datatype"]], context
            offset += size
    assert offset == len(blob), context


def exchange(server: Server, wire: Wire, request: Request) -> None:
    check(server, request, wire.send(request))


# -- strategies ------------------------------------------------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)
NASTY_NUMBERS = st.sampled_from(
    [0, -0.0, 1e308, -1e308, 5e-324, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, 10**30, math.nan, math.inf, -math.inf]
)
TEXT = st.text(max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), FINITE, NASTY_NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(TEXT, children, max_size=5)),
    max_leaves=25,
)
DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
DATATYPE = st.one_of(
    st.sampled_from(DATATYPES), st.sampled_from(["fp64", "FP", "FLOAT", "", "STRING"]), st.none(), st.integers(), TEXT
)
DIM = st.one_of(
    st.integers(0, 6),
    st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1, -1, -(2**31)]),
    st.sampled_from([True, 1.5, "3", None, [2]]),
)
SHAPE = st.one_of(st.lists(DIM, max_size=10), JSON)
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "text/plain", "application/octet-stream", "multipart/form-data; boundary=x", "ü/ü", ""]
)


def _dumps(document: Any) -> bytes:
    """Python's JSON writer: big integers, and NaN/Infinity as the non-standard tokens clients do send."""
    return json.dumps(document, allow_nan=True).encode()


def _infer_path(server: Server, draw: st.DrawFn) -> str:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return f"/v2/models/{server.name}/versions/{draw(st.sampled_from(['v1', '', 'x' * 300]))}/infer"
    if choice == 1:
        return f"/v2/models/{urllib.parse.quote(draw(TEXT)) or 'x'}/infer"
    return f"/v2/models/{server.name}/infer"


def _values(draw: st.DrawFn, datatype: str, count: int) -> list[Any]:
    """`count` values that fit the datatype most of the time, and sometimes do not."""
    if datatype == "BYTES":
        element = st.one_of(st.sampled_from(["red", "blue", "green", "", "1.5"]), TEXT)
    elif datatype == "BOOL":
        element = st.booleans()
    elif datatype.startswith(("INT", "UINT")):
        element = st.integers(-(2**70), 2**70) if draw(st.booleans()) else st.integers(-100, 100)
    else:
        element = st.one_of(FINITE, st.floats(-10, 10)) if draw(st.booleans()) else st.floats(-10, 10)
    if draw(st.integers(0, 9)) == 0:
        element = st.one_of(element, SCALARS)  # type confusion
    return [draw(element) for _ in range(count)]


@st.composite
def tensor_requests(draw: st.DrawFn, server: Server) -> Request:
    """v2 JSON infer requests: near-valid tensors (matrix or per feature), then broken in one way or more."""
    rows = draw(st.integers(0, 8))
    width = len(server.features)
    per_feature = draw(st.booleans())
    numeric_types = ["FP64", "FP32", "INT64", "INT32", "FP16", "UINT8", "BOOL"]
    inputs: list[dict[str, Any]] = []
    if per_feature:
        for feature in server.features:
            datatype = "BYTES" if feature == "colour" else draw(st.sampled_from(numeric_types))
            shape = [rows] if draw(st.booleans()) else [rows, 1]
            inputs.append(
                {"name": feature, "shape": shape, "datatype": datatype, "data": _values(draw, datatype, rows)}
            )
    else:
        datatype = draw(st.sampled_from([*numeric_types, "BYTES"] if "colour" in server.features else numeric_types))
        if "colour" in server.features:
            datatype = "BYTES" if draw(st.booleans()) else datatype
        data = _values(draw, datatype, rows * width)
        if datatype == "BYTES" and data and draw(st.booleans()):
            data = [str(draw(st.floats(-5, 5))) if i % width != 2 else v for i, v in enumerate(data)]
        inputs.append({"name": "input-0", "shape": [rows, width], "datatype": datatype, "data": data})
    document: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        document["id"] = draw(st.one_of(TEXT, st.integers(), st.text(min_size=250, max_size=300)))
    if draw(st.booleans()):
        names = st.sampled_from(["predict", "predict_proba", "proba", ""])
        document["outputs"] = [
            {"name": draw(names), "parameters": {"binary_data": draw(st.one_of(st.booleans(), SCALARS))}}
            for _ in range(draw(st.integers(0, 2)))
        ]
    if draw(st.integers(0, 3)) == 0:
        document["parameters"] = {"binary_data_output": draw(st.one_of(st.booleans(), SCALARS))}
    mutations = draw(st.lists(st.integers(0, 11), max_size=3))
    for mutation in mutations:
        tensors = [t for t in inputs if isinstance(t, dict)]
        tensor = tensors[draw(st.integers(0, len(tensors) - 1))] if tensors else {}
        if mutation == 0 and tensor:  # shape and data disagree
            tensor["shape"] = [rows + draw(st.integers(1, 3)), *list(tensor.get("shape") or [])[1:]]
        elif mutation == 1 and tensor:  # a huge declared shape over small data
            tensor["shape"] = draw(st.sampled_from([[2**31, width], [2**40, 2**40], [2**62, 2], [1, 2**63 - 1]]))
        elif mutation == 2 and tensor:
            tensor["shape"] = draw(SHAPE)
        elif mutation == 3 and tensor:
            tensor["datatype"] = draw(DATATYPE)
        elif mutation == 4 and tensor:
            tensor["data"] = draw(JSON)
        elif mutation == 5 and tensor:  # nested row-major data, or nested deeper than the shape
            depth = draw(st.integers(1, 40))
            value: Any = tensor.get("data", [])
            for _ in range(depth):
                value = [value]
            tensor["data"] = value
        elif mutation == 6 and tensor:
            tensor["name"] = draw(st.one_of(TEXT, st.integers(), st.none(), st.sampled_from(NUMERIC + MIXED)))
        elif mutation == 7:
            inputs.append(dict(tensor) if tensor and draw(st.booleans()) else draw(JSON))
        elif mutation == 8 and tensor:
            tensor.pop(draw(st.sampled_from(["name", "shape", "datatype", "data"])), None)
        elif mutation == 9:
            document[draw(st.sampled_from(["inputs", "outputs", "parameters", "id"]))] = draw(JSON)
        elif mutation == 10 and tensor:
            tensor["parameters"] = draw(JSON)
        elif mutation == 11 and tensor and isinstance(tensor.get("data"), list) and tensor["data"]:
            index = draw(st.integers(0, len(tensor["data"]) - 1))
            tensor["data"][index] = draw(st.one_of(NASTY_NUMBERS, TEXT, st.none(), JSON))
    valid_rows = rows if not mutations else None
    return Request(
        "POST",
        _infer_path(server, draw),
        _dumps(document),
        _content_type(draw),
        kind="infer-json",
        rows=valid_rows if valid_rows is not None else _declared_rows(document),
    )


def _declared_rows(document: dict[str, Any]) -> int | None:
    """The rows a request claims (its first tensor's first dimension): what a 200 must answer for."""
    with contextlib.suppress(Exception):
        value = document["inputs"][0]["shape"][0]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _content_type(draw: st.DrawFn) -> dict[str, str]:
    content_type = draw(CONTENT_TYPES)
    return {} if content_type is None else {"Content-Type": content_type}


_STRUCT = {"FP64": "<d", "FP32": "<f", "INT64": "<q", "INT32": "<i", "UINT8": "<B", "BOOL": "<?"}


def _pack(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in map(str, values))
    fmt = _STRUCT[datatype]
    return b"".join(struct.pack(fmt, v) for v in values)


@st.composite
def binary_requests(draw: st.DrawFn, server: Server) -> Request:
    """Binary tensor extension bodies: a JSON header, then tensors; the lengths tell the truth or lie."""
    rows = draw(st.integers(0, 6))
    width = len(server.features)
    if "colour" in server.features:
        specs = [
            ("a", "FP64", [draw(st.floats(-5, 5)) for _ in range(rows)]),
            ("b", "FP32", [draw(st.floats(-5, 5, width=32)) for _ in range(rows)]),
            ("colour", "BYTES", [draw(st.sampled_from(["red", "blue", "ü"])) for _ in range(rows)]),
        ]
        shapes = [[rows]] * 3
    else:
        datatype = draw(st.sampled_from(["FP64", "FP32", "INT64", "INT32", "UINT8", "BOOL"]))
        strategy = {"BOOL": st.booleans(), "UINT8": st.integers(0, 255)}.get(
            datatype, st.integers(-1000, 1000) if datatype.startswith("INT") else st.floats(-5, 5, width=32)
        )
        specs = [("input-0", datatype, [draw(strategy) for _ in range(rows * width)])]
        shapes = [[rows, width]]
    blobs = [_pack(datatype, values) for _, datatype, values in specs]
    sizes: list[Any] = [len(b) for b in blobs]
    lies = draw(st.lists(st.integers(0, 6), max_size=3))
    for lie in lies:
        i = draw(st.integers(0, len(specs) - 1))
        if lie == 0 and isinstance(sizes[i], int):
            sizes[i] = sizes[i] + draw(st.integers(-16, 16))
        elif lie == 1:
            sizes[i] = draw(st.sampled_from([2**31, 2**63 - 1, 2**64, -1, "8", None, 1.0, True]))
        elif lie == 2:
            shapes[i] = draw(st.sampled_from([[2**40, width], [2**31], [rows + 1, width], [2**62, 2**62]]))
        elif lie == 3:
            blobs[i] = blobs[i][: draw(st.integers(0, len(blobs[i])))]
        elif lie == 4:
            blobs[i] = draw(st.binary(max_size=64))
        elif lie == 5:  # a BYTES element whose length prefix overruns, or is huge
            blobs[i] = struct.pack("<I", draw(st.sampled_from([2**32 - 1, 2**31, 5]))) + b"ab"
    header = {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}
            for (name, datatype, _), shape, size in zip(specs, shapes, sizes, strict=True)
        ]
    }
    if draw(st.booleans()):
        header["outputs"] = [{"name": "predict_proba", "parameters": {"binary_data": True}}]
    if draw(st.booleans()):
        header["parameters"] = {"binary_data_output": True}
    head = _dumps(header)
    body = head + b"".join(blobs) + (draw(st.binary(max_size=8)) if draw(st.integers(0, 4)) == 0 else b"")
    length: str = str(len(head))
    style = draw(st.integers(0, 7))
    if style == 1:
        length = str(len(head) + draw(st.integers(-20, 20)))
    elif style == 2:
        length = draw(st.sampled_from(["-1", "0", "1e3", "0x10", " 12 ", "", "9" * 30, str(len(body) + 1), "\u00b2"]))
    headers = {"Content-Type": "application/octet-stream"}
    if style != 3:  # 3: no header at all, binary_data_size without it
        headers["Inference-Header-Content-Length"] = length
    truthful = not lies and style in (0, 4, 5, 6, 7)
    return Request(
        "POST",
        f"/v2/models/{server.name}/infer",
        body,
        headers,
        kind="infer-binary",
        rows=rows if truthful else shapes[0][0],
    )


@st.composite
def predict_requests(draw: st.DrawFn, server: Server) -> Request:
    rows = draw(st.integers(0, 6))
    names = server.features
    value = st.one_of(st.floats(-5, 5), st.integers(-5, 5), st.sampled_from(["red", "blue"]))
    if draw(st.booleans()):
        instances: Any = [[draw(value) for _ in names] for _ in range(rows)]
    else:
        instances = [{n: draw(value) for n in names if draw(st.integers(0, 4))} for _ in range(rows)]
    mutated = False
    for mutation in draw(st.lists(st.integers(0, 5), max_size=2)):
        mutated = True
        rows_list = isinstance(instances, list) and bool(instances)
        if mutation == 0 and rows_list:
            instances[draw(st.integers(0, len(instances) - 1))] = draw(JSON)
        elif mutation == 1:
            instances = draw(JSON)
        elif mutation == 2 and rows_list and isinstance(instances[0], list) and instances[0]:
            instances[0][0] = draw(st.one_of(NASTY_NUMBERS, JSON))
        elif mutation == 3 and rows_list and isinstance(instances[0], dict):
            instances[0][draw(TEXT)] = draw(SCALARS)
        elif mutation == 4 and rows_list and isinstance(instances[0], list):
            instances[0] = instances[0][: draw(st.integers(0, len(names)))] + draw(st.lists(SCALARS, max_size=2))
        elif mutation == 5:
            instances = {"instances": instances}
    document: Any = {"instances": instances}
    if draw(st.integers(0, 4)) == 0:
        document["id"] = draw(st.one_of(TEXT, st.integers(), st.none()))
        mutated = True
    if draw(st.integers(0, 9)) == 0:
        document = draw(JSON)
        mutated = True
    rows_claimed = len(instances) if isinstance(instances, list) else None
    return Request(
        "POST",
        "/predict",
        _dumps(document),
        _content_type(draw),
        kind="predict",
        rows=rows if not mutated else rows_claimed,
    )


@st.composite
def feedback_requests(draw: st.DrawFn, server: Server) -> Request:
    label = {
        "id": draw(
            st.one_of(st.text(min_size=1, max_size=20), st.integers(), st.none(), st.text(min_size=257, max_size=260))
        ),
        "row": draw(st.one_of(st.integers(0, 10), st.integers(), st.booleans(), TEXT)),
        "label": draw(st.one_of(st.integers(0, 1), SCALARS, JSON)),
    }
    for key in draw(st.lists(st.sampled_from(["id", "row", "label"]), max_size=2)):
        label.pop(key, None)
    shape = draw(st.integers(0, 3))
    document: Any
    if shape == 0:
        document = label
    elif shape == 1:
        document = {"labels": [label] * draw(st.integers(0, 5))}
    elif shape == 2:
        document = {"labels": draw(JSON)}
    else:
        document = draw(JSON)
    if draw(st.integers(0, 19)) == 0:
        document = {"labels": [label] * 10_001}
    return Request("POST", f"/v2/models/{server.name}/feedback", _dumps(document), _content_type(draw), kind="feedback")


ROUTES = [
    "/",
    "/v2",
    "/v2/",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/health",
    "/metrics",
    "/predict",
    "/v2/models",
    "/v2/models/",
    "/v2/models//infer",
    "/v2/models/{name}",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/feedback",
    "/v2/models/{name}/versions",
    "/v2/models/{name}/versions/",
    "/v2/models/{name}/versions/x/infer/more",
    "/v2/models/{name}/infer/",
    "/v2/models/{name}/../../metrics",
    "/v2/models/%2e%2e/infer",
    "/v2/models/{name}/infer?x=1",
]


@st.composite
def wild_requests(draw: st.DrawFn, server: Server) -> Request:
    """Any method on any path, with bodies that are not requests at all."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]))
    if draw(st.integers(0, 3)) == 0:
        segments = draw(st.lists(st.text(max_size=8), max_size=6))
        path = "/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)
    else:
        path = draw(st.sampled_from(ROUTES)).replace("{name}", server.name)
    body_kind = draw(st.integers(0, 6))
    if body_kind == 0:
        body = b""
    elif body_kind == 1:
        body = draw(st.binary(max_size=200))
    elif body_kind == 2:
        body = draw(st.text(max_size=100)).encode()
    elif body_kind == 3:
        body = _dumps(draw(JSON))
    elif body_kind == 4:  # deep nesting, closed or not
        depth = draw(st.integers(1, 20_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"inputs":[', "]}")]))
        body = (opener * depth + "1" + (closer * depth if draw(st.booleans()) else "")).encode()
    elif body_kind == 5:
        body = draw(
            st.sampled_from([b"null", b"true", b"0", b'""', b"[]", b"{}", b"\xef\xbb\xbf{}", b'{"inputs": []}'])
        )
    else:
        body = b"".join(
            draw(st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b",", b":", b'"', b"1", b"\\"]), max_size=60))
        )
    return Request(method, path, body, _content_type(draw), kind="wild")


def _requests(server: Server) -> st.SearchStrategy[Request]:
    return st.one_of(
        tensor_requests(server),
        binary_requests(server),
        predict_requests(server),
        feedback_requests(server),
        wild_requests(server),
    )


def _warm_up(server: Server) -> list[Request]:
    width = len(server.features)
    if "colour" in server.features:
        tensor = {
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "FP64", "data": [0.1, 0.2]},
                {"name": "b", "shape": [2], "datatype": "FP64", "data": [0.3, -1.0]},
                {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
            ]
        }
        instances: list[Any] = [[0.1, 0.2, "red"], [0.0, 1.0, "green"]]
    else:
        tensor = {"inputs": [{"name": "input-0", "shape": [2, width], "datatype": "FP64", "data": [0.5] * 2 * width}]}
        instances = [[0.5] * width, [0.1] * width]
    path = f"/v2/models/{server.name}/infer"
    head = _dumps({"inputs": [dict(t, parameters={"binary_data_size": 0}) for t in tensor["inputs"]]})
    return [
        Request("POST", path, _dumps(tensor), kind="infer-json", rows=2),
        Request("POST", path, _dumps({**tensor, "outputs": [{"name": "predict_proba"}]}), kind="infer-json", rows=2),
        Request("POST", "/predict", _dumps({"instances": instances}), kind="predict", rows=2),
        Request("POST", path, head, {"Inference-Header-Content-Length": str(len(head))}, kind="infer-binary"),
        Request("POST", f"/v2/models/{server.name}/feedback", b'{"id": "r1", "label": 1}', kind="feedback"),
        Request("POST", path, b"[" * (MAX_BODY + 1), kind="oversized"),
        Request("GET", "/metrics"),
    ]


# -- the tests -------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=1000)
@given(data=st.data())
def test_single_requests_get_a_2xx_or_a_4xx_with_an_error_body(servers: Servers, data: st.DataObject) -> None:
    server = data.draw(st.sampled_from([servers.numeric, servers.mixed]))
    request = data.draw(_requests(server))
    with Wire(server) as wire:
        exchange(server, wire, request)


RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "FP16": (-65504, 65504),
    "FP32": (-3.4028234663852886e38, 3.4028234663852886e38),
}


@st.composite
def out_of_range(draw: st.DrawFn) -> tuple[str, Any]:
    datatype = draw(st.sampled_from(sorted(RANGES)))
    low, high = RANGES[datatype]
    if datatype.startswith("FP"):
        magnitude = draw(st.floats(min_value=high * 1.01, max_value=1e308))
        return datatype, magnitude if draw(st.booleans()) else -magnitude
    above = draw(st.booleans()) or low == 0
    if above:
        return datatype, draw(st.integers(high + 1, max(high + 1, 2**64 - 1)))
    return datatype, draw(st.integers(-(2**63), low - 1)) if low > -(2**63) else low - 1


@settings(FUZZ, max_examples=100)
@given(case=out_of_range(), position=st.integers(0, 7), per_feature=st.booleans())
def test_values_outside_the_datatype_are_refused_not_wrapped(
    servers: Servers, case: tuple[str, Any], position: int, per_feature: bool
) -> None:
    """1000 as INT8 must not be served as -24, nor 1e300 as FP32 as infinity (the fuzzer found both), in one
    [2, 4] tensor or in one [2] tensor per feature (which the codec decodes in one block)."""
    datatype, value = case
    data: list[Any] = [1] * 8
    data[position] = value
    if per_feature:
        inputs = [
            {"name": name, "shape": [2], "datatype": datatype, "data": [data[row * 4 + i] for row in range(2)]}
            for i, name in enumerate(NUMERIC)
        ]
        named = repr(NUMERIC[position % 4])
    else:
        inputs = [{"name": "input-0", "shape": [2, 4], "datatype": datatype, "data": data}]
        named = "'input-0'"
    request = Request("POST", "/v2/models/num/infer", _dumps({"inputs": inputs}), kind="infer-out-of-range")
    with Wire(servers.numeric) as wire:
        answer = wire.send(request)
    check(servers.numeric, request, answer)
    assert answer.status == 400, (case, answer)
    error = json.loads(answer.body)["error"]
    assert named in error or "not valid JSON" in error, error  # past 64 bits, orjson refuses the body


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_concurrent_mixes_share_batches_without_harming_each_other(servers: Servers, data: st.DataObject) -> None:
    """Good and bad requests at once: the bad ones get 4xx, the good ones their own rows, none a 5xx."""
    server = data.draw(st.sampled_from([servers.numeric, servers.mixed]))
    batch = data.draw(st.lists(_requests(server), min_size=4, max_size=16))
    FIGURES["model server: concurrent batches"] += 1

    def one(request: Request) -> tuple[Request, Answer]:
        with Wire(server) as wire:
            return request, wire.send(request)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for request, answer in pool.map(one, batch):
            check(server, request, answer)


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_one_keep_alive_connection_survives_a_stream_of_hostile_requests(servers: Servers, data: st.DataObject) -> None:
    """Many requests down one connection: a bad one never poisons the connection for the next."""
    server = data.draw(st.sampled_from([servers.numeric, servers.mixed]))
    with Wire(server) as wire:
        for request in data.draw(st.lists(_requests(server), min_size=1, max_size=6)):
            exchange(server, wire, request)


@pytest.mark.parametrize("declared", [MAX_BODY + 1, 10**12, 2**63 - 1])
def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(servers: Servers, declared: int) -> None:
    """A Content-Length past the limit gets 413 at once: the server does not wait for, or allocate, the body."""
    for server in servers:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                f"POST /v2/models/{server.name}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode()
                + b"{" * 100
            )
            reply = _read_reply(sock)
        FIGURES["model server: requests sent"] += 1
        FIGURES["model server: oversized requests"] += 1
        FIGURES[f"model server: answered {reply.status // 100}xx"] += 1
        assert reply.status == 413, reply
        assert "over the limit" in json.loads(reply.body)["error"]


def test_oversized_bodies_sent_in_full_are_refused(servers: Servers) -> None:
    for server in servers:
        with Wire(server) as wire:
            for size in (MAX_BODY + 1, 2 * MAX_BODY, 4 * MAX_BODY):
                body = _dumps(
                    {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0] * (size // 5)}]}
                )
                request = Request(
                    "POST", f"/v2/models/{server.name}/infer", body[: max(size, MAX_BODY + 1)], kind="oversized"
                )
                answer = wire.send(request)
                check(server, request, answer)
                assert answer.status == 413
                if answer.headers.get("connection", "").lower() == "close":
                    wire.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)


def _read_reply(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise Dropped(f"connection closed before a reply: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(status, headers, body[:length])


def test_servers_stay_live_and_ready_with_bounded_memory(servers: Servers) -> None:
    """Runs last in the module: after everything above, both servers answer, and memory stayed bounded."""
    for server in servers:
        server.process.check_running()
        assert server.status("/v2/health/live") == 200
        assert server.status("/v2/health/ready") == 200
        assert server.status(f"/v2/models/{server.name}/ready") == 200
        with Wire(server) as wire:
            for request in _warm_up(server):
                exchange(server, wire, request)
        after = server.rss()
        before = servers.rss_before[server.name]
        growth = after - before
        FIGURES[f"model server {server.name}: RSS before fuzzing, MiB"] = before >> 20
        FIGURES[f"model server {server.name}: RSS after fuzzing, MiB"] = after >> 20
        assert growth < RSS_GROWTH_BOUND, (
            f"{server.name}: RSS grew by {growth >> 20} MiB ({before >> 20} -> {after >> 20})"
        )
