"""The work of the `export` component (the contract is `conveyor.components.export`): skl2onnx, then a check."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import pandas as pd  # type: ignore[import-untyped]
from skl2onnx import convert_sklearn  # type: ignore[import-untyped]
from skl2onnx.common.data_types import (  # type: ignore[import-untyped]
    DoubleTensorType,
    FloatTensorType,
    StringTensorType,
)
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer

from conveyor.components.atomic import atomic_output, write_json
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, require_columns, require_rows
from conveyor.components.export import ExportConfig
from conveyor.components.modelio import FeatureSpec, load_artifact
from conveyor.storage.digest import sha256_bytes, sha256_file

REPORT_FORMAT = "conveyor.export-report/v1"
Precision = Literal["float32", "float64"]
_MAX_LISTED = 10
MATRIX_INPUT = "X"


@dataclass(frozen=True)
class Converted:
    """An ONNX model that onnxruntime loaded, with how it was made."""

    model: onnx.ModelProto
    session: Any
    precision: Precision
    input_names: list[str]
    """ONNX input names, one per feature column, in the model's input order."""


def _is_text(spec: FeatureSpec) -> bool:
    return spec.dtype in ("object", "str", "string", "category") or spec.dtype.startswith("string")


def _takes_columns(pipeline: Any) -> bool:
    """Whether the pipeline starts with a ColumnTransformer (one graph input per column), else a matrix."""
    return isinstance(pipeline.steps[0][1], ColumnTransformer)


def _initial_types(pipeline: Any, features: list[FeatureSpec], precision: Precision) -> list[tuple[str, Any]]:
    numeric = DoubleTensorType if precision == "float64" else FloatTensorType
    if not _takes_columns(pipeline):
        # No preprocessing: the estimator takes the numeric feature matrix, which train already required.
        return [(MATRIX_INPUT, numeric([None, len(features)]))]
    types: list[tuple[str, Any]] = []
    for spec in features:
        if spec.dtype.startswith("datetime"):
            raise ComponentError(f"input column {spec.name!r} is a {spec.dtype}; ONNX export has no datetime input")
        types.append((spec.name, StringTensorType([None, 1]) if _is_text(spec) else numeric([None, 1])))
    return types


def _convert(pipeline: Any, features: list[FeatureSpec], precision: Precision, opset: int | None) -> Converted:
    """Convert and load in onnxruntime; either failing is a ComponentError with the library's reason."""
    options = {id(pipeline.steps[-1][1]): {"zipmap": False}} if is_classifier(pipeline) else None
    try:
        with warnings.catch_warnings():
            # skl2onnx warns about opset choices and deprecated numpy aliases; the check below is what counts.
            warnings.simplefilter("ignore")
            model = convert_sklearn(
                pipeline,
                initial_types=_initial_types(pipeline, features, precision),
                options=options,
                target_opset=opset,
            )
    except ComponentError:
        raise
    except Exception as exc:  # skl2onnx raises anything from RuntimeError to NotImplementedError
        raise ComponentError(
            f"skl2onnx could not convert the model ({precision}): {type(exc).__name__}: {exc}"
        ) from None
    # skl2onnx names the graph with a random uuid: a fixed name keeps the bytes (and digest) reproducible.
    model.graph.name = "conveyor_model"
    model.doc_string = ""
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors are its own pybind classes
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ComponentError(f"onnxruntime could not load the converted model ({precision}): {message}") from None
    names = [i.name for i in model.graph.input]
    if not _takes_columns(pipeline):
        names = names * len(features)
    return Converted(model, session, precision, names)


def convert(pipeline: Any, features: list[FeatureSpec], config: ExportConfig) -> tuple[Converted, str | None]:
    """The converted model and, when `auto` fell back to float32, why."""
    if config.precision != "auto":
        return _convert(pipeline, features, config.precision, config.target_opset), None
    try:
        return _convert(pipeline, features, "float64", config.target_opset), None
    except ComponentError as exc:
        return _convert(pipeline, features, "float32", config.target_opset), str(exc)


def _feed(frame: pd.DataFrame, features: list[FeatureSpec], converted: Converted) -> dict[str, np.ndarray]:
    dtype = np.float64 if converted.precision == "float64" else np.float32
    if converted.input_names and converted.input_names[0] == MATRIX_INPUT:
        try:
            return {MATRIX_INPUT: frame[[f.name for f in features]].to_numpy(dtype=dtype, na_value=np.nan)}
        except (TypeError, ValueError) as exc:
            raise ComponentError(f"input 'evaluation': the features are not all numeric: {exc}") from None
    feed: dict[str, np.ndarray] = {}
    for name, spec in zip(converted.input_names, features, strict=True):
        column = frame[spec.name]
        if _is_text(spec):
            feed[name] = column.astype(object).where(column.notna(), "").astype(str).to_numpy().reshape(-1, 1)
        else:
            try:
                feed[name] = column.to_numpy(dtype=dtype, na_value=np.nan).reshape(-1, 1)
            except (TypeError, ValueError) as exc:
                raise ComponentError(f"input 'evaluation': column {spec.name!r} is not numeric: {exc}") from None
    return feed


def _disagreements(expected: np.ndarray, actual: np.ndarray, classifier: bool, config: ExportConfig) -> np.ndarray:
    """A boolean per row: True where ONNX and scikit-learn disagree."""
    if classifier:
        if np.issubdtype(expected.dtype, np.number) and np.issubdtype(actual.dtype, np.number):
            return np.asarray(expected != actual)
        return np.asarray(expected.astype(str) != actual.astype(str))
    expected_f, actual_f = expected.astype(np.float64), actual.astype(np.float64)
    return np.asarray(~np.isclose(actual_f, expected_f, rtol=config.rtol, atol=config.atol, equal_nan=True))


def run(config: ExportConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Convert `model` to `onnx`, check it on `evaluation`, and write `report` (also when the check fails)."""
    loaded = load_artifact(inputs["model"], kind="model")
    pipeline, metadata = loaded.obj, loaded.metadata
    features = list(metadata.inputs)
    frame = read_dataset(inputs["evaluation"], "evaluation")
    require_rows(frame, "evaluation")
    require_columns(frame, [f.name for f in features], "evaluation", "model inputs")
    x = frame[[f.name for f in features]]

    converted, fallback = convert(pipeline, features, config)
    classifier = is_classifier(pipeline)
    onnx_out = converted.session.run(None, _feed(frame, features, converted))
    actual = np.asarray(onnx_out[0]).reshape(len(frame), -1)[:, 0]
    expected = np.asarray(pipeline.predict(x)).reshape(len(frame), -1)[:, 0]
    differs = _disagreements(expected, actual, classifier, config)
    proba_difference, proba_gap = None, None
    if classifier and hasattr(pipeline, "predict_proba") and len(onnx_out) > 1:
        proba_gap = np.abs(np.asarray(onnx_out[1], dtype=np.float64) - pipeline.predict_proba(x)).max(axis=1)
        proba_difference = float(proba_gap.max())
        differs = differs | (proba_gap > config.proba_atol)
    mismatches = int(differs.sum())
    rate = mismatches / len(frame)
    rows = np.flatnonzero(differs)[:_MAX_LISTED]
    passed = rate <= config.max_mismatch_rate

    model_bytes = _with_metadata(converted, features, sha256_file(inputs["model"])).SerializeToString()
    comparison: dict[str, Any] = {
        "rows": len(frame),
        "compared": "class" if classifier else "value",
        "mismatches": mismatches,
        "mismatch_rate": rate,
        "max_mismatch_rate": config.max_mismatch_rate,
        "examples": [
            {
                "row": int(i),
                "scikit_learn": expected[i].item(),
                "onnx": actual[i].item(),
                **({"proba_difference": float(proba_gap[i])} if proba_gap is not None else {}),
            }
            for i in rows.tolist()
        ],
    }
    if proba_difference is not None:
        comparison.update(compared="class and probabilities", proba_atol=config.proba_atol)
        comparison["max_proba_difference"] = proba_difference
    if not classifier:
        comparison.update(
            rtol=config.rtol,
            atol=config.atol,
            max_abs_difference=float(np.nanmax(np.abs(actual.astype(float) - expected.astype(float)))),
        )
    report = {
        "format": REPORT_FORMAT,
        "passed": passed,
        "model": {"sha256": sha256_file(inputs["model"]), "estimator": metadata.estimator, "task": metadata.task},
        "onnx": {
            "sha256": sha256_bytes(model_bytes) if passed else None,
            "bytes": len(model_bytes),
            "precision": converted.precision,
            "fallback_reason": fallback,
            "opset": {d.domain or "ai.onnx": d.version for d in converted.model.opset_import},
            "inputs": [
                {"column": f.name, "dtype": f.dtype, "onnx_input": n}
                for f, n in zip(features, converted.input_names, strict=True)
            ],
            "outputs": [o.name for o in converted.model.graph.output],
        },
        "comparison": comparison,
        "versions": {lib: version(lib) for lib in ("skl2onnx", "onnx", "onnxruntime", "scikit-learn")},
    }
    write_json(report, outputs["report"])
    if not passed:
        listed = ", ".join(
            f"row {e['row']}: {e['scikit_learn']!r} vs {e['onnx']!r}"
            + (f" (probabilities {e['proba_difference']:.3g} apart)" if "proba_difference" in e else "")
            for e in comparison["examples"][:3]
        )
        raise ComponentError(
            f"ONNX predictions differ from scikit-learn's on {mismatches} of {len(frame)} evaluation rows "
            f"(mismatch rate {rate:.2%} > max_mismatch_rate {config.max_mismatch_rate:.2%}; {converted.precision}"
            + (
                f"; probabilities differ by up to {proba_difference:.3g}, proba_atol {config.proba_atol:g}"
                if proba_difference is not None
                else ""
            )
            + f"): {listed}"
        )
    with atomic_output(outputs["onnx"]) as tmp:
        tmp.write_bytes(model_bytes)
    return {
        "rows_compared": float(len(frame)),
        "mismatches": float(mismatches),
        "mismatch_rate": rate,
        **({"max_proba_difference": proba_difference} if proba_difference is not None else {}),
        "onnx_bytes": float(len(model_bytes)),
        "float64": 1.0 if converted.precision == "float64" else 0.0,
    }


def _with_metadata(converted: Converted, features: list[FeatureSpec], model_digest: str) -> onnx.ModelProto:
    """The model with where it came from and the column → input mapping in its metadata_props."""
    model = onnx.ModelProto()
    model.CopyFrom(converted.model)
    mapping = {f.name: n for f, n in zip(features, converted.input_names, strict=True)}
    for key, value in (
        ("conveyor.source_model_sha256", model_digest),
        ("conveyor.inputs", json.dumps(mapping, sort_keys=True)),
        ("conveyor.precision", converted.precision),
    ):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model
