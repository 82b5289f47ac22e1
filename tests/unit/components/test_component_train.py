"""The train component: the servable pipeline, seeding, and errors naming the estimator or param."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, write_dataset
from conveyor.components.modelio import load_artifact
from conveyor.components.registry import get_component

RunStep = Callable[..., Metrics]
RF = "sklearn.ensemble.RandomForestClassifier"


@pytest.fixture(scope="module")
def transformer(
    tmp_path_factory: pytest.TempPathFactory, run_step: RunStep, breast_cancer_split: tuple[Path, Path]
) -> Path:
    out = tmp_path_factory.mktemp("tf") / "transformer"
    run_step("preprocess", {"label": "target"}, {"train": breast_cancer_split[0]}, {"transformer": out})
    return out


def _train(
    run_step: RunStep,
    tmp_path: Path,
    train: Path,
    transformer: Path | None,
    config: dict[str, Any],
    *,
    name: str = "model",
) -> tuple[Any, Any, Metrics]:
    inputs = {"train": train} | ({"transformer": transformer} if transformer else {})
    out = tmp_path / name
    metrics = run_step("train", {"label": "target", **config}, inputs, {"model": out})
    loaded = load_artifact(out, kind="model")
    return loaded.obj, loaded.metadata, metrics


def test_model_is_the_fitted_transformer_then_the_estimator(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path], transformer: Path
) -> None:
    model, meta, metrics = _train(
        run_step,
        tmp_path,
        breast_cancer_split[0],
        transformer,
        {"estimator": RF, "params": {"n_estimators": 20}},
    )
    assert [name for name, _ in model.steps] == ["preprocess", "model"]
    fitted = load_artifact(transformer).obj
    test = read_dataset(breast_cancer_split[1])
    features = test.drop(columns=["target"])
    # The transformer inside the model is the one preprocess fitted, unchanged.
    np.testing.assert_array_equal(model.named_steps["preprocess"].transform(features), fitted.transform(features))
    assert meta.task == "classification" and meta.classes == [0, 1] and meta.label == "target"
    assert meta.estimator == RF and meta.params["n_estimators"] == 20 and meta.params["random_state"] == 0
    assert [f.name for f in meta.inputs] == list(features.columns)
    assert metrics["train_rows"] == len(read_dataset(breast_cancer_split[0]))
    assert metrics["fit_warnings"] == 0


def test_same_seed_same_predictions(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path], transformer: Path
) -> None:
    test = read_dataset(breast_cancer_split[1]).drop(columns=["target"])
    probabilities = []
    for i, seed in enumerate((7, 7, 8)):
        model, _, _ = _train(
            run_step,
            tmp_path,
            breast_cancer_split[0],
            transformer,
            {"estimator": RF, "params": {"n_estimators": 15}, "seed": seed},
            name=f"m{i}",
        )
        probabilities.append(model.predict_proba(test))
    np.testing.assert_array_equal(probabilities[0], probabilities[1])
    assert not np.array_equal(probabilities[0], probabilities[2])


def test_without_transformer_numeric_data_trains_directly(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path]
) -> None:
    model, meta, _ = _train(
        run_step, tmp_path, breast_cancer_split[0], None, {"estimator": "sklearn.tree.DecisionTreeClassifier"}
    )
    assert [name for name, _ in model.steps] == ["model"]
    assert len(meta.inputs) == 30


def test_convergence_warning_is_recorded_not_raised(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path]
) -> None:
    # Unscaled data and one iteration cannot converge; an escaped warning would fail this test.
    _, meta, metrics = _train(
        run_step,
        tmp_path,
        breast_cancer_split[0],
        None,
        {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 1}},
    )
    assert metrics["fit_warnings"] == 1
    assert meta.fit_warnings[0].startswith("ConvergenceWarning")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"estimator": "sklearn.ensemble.RandomForestClassifer"},
            r"unknown estimator 'sklearn\.ensemble\.RandomForestClassifer'",
        ),
        ({"estimator": "sklearn.ensembel.RandomForestClassifier"}, r"no module 'sklearn\.ensembel'"),
        ({"estimator": "os.system"}, r"estimator: 'os\.system' is not allowed"),
        ({"estimator": "xgboost.XGBClassifier"}, r"only scikit-learn estimators"),
        ({"estimator": "sklearn.preprocessing.StandardScaler"}, "neither a classifier nor a regressor"),
        ({"estimator": "sklearn.ensemble.VotingClassifier"}, "cannot be built from params alone"),
        ({"estimator": RF, "params": {"n_trees": 10}}, r"params: .* has no parameter 'n_trees'"),
        ({"estimator": RF, "params": {"n_estimators": -1}}, r"failed to fit: .*'n_estimators'"),
        ({"estimator": RF, "label": "diagnosis"}, r"label: column 'diagnosis' is not in input 'train'"),
    ],
)
def test_bad_config_names_the_culprit(
    run_step: RunStep,
    tmp_path: Path,
    breast_cancer_split: tuple[Path, Path],
    config: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ComponentError, match=message):
        _train(run_step, tmp_path, breast_cancer_split[0], None, config)
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("text", r"column 'colour' is not numeric; add a preprocess step"),
        ("empty", r"input 'train' is empty"),
        ("missing_label", r"label: column 'target' in input 'train' has 1 missing values"),
    ],
)
def test_bad_data(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path], change: str, message: str
) -> None:
    frame = read_dataset(breast_cancer_split[0])
    if change == "text":
        frame = frame.assign(colour="red")
    elif change == "empty":
        frame = frame.iloc[:0]
    else:
        frame["target"] = frame["target"].astype(float)
        frame.loc[0, "target"] = np.nan
    path = tmp_path / "train.parquet"
    write_dataset(frame, path)
    with pytest.raises(ComponentError, match=message):
        _train(run_step, tmp_path, path, None, {"estimator": RF})


def test_label_among_transformer_inputs_is_leakage(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path]
) -> None:
    leaky = tmp_path / "leaky"
    run_step("preprocess", {}, {"train": breast_cancer_split[0]}, {"transformer": leaky})
    with pytest.raises(ComponentError, match=r"label: column 'target' is an input of the transformer"):
        _train(run_step, tmp_path, breast_cancer_split[0], leaky, {"estimator": RF})


def test_config_needs_estimator_and_label() -> None:
    with pytest.raises(ValidationError) as caught:
        get_component("train").config.model_validate({"estimater": RF})
    text = str(caught.value)
    assert "estimater" in text and "estimator" in text and "label" in text


def test_training_frame_is_not_modified(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path]
) -> None:
    before = breast_cancer_split[0].read_bytes()
    _train(run_step, tmp_path, breast_cancer_split[0], None, {"estimator": "sklearn.tree.DecisionTreeClassifier"})
    assert breast_cancer_split[0].read_bytes() == before
    assert isinstance(read_dataset(breast_cancer_split[0]), pd.DataFrame)
