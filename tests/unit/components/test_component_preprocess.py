"""The preprocess component: column routing, fitting on training data only, unseen values, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import write_dataset
from conveyor.components.modelio import load_artifact
from conveyor.components.registry import get_component

RunStep = Callable[..., Metrics]


@pytest.fixture
def train_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 120
    income = rng.normal(50.0, 10.0, size=n)
    income[::10] = np.nan
    return pd.DataFrame(
        {
            "income": income,
            "age": rng.integers(18, 90, size=n),
            "city": rng.choice(["paris", "lyon", "nice"], size=n),
            "review": rng.choice(["great product", "bad service", "would buy again"], size=n),
            "customer_id": np.arange(n),
            "label": rng.integers(0, 2, size=n),
        }
    )


def _fit(run_step: RunStep, tmp_path: Path, frame: pd.DataFrame, config: dict[str, Any]) -> tuple[Any, Any, Metrics]:
    source, out = tmp_path / "train.parquet", tmp_path / "transformer"
    write_dataset(frame, source)
    metrics = run_step("preprocess", config, {"train": source}, {"transformer": out})
    loaded = load_artifact(out, kind="transformer")
    return loaded.obj, loaded.metadata, metrics


BASE = {"label": "label", "drop_columns": ["customer_id"], "text_columns": ["review"]}


def test_routes_columns_and_records_the_signature(run_step: RunStep, tmp_path: Path, train_frame: pd.DataFrame) -> None:
    transformer, meta, metrics = _fit(run_step, tmp_path, train_frame, BASE)
    assert [f.name for f in meta.inputs] == ["income", "age", "city", "review"]  # no label, no id
    assert meta.label == "label"
    names = list(transformer.get_feature_names_out())
    assert names == meta.outputs
    assert {"num__income", "num__age", "cat__city_lyon", "cat__city_nice", "cat__city_paris"} <= set(names)
    assert {"text0__great", "text0__service"} <= set(names)
    assert metrics == {"input_features": 4, "output_features": len(names)}


def test_statistics_come_from_the_training_data(run_step: RunStep, tmp_path: Path, train_frame: pd.DataFrame) -> None:
    transformer, _, _ = _fit(run_step, tmp_path, train_frame, BASE)
    scaler = transformer.named_transformers_["num"].named_steps["scale"]
    imputer = transformer.named_transformers_["num"].named_steps["impute"]
    median = train_frame["income"].median()
    assert imputer.statistics_[0] == pytest.approx(median)
    imputed = train_frame["income"].fillna(median)
    assert scaler.mean_[0] == pytest.approx(imputed.mean())


def test_serving_rows_with_unseen_and_missing_values_transform(
    run_step: RunStep, tmp_path: Path, train_frame: pd.DataFrame
) -> None:
    transformer, meta, _ = _fit(run_step, tmp_path, train_frame, BASE)
    row = pd.DataFrame({"income": [np.nan], "age": [40], "city": ["marseille"], "review": [None]})
    out = transformer.transform(row)
    names = list(meta.outputs)
    city = [i for i, n in enumerate(names) if n.startswith("cat__city")]
    assert np.asarray(out)[0, city].tolist() == [0.0, 0.0, 0.0]  # unseen city: all zeros, no error


@pytest.mark.parametrize(
    ("config", "check"),
    [
        ({"scaling": "minmax"}, "minmax"),
        ({"scaling": "none"}, "none"),
        ({"categorical_encoding": "ordinal"}, "ordinal"),
    ],
)
def test_options(
    run_step: RunStep, tmp_path: Path, train_frame: pd.DataFrame, config: dict[str, Any], check: str
) -> None:
    transformer, meta, _ = _fit(run_step, tmp_path, train_frame, {**BASE, "text_columns": [], **config})
    out = np.asarray(transformer.transform(train_frame))
    names = list(meta.outputs)
    age = out[:, names.index("num__age")]
    if check == "minmax":
        assert age.min() == 0.0 and age.max() == 1.0
    elif check == "none":
        np.testing.assert_array_equal(age, train_frame["age"].to_numpy(dtype=float))
    else:
        assert "cat__city" in names and sorted(set(out[:, names.index("cat__city")])) == [0.0, 1.0, 2.0]
        unseen = transformer.transform(train_frame.head(1).assign(city="marseille"))
        assert np.asarray(unseen)[0, names.index("cat__city")] == -1


@pytest.mark.parametrize(
    ("config", "frame_change", "message"),
    [
        ({"label": "nope"}, None, r"label: column 'nope' is not in input 'train'"),
        ({"label": "label", "text_columns": ["comment"]}, None, r"text_columns: column 'comment'"),
        ({"label": "label", "drop_columns": ["ssn"]}, None, r"drop_columns: column 'ssn'"),
        ({"label": "label"}, "datetime", r"column 'when' has dtype datetime64.*drop_columns"),
        ({"label": "label"}, "empty", r"input 'train' is empty"),
    ],
)
def test_bad_input(
    run_step: RunStep,
    tmp_path: Path,
    train_frame: pd.DataFrame,
    *,
    config: dict[str, Any],
    frame_change: str | None,
    message: str,
) -> None:
    frame = train_frame
    if frame_change == "datetime":
        frame = frame.assign(when=pd.Timestamp("2024-01-01"))
    elif frame_change == "empty":
        frame = frame.iloc[:0]
    with pytest.raises(ComponentError, match=message):
        _fit(run_step, tmp_path, frame, config)
    assert not (tmp_path / "transformer").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"scaling": "robust"}, "scaling"),
        ({"numeric_imputation": "knn"}, "numeric_imputation"),
        ({"text_column": ["a"]}, "text_column"),
    ],
)
def test_bad_config(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        get_component("preprocess").config.model_validate(config)
