"""The batch-predict component: chunked Parquet in, chunked Parquet out, the same predictions as one big call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, write_dataset
from conveyor.components.modelio import load_artifact
from conveyor.components.registry import get_component

RunStep = Callable[..., Metrics]


def _predict(run_step: RunStep, tmp_path: Path, model: Path, dataset: Path, config: dict[str, Any]) -> Metrics:
    return run_step(
        "batch-predict", config, {"model": model, "dataset": dataset}, {"predictions": tmp_path / "predictions"}
    )


@pytest.mark.parametrize(("chunk_rows", "chunks"), [(100, 6), (64, 9), (569, 1), (100_000, 1)])
def test_classifier_predictions_match_one_call_chunk_by_chunk(
    run_step: RunStep,
    tmp_path: Path,
    bc_models: dict[str, Path],
    breast_cancer: Path,
    chunk_rows: int,
    chunks: int,
) -> None:
    frame = read_dataset(breast_cancer)
    frame.insert(0, "id", [f"row-{i}" for i in range(len(frame))])
    write_dataset(frame, tmp_path / "scoring")
    config = {"chunk_rows": chunk_rows, "include_probabilities": True, "passthrough": ["id"]}
    metrics = _predict(run_step, tmp_path, bc_models["good"], tmp_path / "scoring", config)
    assert metrics == {"rows": 569.0, "chunks": float(chunks)}
    written = pq.ParquetFile(tmp_path / "predictions")
    assert written.metadata.num_row_groups == chunks  # written chunk by chunk, one row group each
    out = read_dataset(tmp_path / "predictions")
    assert list(out.columns) == ["id", "predict", "predict_proba_0", "predict_proba_1"]
    model = load_artifact(bc_models["good"]).obj
    features = frame.drop(columns=["id", "target"])
    assert out["id"].tolist() == frame["id"].tolist()
    np.testing.assert_array_equal(out["predict"].to_numpy(), model.predict(features))
    np.testing.assert_allclose(
        out[["predict_proba_0", "predict_proba_1"]].to_numpy(), model.predict_proba(features)
    )
    assert (out["predict"] == frame["target"]).mean() > 0.95


def test_regressor_and_deterministic_bytes(run_step: RunStep, tmp_path: Path, fit_model: Callable[..., Path]) -> None:
    run_step("ingest", {"source": "sklearn://diabetes"}, {}, {"dataset": tmp_path / "ds"})
    model = fit_model(tmp_path / "ds", None, tmp_path / "ridge", "sklearn.linear_model.Ridge")
    config = {"chunk_rows": 50, "output_column": "progression"}
    metrics = _predict(run_step, tmp_path, model, tmp_path / "ds", config)
    assert metrics == {"rows": 442.0, "chunks": 9.0}
    first = (tmp_path / "predictions").read_bytes()
    _predict(run_step, tmp_path, model, tmp_path / "ds", config)
    assert (tmp_path / "predictions").read_bytes() == first
    out = read_dataset(tmp_path / "predictions")
    assert list(out.columns) == ["progression"] and out["progression"].dtype == np.float64


def test_bad_inputs_name_the_column_or_parameter(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer: Path, fit_model: Callable[..., Path]
) -> None:
    frame = read_dataset(breast_cancer)
    write_dataset(frame.drop(columns=["mean radius"]), tmp_path / "narrow")
    cases: list[tuple[Path, Path, dict[str, Any], str]] = [
        (bc_models["good"], tmp_path / "narrow", {}, "model inputs: column 'mean radius' is not in input 'dataset'"),
        (bc_models["good"], breast_cancer, {"passthrough": ["id"]}, "passthrough: column 'id' is not in input"),
        (bc_models["good"], breast_cancer, {"passthrough": ["target"], "output_column": "target"}, "'target' would be written twice"),
        (bc_models["good"], tmp_path / "missing", {}, "input 'dataset': no file at 'missing'"),
    ]  # fmt: skip
    write_dataset(frame.iloc[:0], tmp_path / "empty")
    cases.append((bc_models["good"], tmp_path / "empty", {}, r"input 'dataset' is empty \(0 rows\)"))
    (tmp_path / "garbage").write_text("not parquet")
    cases.append((bc_models["good"], tmp_path / "garbage", {}, "input 'dataset' is not a readable Parquet dataset"))
    svm = fit_model(breast_cancer, None, tmp_path / "svm", "sklearn.svm.LinearSVC")
    cases.append((svm, breast_cancer, {"include_probabilities": True}, "include_probabilities: the model .* has no"))
    for model, dataset, config, message in cases:
        with pytest.raises(ComponentError, match=message):
            _predict(run_step, tmp_path, model, dataset, config)
    assert not (tmp_path / "predictions").exists()


def test_bad_config_names_the_field() -> None:
    config = get_component("batch-predict").config
    with pytest.raises(ValidationError, match="chunk_rows"):
        config.model_validate({"chunk_rows": 0})
    with pytest.raises(ValidationError, match="output_column"):
        config.model_validate({"output_column": ""})


def test_one_output_vocabulary_in_metadata_server_and_batch_predict(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer: Path
) -> None:
    """OIP clients key on output names: the model's metadata, the server and batch-predict say the same."""
    from conveyor.serving.model import ServedModel

    loaded = load_artifact(bc_models["good"], kind="model")
    assert loaded.metadata.outputs == ["predict", "predict_proba"]
    served = ServedModel("m", "v1", "sha256:" + "0" * 64, loaded.obj, loaded.metadata)
    assert [o["name"] for o in served.output_metadata()] == loaded.metadata.outputs
    _predict(run_step, tmp_path, bc_models["good"], breast_cancer, {"include_probabilities": True})
    columns = list(read_dataset(tmp_path / "predictions").columns)
    assert columns[0] == "predict" and all(c.startswith("predict_proba_") for c in columns[1:])
