"""The v2 codec: request decoding (JSON and binary tensors), mapping onto the signature, response encoding."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from conveyor.serving.codec import (
    OutputTensor,
    Signature,
    encode_infer_response,
    parse_infer_request,
    parse_instances,
    to_rows,
)
from conveyor.serving.errors import BadRequest

NUMERIC = Signature(["a", "b", "c"], [True, True, True])
MIXED = Signature(["size", "colour"], [True, False])


def body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def binary_body(inputs: list[dict[str, Any]], blobs: list[bytes], **extra: Any) -> tuple[bytes, int]:
    header = orjson.dumps({"inputs": inputs, **extra})
    return header + b"".join(blobs), len(header)


def bytes_elements(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


# -- decoding: what a good request turns into -----------------------------------------------------


GOOD = [
    pytest.param(
        body([{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]),
        None,
        [[1, 2, 3], [4, 5, 6]],
        id="matrix-flat-json",
    ),
    pytest.param(
        body([{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 3], [4, 5, 6]]}]),
        None,
        [[1, 2, 3], [4, 5, 6]],
        id="matrix-nested-json",
    ),
    pytest.param(
        body([{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [7, 8, 9]}]),
        None,
        [[7, 8, 9]],
        id="matrix-int",
    ),
    pytest.param(
        body([{"name": n, "shape": [2], "datatype": "FP64", "data": [i, i + 10]} for i, n in enumerate("cab")]),
        None,
        [[1, 2, 0], [11, 12, 10]],
        id="per-feature-any-order",
    ),
    pytest.param(
        body([{"name": n, "shape": [1, 1], "datatype": "FP32", "data": [[1.5]]} for n in "abc"]),
        None,
        [[1.5, 1.5, 1.5]],
        id="per-feature-column-vectors",
    ),
    pytest.param(
        *binary_body(
            [{"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}],
            [np.arange(6, dtype="<f4").tobytes()],
        ),
        [[0, 1, 2], [3, 4, 5]],
        id="binary-fp32",
    ),
    pytest.param(
        *binary_body(
            [
                {"name": "a", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}},
                {"name": "b", "shape": [2], "datatype": "INT32", "data": [5, 6]},
                {"name": "c", "shape": [2], "datatype": "UINT8", "parameters": {"binary_data_size": 2}},
            ],
            [np.array([1.0, 2.0], "<f8").tobytes(), bytes([9, 10])],
        ),
        [[1, 5, 9], [2, 6, 10]],
        id="binary-and-json-mixed",
    ),
    pytest.param(  # a missing value in a numeric tensor: NaN in binary data (JSON has no NaN, and null is refused)
        *binary_body(
            [{"name": "x", "shape": [1, 3], "datatype": "FP64", "parameters": {"binary_data_size": 24}}],
            [np.array([1.0, np.nan, 3.0], "<f8").tobytes()],
        ),
        [[1, np.nan, 3]],
        id="nan-in-binary-is-missing",
    ),
]


@pytest.mark.parametrize(("raw", "header", "expected"), GOOD)
def test_decodes_into_the_signature_order(raw: bytes, header: int | None, expected: list[list[float]]) -> None:
    rows = to_rows(parse_infer_request(raw, header).inputs, NUMERIC)
    assert rows.matrix is not None and rows.matrix.dtype == np.float64
    np.testing.assert_array_equal(rows.matrix, np.array(expected, dtype=np.float64))
    assert rows.count == len(expected)
    for i, column in enumerate(rows.columns):
        np.testing.assert_array_equal(column, rows.matrix[:, i])


def test_bytes_columns_json_and_binary() -> None:
    json_request = body(
        [
            {"name": "size", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
        ]
    )
    raw, header = binary_body(
        [
            {"name": "size", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "colour", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 15}},
        ],
        [bytes_elements(b"red", b"blue")],
    )
    for request, length in ((json_request, None), (raw, header)):
        rows = to_rows(parse_infer_request(request, length).inputs, MIXED)
        assert rows.matrix is None
        assert rows.columns[0].tolist() == [1.0, 2.0]
        assert rows.columns[1].dtype == object and rows.columns[1].tolist() == ["red", "blue"]


def test_request_id_echoed_or_generated_and_outputs_read() -> None:
    tensor = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    request = parse_infer_request(
        body([tensor], id="abc", outputs=[{"name": "predict_proba", "parameters": {"binary_data": True}}])
    )
    assert request.id == "abc"
    assert [(o.name, o.binary) for o in request.outputs] == [("predict_proba", True)]
    generated = parse_infer_request(body([tensor], parameters={"binary_data_output": True}))
    assert len(generated.id) == 32 and generated.binary_output and generated.outputs == []


# -- decoding: every bad request is a BadRequest naming what is wrong ------------------------------

T = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}

BAD: list[Any] = [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    (orjson.dumps({"inputs": []}), None, "'inputs' must be a non-empty list"),
    (body([{**T, "name": ""}]), None, "'name' must be a non-empty string"),
    (body([T, T]), None, "appears twice"),
    (body([{**T, "datatype": "FLOAT"}]), None, "unknown datatype 'FLOAT'"),
    (body([{**T, "shape": [1, -3]}]), None, "'shape' must be a list"),
    (body([{**T, "shape": "1,3"}]), None, "'shape' must be a list"),
    (body([{**T, "data": [1, 2]}]), None, "has 2 elements, 'shape' says 3"),
    (body([{**T, "data": ["1", "2", "3"]}]), None, "got strings for datatype FP32"),
    (body([{**T, "data": [1, "a", 3]}]), None, "got strings for datatype FP32"),
    (body([{**T, "data": [[1, 2], [3]]}]), None, "ragged"),
    (body([{**T, "datatype": "FP64", "data": [1, None, 3]}]), None, "null at element 1 is not an FP64 number"),
    (body([{**T, "data": [None, None, None]}]), None, "null at element 0 is not an FP32 number"),
    (body([{**T, "data": [True, False, True]}]), None, "booleans for datatype FP32"),
    (body([{**T, "datatype": "INT32", "data": [1.5, 2, 3]}]), None, "floats for datatype INT32"),
    (body([{**T, "data": {"a": 1}}]), None, "'data' must be a list"),
    (body([{k: v for k, v in T.items() if k != "data"}]), None, "no 'data' and no binary_data_size"),
    (body([{**T, "datatype": "BYTES", "data": [1, 2, 3]}]), None, "BYTES data must be strings"),
    (body([T], id=5), None, "'id' must be a non-empty string"),
    (body([T], outputs=[{"name": "transform"}]), None, "unknown output 'transform'"),
    (body([T], outputs="predict"), None, "'outputs' must be a list"),
    (body([{**T, "parameters": {"binary_data_size": 12}}]), None, "without an Inference-Header-Content-Length"),
    (*binary_body([{**T, "parameters": {"binary_data_size": 12}}], [b"\0" * 8]), "overruns the body"),
    (*binary_body([{**T, "parameters": {"binary_data_size": 8}}], [b"\0" * 8]), "does not match shape"),
    (*binary_body([T], [b"extra"]), "bytes after the last binary tensor"),
    (body([T]), 10_000, "outside the body"),
    (
        *binary_body(
            [{**T, "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}],
            [struct.pack("<I", 50) + b"ab"],
        ),
        "overruns binary_data_size",
    ),
]


@pytest.mark.parametrize(("raw", "header", "message"), BAD)
def test_bad_requests_are_refused_with_a_reason(raw: bytes, header: int | None, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        request = parse_infer_request(raw, header)
        to_rows(request.inputs, NUMERIC)


SIGNATURE_ERRORS = [
    ([{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "has 4 features, the model takes 3"),
    ([{"name": "x", "shape": [0, 3], "datatype": "FP32", "data": []}], "has no rows"),
    (
        [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
        "missing input\\(s\\) for feature\\(s\\) 'b', 'c'",
    ),
    (
        [{"name": n, "shape": [1], "datatype": "FP32", "data": [1]} for n in ("a", "b", "z")],
        "unknown input 'z'",
    ),
    (
        [
            {"name": n, "shape": [2 if n == "c" else 1], "datatype": "FP32", "data": [1] * (2 if n == "c" else 1)}
            for n in "abc"
        ],
        "'c' has 2 rows, other inputs have 1",
    ),
    (
        [{"name": n, "shape": [1, 2], "datatype": "FP32", "data": [1, 2]} for n in "abc"],
        "expected \\[N\\] or \\[N, 1\\]",
    ),
]


@pytest.mark.parametrize(("inputs", "message"), SIGNATURE_ERRORS)
def test_tensors_that_do_not_fit_the_signature(inputs: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        to_rows(parse_infer_request(body(inputs)).inputs, NUMERIC)


def test_numeric_feature_refuses_strings_by_name() -> None:
    request = body(
        [
            {"name": "size", "shape": [1], "datatype": "BYTES", "data": ["big"]},
            {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]},
        ]
    )
    with pytest.raises(BadRequest, match="feature 'size' is numeric, got str"):
        to_rows(parse_infer_request(request).inputs, MIXED)


# -- plain /predict instances ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "signature", "expected"),
    [
        ({"instances": [[1, 2, 3], [4, 5, 6]]}, NUMERIC, [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]),
        ({"instances": [{"c": 3, "a": 1, "b": 2}]}, NUMERIC, [[1.0], [2.0], [3.0]]),
        ({"instances": [{"a": 1, "c": 3}]}, NUMERIC, [[1.0], [np.nan], [3.0]]),
        ({"instances": [[1.5, "red"], [None, "blue"]]}, MIXED, [[1.5, np.nan], ["red", "blue"]]),
        ({"instances": [{"size": 2, "colour": "red"}]}, MIXED, [[2.0], ["red"]]),
    ],
)
def test_instances(doc: dict[str, Any], signature: Signature, expected: list[list[Any]]) -> None:
    request_id, rows = parse_instances(orjson.dumps(doc), signature)
    assert len(request_id) == 32
    assert rows.count == len(doc["instances"])
    for column, want in zip(rows.columns, expected, strict=True):
        if column.dtype == object:
            assert column.tolist() == want
        else:
            np.testing.assert_array_equal(column, np.array(want, dtype=np.float64))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"instances": []}, "'instances' must be a non-empty list"),
        ({"rows": [[1, 2, 3]]}, "'instances' must be a non-empty list"),
        ({"instances": [[1, 2]]}, "instances\\[0\\] has 2 values, the model takes 3"),
        ({"instances": [{"a": 1, "d": 2}]}, "instances\\[0\\]: unknown feature 'd'"),
        ({"instances": [[1, 2, "x"]]}, "feature 'c' is numeric, got str"),
        ({"instances": [[1, 2, [3]]]}, "nested list"),
        ({"instances": [5]}, "must be a list of 3 values or an object"),
    ],
)
def test_bad_instances(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_instances(orjson.dumps(doc), NUMERIC)


# -- responses ------------------------------------------------------------------------------------


def test_json_response() -> None:
    raw, header = encode_infer_response(
        "m",
        "v1",
        "id-1",
        [
            OutputTensor("predict", np.array([0, 1], dtype=np.int64), binary=False),
            OutputTensor("predict_proba", np.array([[0.75, 0.25], [0.5, 0.5]]), binary=False),
        ],
    )
    assert header is None
    assert orjson.loads(raw) == {
        "model_name": "m",
        "model_version": "v1",
        "id": "id-1",
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [2, 2], "data": [0.75, 0.25, 0.5, 0.5]},
        ],
    }


def test_binary_response_round_trip() -> None:
    proba = np.array([[0.75, 0.25], [0.5, 0.5]])
    labels = np.array(["benign", "malignant"], dtype=object)
    raw, header = encode_infer_response(
        "m",
        "v1",
        "id-2",
        [OutputTensor("predict", labels, binary=True), OutputTensor("predict_proba", proba, binary=True)],
    )
    assert header is not None
    doc = orjson.loads(raw[:header])
    first, second = doc["outputs"]
    assert first["datatype"] == "BYTES" and "data" not in first
    blob = raw[header:]
    n1 = first["parameters"]["binary_data_size"]
    assert blob[:n1] == bytes_elements(b"benign", b"malignant")
    assert second["datatype"] == "FP64" and second["shape"] == [2, 2]
    np.testing.assert_array_equal(np.frombuffer(blob[n1:], "<f8").reshape(2, 2), proba)
    assert len(blob) == n1 + second["parameters"]["binary_data_size"]


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [("FP32", 1e300, "outside the range of FP32"), ("INT8", 1000, "outside the range of INT8")],
)
def test_out_of_range_values_in_per_feature_tensors_are_refused_by_name(
    datatype: str, value: float, message: str
) -> None:
    """Many [N] tensors are decoded together in one block; a value out of range still names its input."""
    inputs = [{"name": n, "shape": [2], "datatype": datatype, "data": [1, 2]} for n in "abc"]
    inputs[1]["data"] = [1, value]
    with pytest.raises(BadRequest, match=f"input 'b': a value is {message}"):
        parse_infer_request(body(inputs))
