"""The export component: sklearn Pipeline → ONNX, checked against scikit-learn on evaluation data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import pandas as pd  # type: ignore[import-untyped]
import pytest

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, write_dataset
from conveyor.components.modelio import load_artifact
from conveyor.storage.digest import sha256_file

RunStep = Callable[..., Metrics]


@pytest.fixture(scope="module")
def bc_model(
    run_step: RunStep, breast_cancer_split: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """breast_cancer: preprocess (impute, scale) + logistic regression, as train saves it."""
    train, _ = breast_cancer_split
    d = tmp_path_factory.mktemp("bc-export")
    run_step("preprocess", {"label": "target"}, {"train": train}, {"transformer": d / "transformer"})
    run_step(
        "train",
        {"estimator": "sklearn.linear_model.LogisticRegression", "label": "target"},
        {"train": train, "transformer": d / "transformer"},
        {"model": d / "model"},
    )
    return d / "model"


def test_breast_cancer_onnx_predicts_the_same_classes(
    run_step: RunStep, bc_model: Path, breast_cancer_split: tuple[Path, Path], tmp_path: Path
) -> None:
    _, test = breast_cancer_split
    out = {"onnx": tmp_path / "model.onnx", "report": tmp_path / "report.json"}
    metrics = run_step("export", {}, {"model": bc_model, "evaluation": test}, out)
    assert metrics["mismatches"] == 0
    assert metrics["rows_compared"] == 114

    # Independently of the component: onnxruntime on the written file against the artifact's predict.
    frame = read_dataset(test)
    loaded = load_artifact(bc_model, kind="model")
    columns = [f.name for f in loaded.metadata.inputs]
    model = onnx.load(out["onnx"])
    props = {p.key: p.value for p in model.metadata_props}
    mapping = json.loads(props["conveyor.inputs"])
    assert props["conveyor.source_model_sha256"] == sha256_file(bc_model)
    assert mapping["mean radius"] == "mean_radius"  # ONNX names are identifiers
    session = ort.InferenceSession(str(out["onnx"]), providers=["CPUExecutionProvider"])
    dtype = np.float64 if props["conveyor.precision"] == "float64" else np.float32
    feed = {mapping[c]: frame[[c]].to_numpy(dtype=dtype) for c in columns}
    onnx_classes = session.run(None, feed)[0].ravel()
    assert onnx_classes.tolist() == loaded.obj.predict(frame[columns]).tolist()
    assert "label" not in columns  # the preprocessing is inside the graph: raw columns in, classes out

    report = json.loads(out["report"].read_text())
    assert report["passed"] is True
    assert report["comparison"]["mismatch_rate"] == 0.0
    assert report["onnx"]["sha256"] == sha256_file(out["onnx"])
    assert report["onnx"]["precision"] == "float32"  # onnxruntime has no double Imputer kernel
    assert "Imputer" in report["onnx"]["fallback_reason"]
    assert report["onnx"]["outputs"] == ["label", "probabilities"]

    again = {"onnx": tmp_path / "again.onnx", "report": tmp_path / "again.json"}
    run_step("export", {}, {"model": bc_model, "evaluation": test}, again)
    assert again["onnx"].read_bytes() == out["onnx"].read_bytes()


@pytest.fixture(scope="module")
def diabetes(run_step: RunStep, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """diabetes with a bare linear regression (no transformer): (model, data)."""
    d = tmp_path_factory.mktemp("diabetes-export")
    run_step("ingest", {"source": "sklearn://diabetes"}, {}, {"dataset": d / "data"})
    run_step(
        "train",
        {"estimator": "sklearn.linear_model.LinearRegression", "label": "target"},
        {"train": d / "data"},
        {"model": d / "model"},
    )
    return d / "model", d / "data"


def test_regression_in_float64_agrees_tightly(run_step: RunStep, diabetes: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = diabetes
    out = {"onnx": tmp_path / "m.onnx", "report": tmp_path / "r.json"}
    config = {"rtol": 1e-9, "atol": 1e-9}
    assert run_step("export", config, {"model": model, "evaluation": data}, out)["float64"] == 1.0
    report = json.loads(out["report"].read_text())
    assert report["onnx"]["precision"] == "float64"
    assert report["comparison"]["max_abs_difference"] < 1e-9


def test_disagreement_fails_naming_the_mismatch_rate(
    run_step: RunStep, diabetes: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = diabetes
    out = {"onnx": tmp_path / "m.onnx", "report": tmp_path / "r.json"}
    config = {"precision": "float32", "rtol": 0.0, "atol": 0.0}
    with pytest.raises(
        ComponentError, match=r"ONNX predictions differ from scikit-learn's on \d+ of 442 .*mismatch rate"
    ):
        run_step("export", config, {"model": model, "evaluation": data}, out)
    assert not out["onnx"].exists()
    report = json.loads(out["report"].read_text())  # the report of a failed check is kept
    assert report["passed"] is False
    assert report["comparison"]["mismatches"] > 0
    assert report["comparison"]["examples"]


def test_evaluation_must_have_the_model_inputs(
    run_step: RunStep, bc_model: Path, breast_cancer_split: tuple[Path, Path], tmp_path: Path
) -> None:
    frame = read_dataset(breast_cancer_split[1]).drop(columns=["mean radius"])
    write_dataset(frame, tmp_path / "eval")
    out = {"onnx": tmp_path / "m.onnx", "report": tmp_path / "r.json"}
    with pytest.raises(ComponentError, match=r"model inputs: column 'mean radius' is not in input 'evaluation'"):
        run_step("export", {}, {"model": bc_model, "evaluation": tmp_path / "eval"}, out)


def test_unconvertible_pipeline_names_the_converters_reason(run_step: RunStep, tmp_path: Path) -> None:
    """preprocess imputes string columns with a NaN marker, which skl2onnx cannot convert (a known limit)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.normal(size=200), "c": rng.choice(["x", "y"], 200), "target": rng.integers(0, 2, 200)}
    )
    write_dataset(frame, tmp_path / "data")
    run_step("preprocess", {"label": "target"}, {"train": tmp_path / "data"}, {"transformer": tmp_path / "t"})
    run_step(
        "train",
        {"estimator": "sklearn.linear_model.LogisticRegression", "label": "target"},
        {"train": tmp_path / "data", "transformer": tmp_path / "t"},
        {"model": tmp_path / "model"},
    )
    out = {"onnx": tmp_path / "m.onnx", "report": tmp_path / "r.json"}
    with pytest.raises(ComponentError, match=r"skl2onnx could not convert the model \(float32\): .*missing values"):
        run_step("export", {}, {"model": tmp_path / "model", "evaluation": tmp_path / "data"}, out)


def test_classifier_probabilities_are_compared_with_a_stated_tolerance(
    run_step: RunStep, bc_model: Path, breast_cancer_split: tuple[Path, Path], tmp_path: Path
) -> None:
    """The float32 fallback moves probabilities a little: within proba_atol it passes, and the report says
    by how much; a tolerance tighter than that fails the export although every class agrees."""
    _, test = breast_cancer_split
    out = {"onnx": tmp_path / "model.onnx", "report": tmp_path / "report.json"}
    metrics = run_step("export", {}, {"model": bc_model, "evaluation": test}, out)
    report = json.loads(out["report"].read_text())
    comparison = report["comparison"]
    assert comparison["compared"] == "class and probabilities" and comparison["proba_atol"] == 1e-4
    assert 0 < comparison["max_proba_difference"] < 1e-4 and metrics["max_proba_difference"] > 0
    tight = {"onnx": tmp_path / "tight.onnx", "report": tmp_path / "tight.json"}
    with pytest.raises(
        ComponentError,
        match=r"probabilities differ by up to .*, proba_atol 1e-12\): row \d+: (\d) vs \1 \(probabilities",
    ):
        run_step("export", {"proba_atol": 1e-12}, {"model": bc_model, "evaluation": test}, tight)
    failed = json.loads(tight["report"].read_text())["comparison"]
    assert failed["mismatches"] > 0 and failed["examples"][0]["proba_difference"] > 1e-12
