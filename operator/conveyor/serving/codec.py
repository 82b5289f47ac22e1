"""Open Inference Protocol v2 bodies to and from numpy: pure functions, no I/O, no model.

Requests are decoded straight into numpy arrays: JSON `data` through orjson and one
`np.array` call per tensor, binary tensors (the binary tensor data extension: the JSON header's
length in `Inference-Header-Content-Length`, each tensor's byte count in its
`parameters.binary_data_size`, tensors concatenated after the header in input order) with
`np.frombuffer`, without a copy. `to_rows` then maps the decoded tensors onto the model's
signature, accepting either one `[N, F]` tensor (features in signature order) or one `[N]`
tensor per feature, named after it.

Every problem with a request raises `BadRequest` naming the input or field; nothing here
raises anything else for bad input.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from conveyor.components.modelio import OUTPUT_PREDICT, OUTPUT_PROBA
from conveyor.serving.errors import BadRequest

# Protocol datatype -> numpy dtype (little-endian, as the binary extension specifies).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
OUTPUT_NAMES = (OUTPUT_PREDICT, OUTPUT_PROBA)
_LENGTH = struct.Struct("<I")
_MAX_DIMS = 8


@dataclass(frozen=True)
class Tensor:
    """One decoded input tensor: `array` already has `shape` and the datatype's numpy dtype."""

    name: str
    datatype: str
    array: np.ndarray[Any, Any]


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str
    inputs: list[Tensor]
    outputs: list[RequestedOutput]
    """Empty: the default (`predict` only)."""
    binary_output: bool = False
    """The request-level `binary_data_output` parameter: outputs not listed are sent binary."""


@dataclass
class Rows:
    """A request's rows in the model's signature order: what the batcher concatenates.

    `matrix` is the `[N, F]` float64 array when every feature is numeric (the common, fast case),
    else None and `columns` holds one 1-D array per feature (float64 or object).
    """

    count: int
    columns: list[np.ndarray[Any, Any]]
    matrix: np.ndarray[Any, Any] | None = None


@dataclass(frozen=True)
class Signature:
    """The model's inputs as the codec needs them: names in order and which ones are numeric."""

    names: list[str]
    numeric: list[bool]
    positions: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", {n: i for i, n in enumerate(self.names)})

    @property
    def all_numeric(self) -> bool:
        return all(self.numeric)


# ---------------------------------------------------------------------------------------------
# JSON helpers


def loads_object(body: bytes, what: str = "request body") -> dict[str, Any]:
    """Parse a JSON object or raise BadRequest (invalid JSON, or not an object)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def new_request_id() -> str:
    return uuid.uuid4().hex


def _request_id(doc: dict[str, Any]) -> str:
    rid = doc.get("id")
    if rid is None:
        return new_request_id()
    if not isinstance(rid, str) or not rid or len(rid) > 256:
        raise BadRequest("'id' must be a non-empty string of at most 256 characters")
    return rid


# ---------------------------------------------------------------------------------------------
# Requests


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if type(value) is list and len(value) == 1 and type(value[0]) is int and value[0] >= 0:
        return (value[0],)  # the common [N] of one tensor per feature, checked without the general loop
    if (
        not isinstance(value, list)
        or not value
        or len(value) > _MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
    ):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of 1 to {_MAX_DIMS} non-negative integers")
    return tuple(value)


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    return value


def _flat_strings(data: list[Any], name: str) -> list[Any]:
    """Flatten nested lists of a BYTES tensor, checking every element is a string (or null)."""
    out: list[Any] = []
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif item is None or isinstance(item, str):
            out.append(item)
        else:
            raise BadRequest(f"input {name!r}: BYTES data must be strings, got {type(item).__name__}")
    return out


def _json_tensor(data: Any, datatype: str, count: int, name: str) -> np.ndarray[Any, Any]:
    """A tensor's JSON `data` (flat or nested row-major) as a flat array of the datatype."""
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: 'data' must be a list")
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        flat = _flat_strings(data, name)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        try:
            array = np.array(data)
        except (ValueError, TypeError):
            raise BadRequest(f"input {name!r}: 'data' is ragged or mixes types (expected {datatype} numbers)") from None
        kind = array.dtype.kind
        if kind == "O" and dtype.kind == "f":
            array = _numbers_with_nulls(array, name, datatype)
        elif kind == "b" and datatype != "BOOL":
            raise BadRequest(f"input {name!r}: got booleans for datatype {datatype}")
        elif kind not in "biuf" or (kind == "f" and dtype.kind in "biu"):
            got = {"U": "strings", "O": "mixed values or nulls", "f": "floats"}.get(kind, array.dtype.name)
            raise BadRequest(f"input {name!r}: got {got} for datatype {datatype}")
        if datatype == "BOOL" and kind != "b":
            raise BadRequest(f"input {name!r}: datatype BOOL needs true/false values")
        array = array.reshape(-1)
        if array.dtype != dtype:
            array = _cast(array, dtype, name, datatype)
    if array.size != count:
        raise BadRequest(f"input {name!r}: 'data' has {array.size} elements, 'shape' says {count}")
    return array


def _cast(array: np.ndarray[Any, Any], dtype: np.dtype[Any], name: str, datatype: str) -> np.ndarray[Any, Any]:
    """JSON numbers as the datatype; a value the datatype cannot hold is refused, never wrapped round
    (1000 as INT8 would be -24, -1 as UINT8 255) or overflowed to infinity (1e300 as FP32)."""
    if array.size and dtype.kind in "iu" and array.dtype.kind in "iu":
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise BadRequest(f"input {name!r}: a value is outside the range of {datatype} ({info.min} to {info.max})")
        return array.astype(dtype)
    with np.errstate(over="ignore"):
        cast = array.astype(dtype)
    if dtype.kind == "f" and array.size and (np.isinf(cast) & np.isfinite(array)).any():
        raise BadRequest(f"input {name!r}: a value is outside the range of {datatype}")
    return cast


def _numbers_with_nulls(array: np.ndarray[Any, Any], name: str, datatype: str) -> np.ndarray[Any, Any]:
    """A float tensor whose JSON `data` is not all numbers: refused, naming the first element that is not.

    The protocol's tensors hold numbers only: a null is no FP64 value (a missing value travels as NaN in
    binary data, or as null in a /predict instance)."""
    flat = array.reshape(-1)
    for i, value in enumerate(flat):
        if value is None:
            raise BadRequest(f"input {name!r}: null at element {i} is not an {datatype} number")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"input {name!r}: got {type(value).__name__} for datatype {datatype}")
    return np.array(flat.tolist(), dtype=np.float64).reshape(array.shape)


def _binary_tensor(chunk: memoryview, datatype: str, count: int, name: str) -> np.ndarray[Any, Any]:
    if datatype != "BYTES":
        dtype = DATATYPES[datatype]
        if len(chunk) != count * dtype.itemsize:
            raise BadRequest(
                f"input {name!r}: binary_data_size {len(chunk)} does not match shape and {datatype} "
                f"({count} x {dtype.itemsize} bytes)"
            )
        return np.frombuffer(chunk, dtype=dtype)
    values: list[str] = []
    offset, size = 0, len(chunk)
    while offset < size:
        if offset + 4 > size:
            raise BadRequest(f"input {name!r}: truncated BYTES element length")
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > size:
            raise BadRequest(f"input {name!r}: BYTES element overruns binary_data_size")
        try:
            values.append(bytes(chunk[offset : offset + length]).decode())
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: BYTES element is not UTF-8 text") from None
        offset += length
    if len(values) != count:
        raise BadRequest(f"input {name!r}: {len(values)} BYTES elements, 'shape' says {count}")
    array = np.empty(count, dtype=object)
    array[:] = values
    return array


def _outputs(value: Any) -> list[RequestedOutput]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a 'name'")
        name = item["name"]
        if name not in OUTPUT_NAMES:
            raise BadRequest(f"outputs[{i}]: unknown output {name!r} (outputs: {', '.join(OUTPUT_NAMES)})")
        binary = _parameters(item.get("parameters"), f"outputs[{i}]").get("binary_data", False)
        if not isinstance(binary, bool):
            raise BadRequest(f"outputs[{i}]: 'binary_data' must be true or false")
        outputs.append(RequestedOutput(name, binary))
    return outputs


_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}


def _json_blocks(decoded: list[tuple[str, str, tuple[int, ...], int, Any]]) -> dict[int, np.ndarray[Any, Any]]:
    """Decode many small numeric JSON tensors of one datatype and size with one `np.array` call.

    A request with one [N] tensor per feature would otherwise pay numpy's per-call overhead once per
    feature. Any group that does not convert cleanly is left to `_json_tensor`, tensor by tensor,
    which gives the precise error.
    """
    groups: dict[tuple[str, int], list[int]] = {}
    for index, (_, datatype, _, count, value) in enumerate(decoded):
        if (
            datatype != "BYTES"
            and isinstance(value, list)
            and len(value) == count
            and count
            and not isinstance(value[0], list)
        ):
            groups.setdefault((datatype, count), []).append(index)
    blocks: dict[int, np.ndarray[Any, Any]] = {}
    for (datatype, count), indexes in groups.items():
        if len(indexes) < 2:
            continue
        try:
            block = np.array([decoded[i][4] for i in indexes])
        except (ValueError, TypeError):
            continue
        dtype = DATATYPES[datatype]
        if block.shape != (len(indexes), count) or block.dtype.kind not in _KINDS[dtype.kind]:
            continue
        if block.dtype != dtype:
            try:
                block = _cast(block, dtype, "", datatype)
            except BadRequest:
                continue  # a value out of the datatype's range: tensor by tensor, for the error naming it
        blocks.update(zip(indexes, block, strict=True))
    return blocks


def parse_infer_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode an inference request (JSON, or JSON header plus binary tensors when `header_length` is set)."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length} is outside the body ({len(body)} bytes)")
        doc = loads_object(body[:header_length], "inference request header")
        binary = memoryview(body)[header_length:]
    else:
        doc = loads_object(body, "inference request")
        binary = memoryview(b"")
    inputs_doc = doc.get("inputs")
    if not isinstance(inputs_doc, list) or not inputs_doc:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    offset = 0
    decoded: list[tuple[str, str, tuple[int, ...], int, Any]] = []  # name, datatype, shape, count, array or JSON
    seen: set[str] = set()
    for i, item in enumerate(inputs_doc):
        if not isinstance(item, dict):
            raise BadRequest(f"inputs[{i}] must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"inputs[{i}]: 'name' must be a non-empty string")
        if name in seen:
            raise BadRequest(f"input {name!r} appears twice")
        seen.add(name)
        datatype = item.get("datatype")
        if datatype not in DATATYPES:
            raise BadRequest(f"input {name!r}: unknown datatype {datatype!r} (datatypes: {', '.join(DATATYPES)})")
        shape = _shape(item.get("shape"), name)
        count = math.prod(shape)
        parameters = item.get("parameters")
        size = None if parameters is None else _parameters(parameters, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {name!r}: 'binary_data_size' must be a non-negative integer")
            if header_length is None:
                raise BadRequest(f"input {name!r}: binary_data_size without an Inference-Header-Content-Length header")
            if offset + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size {size} overruns the body")
            decoded.append(
                (name, datatype, shape, count, _binary_tensor(binary[offset : offset + size], datatype, count, name))
            )
            offset += size
        else:
            if "data" not in item:
                raise BadRequest(f"input {name!r}: no 'data' and no binary_data_size")
            decoded.append((name, datatype, shape, count, item["data"]))
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes after the last binary tensor")
    blocks = _json_blocks(decoded)
    inputs: list[Tensor] = []
    for index, (name, datatype, shape, count, value) in enumerate(decoded):
        if isinstance(value, np.ndarray):
            flat = value
        elif index in blocks:
            flat = blocks[index]
        else:
            flat = _json_tensor(value, datatype, count, name)
        inputs.append(Tensor(name, datatype, flat.reshape(shape)))
    parameters = _parameters(doc.get("parameters"), "request")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadRequest("'binary_data_output' must be true or false")
    return InferRequest(_request_id(doc), inputs, _outputs(doc.get("outputs")), binary_output)


# ---------------------------------------------------------------------------------------------
# Tensors -> rows in signature order


def _column(values: np.ndarray[Any, Any], numeric: bool, feature: str) -> np.ndarray[Any, Any]:
    """One feature's values in the form the model takes: float64 for numeric features, else objects."""
    if numeric:
        if values.dtype.kind in "biuf":
            return values.astype(np.float64, copy=False)
        converted = np.empty(values.shape, dtype=np.float64)
        for i, v in enumerate(values):
            if v is None:
                converted[i] = math.nan
            elif isinstance(v, int | float) and not isinstance(v, bool):
                converted[i] = v
            else:
                raise BadRequest(f"feature {feature!r} is numeric, got {type(v).__name__} {_short(v)}")
        return converted
    if values.dtype == object:
        return values
    out = np.empty(values.shape, dtype=object)
    out[:] = values.tolist()
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _from_columns(columns: list[np.ndarray[Any, Any]], signature: Signature, count: int) -> Rows:
    converted = [_column(c, n, f) for c, n, f in zip(columns, signature.numeric, signature.names, strict=True)]
    matrix = np.column_stack(converted) if signature.all_numeric else None
    return Rows(count, converted, matrix)


def to_rows(inputs: Sequence[Tensor], signature: Signature) -> Rows:
    """Map decoded tensors onto the signature: one [N, F] tensor, or one [N] tensor per feature."""
    names = signature.names
    named = [t for t in inputs if t.name in signature.positions]
    if len(inputs) == 1 and not named and inputs[0].array.ndim == 2:
        array = inputs[0].array
        if array.shape[1] != len(names):
            raise BadRequest(
                f"input {inputs[0].name!r}: shape {list(array.shape)} has {array.shape[1]} features, "
                f"the model takes {len(names)}"
            )
        count = array.shape[0]
        if count == 0:
            raise BadRequest(f"input {inputs[0].name!r} has no rows")
        if signature.all_numeric and array.dtype.kind in "biuf":
            matrix = np.ascontiguousarray(array, dtype=np.float64)
            return Rows(count, list(matrix.T), matrix)
        return _from_columns([array[:, i] for i in range(len(names))], signature, count)
    unknown = [t.name for t in inputs if t.name not in signature.positions]
    if unknown:
        raise BadRequest(
            f"unknown input {unknown[0]!r}: send one [N, {len(names)}] tensor, or one [N] tensor per feature "
            f"named after it ({_names(names)})"
        )
    given = {t.name for t in inputs}
    missing = [n for n in names if n not in given]
    if missing:
        raise BadRequest(f"missing input(s) for feature(s) {_names(missing)}")
    by_name = {t.name: t.array for t in inputs}
    columns: list[np.ndarray[Any, Any]] = []
    count = -1
    for name in names:
        array = by_name[name]
        if array.ndim == 2 and array.shape[1] == 1:
            array = array.reshape(-1)
        if array.ndim != 1:
            raise BadRequest(f"input {name!r}: shape {list(array.shape)}, expected [N] or [N, 1]")
        if count == -1:
            count = array.shape[0]
        elif array.shape[0] != count:
            raise BadRequest(f"input {name!r} has {array.shape[0]} rows, other inputs have {count}")
        columns.append(array)
    if count == 0:
        raise BadRequest("the inputs have no rows")
    return _from_columns(columns, signature, count)


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def parse_instances(body: bytes, signature: Signature) -> tuple[str, Rows]:
    """Decode a plain `POST /predict` body: (request id, rows).

    `{"instances": [[v, ...], ...]}` (values in signature order) or `{"instances": [{"feature": v}, ...]}`
    (a missing key is a missing value; an unknown key is an error naming it).
    """
    doc = loads_object(body)
    instances = doc.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest("'instances' must be a non-empty list of rows")
    names = signature.names
    width = len(names)
    if all(isinstance(row, dict) for row in instances):
        for i, row in enumerate(instances):
            for key in row:
                if key not in signature.positions:
                    raise BadRequest(f"instances[{i}]: unknown feature {key!r} (features: {_names(names)})")
        raw = [_object_array([row.get(name) for row in instances]) for name in names]
        return _request_id(doc), _from_columns(raw, signature, len(instances))
    for i, row in enumerate(instances):
        if not isinstance(row, list):
            raise BadRequest(f"instances[{i}] must be a list of {width} values or an object")
        if len(row) != width:
            raise BadRequest(f"instances[{i}] has {len(row)} values, the model takes {width}")
    if signature.all_numeric:
        try:
            array = np.array(instances)
        except (ValueError, TypeError):
            array = np.empty(0)
        if array.dtype.kind in "iuf" and array.ndim == 2:
            matrix = np.ascontiguousarray(array, dtype=np.float64)
            return _request_id(doc), Rows(len(instances), list(matrix.T), matrix)
    raw = [_object_array([row[j] for row in instances]) for j in range(width)]
    for j, column in enumerate(raw):
        for value in column:
            if isinstance(value, list | dict):
                raise BadRequest(f"feature {names[j]!r}: got a nested {type(value).__name__}")
    return _request_id(doc), _from_columns(raw, signature, len(instances))


def _object_array(values: list[Any]) -> np.ndarray[Any, Any]:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


# ---------------------------------------------------------------------------------------------
# Responses


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{array.dtype.itemsize * 8}"
    if kind == "f":
        return f"FP{array.dtype.itemsize * 8}"
    return "BYTES"


def _bytes_payload(array: np.ndarray[Any, Any]) -> bytes:
    parts: list[bytes] = []
    for value in array.reshape(-1).tolist():
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def json_values(array: np.ndarray[Any, Any]) -> Any:
    """An array as orjson can write it: numeric arrays as they are, anything else as Python values."""
    if array.dtype.kind in "biuf":
        return np.ascontiguousarray(array)
    return [v if isinstance(v, str | int | float | bool) or v is None else str(v) for v in array.reshape(-1).tolist()]


@dataclass(frozen=True)
class OutputTensor:
    name: str
    array: np.ndarray[Any, Any]
    binary: bool


def encode_infer_response(
    model_name: str, model_version: str, request_id: str, outputs: Sequence[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length (for the header)."""
    docs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out in outputs:
        doc: dict[str, Any] = {"name": out.name, "datatype": datatype_of(out.array), "shape": list(out.array.shape)}
        if out.binary:
            if doc["datatype"] == "BYTES":
                blob = _bytes_payload(out.array)
            else:
                blob = np.ascontiguousarray(out.array).astype(out.array.dtype.newbyteorder("<"), copy=False).tobytes()
            doc["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            doc["data"] = json_values(out.array.reshape(-1))
        docs.append(doc)
    header = orjson.dumps(
        {"model_name": model_name, "model_version": model_version, "id": request_id, "outputs": docs},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
