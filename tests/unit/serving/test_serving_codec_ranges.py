"""Regression: JSON numbers that do not fit a tensor's datatype are refused, not wrapped round or overflowed.

Found by the model-server fuzzer (tests/fuzz/test_model_server_fuzz.py): `[1000]` as INT8 was served as
-24, `[-1]` as UINT8 as 255, 2**63 as INT64 as -2**63, and 1e300 as FP32 became infinity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from conveyor.serving.codec import parse_infer_request
from conveyor.serving.errors import BadRequest


def body(datatype: str, data: list[Any]) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "shape": [len(data)], "datatype": datatype, "data": data}]})


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("INT8", [1000]),
        ("INT8", [-129]),
        ("UINT8", [-1]),
        ("UINT16", [65536]),
        ("INT32", [2**31]),
        ("UINT64", [-1]),
        ("FP16", [1e5]),
        ("FP16", [70000]),
        ("FP32", [1e300]),
        ("FP32", [0.0, -1e39]),
    ],
)
def test_a_value_outside_the_datatype_is_refused(datatype: str, data: list[Any]) -> None:
    with pytest.raises(BadRequest, match=f"input 'x': a value is outside the range of {datatype}"):
        parse_infer_request(body(datatype, data))


def test_int64_past_its_range_is_refused() -> None:
    raw = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [9223372036854775808]}]}'
    with pytest.raises(BadRequest, match="outside the range of INT64"):
        parse_infer_request(raw)


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("INT8", [-128, 127], [-128, 127]),
        ("UINT8", [0, 255], [0, 255]),
        ("UINT64", [2**64 - 1], [2**64 - 1]),
        ("FP16", [0.0, 65504.0], [0.0, 65504.0]),
        ("FP32", [1, 2.5], [1.0, 2.5]),
        ("FP64", [2**64 - 1], [float(2**64 - 1)]),
    ],
)
def test_values_at_the_edges_of_the_range_are_kept(datatype: str, data: list[Any], expected: list[Any]) -> None:
    array = parse_infer_request(body(datatype, data)).inputs[0].array
    np.testing.assert_array_equal(array, np.asarray(expected, dtype=array.dtype))
