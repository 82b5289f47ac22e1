"""The train component: the servable pipeline, seeding, and errors naming the estimator or param."""

from __future__ import annotations

import hashlib
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


def test_model_carries_the_training_data_profile(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path], transformer: Path
) -> None:
    _, meta, _ = _train(
        run_step, tmp_path, breast_cancer_split[0], transformer, {"estimator": "sklearn.tree.DecisionTreeClassifier"}
    )
    frame = read_dataset(breast_cancer_split[0])
    assert meta.profile is not None
    assert [p.name for p in meta.profile] == [f.name for f in meta.inputs]
    for feature in meta.profile:
        values = frame[feature.name].to_numpy(dtype=float)
        assert feature.kind == "numeric" and feature.count == len(values) and feature.missing == 0
        assert feature.mean == pytest.approx(values.mean(), rel=1e-11)
        assert feature.std == pytest.approx(values.std(ddof=0), rel=1e-11)
        assert (feature.min, feature.max) == (values.min(), values.max())
        expected = np.quantile(values, [0.01, 0.05, 0.10, 0.25, 0.5, 0.75, 0.90, 0.95, 0.99])
        assert list(feature.quantiles) == ["p01", "p05", "p10", "p25", "p50", "p75", "p90", "p95", "p99"]
        np.testing.assert_allclose(list(feature.quantiles.values()), expected, rtol=1e-11)
        assert feature.top == [] and feature.distinct is None


def test_profile_of_mixed_features_with_missing_values(run_step: RunStep, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "size": [1.0, 2.0, np.nan, 4.0, np.nan, 6.0, 7.0, 8.0],
            "count": pd.array([3, None, 3, 5, 5, 5, 1, 2], dtype="Int64"),
            "colour": ["red", "blue", None, "red", "green", "blue", "red", np.nan],
            "member": [True, False, True, True, False, True, True, True],
            "review": ["good", "bad", "good", "fine", "good", None, "bad", "good"],
            "target": [0, 1, 0, 1, 0, 1, 0, 1],
        }
    )
    train = tmp_path / "train.parquet"
    write_dataset(frame, train)
    tf = tmp_path / "transformer"
    run_step("preprocess", {"label": "target", "text_columns": ["review"]}, {"train": train}, {"transformer": tf})
    _, meta, _ = _train(run_step, tmp_path, train, tf, {"estimator": "sklearn.dummy.DummyClassifier"})
    assert meta.profile is not None
    profile = {p.name: p for p in meta.profile}
    assert [p.name for p in meta.profile] == ["size", "count", "colour", "member", "review"]

    size = profile["size"]
    present = np.array([1.0, 2.0, 4.0, 6.0, 7.0, 8.0])
    assert (size.kind, size.count, size.missing) == ("numeric", 6, 2)
    assert size.mean == pytest.approx(present.mean()) and size.std == pytest.approx(present.std())
    assert (size.min, size.max, size.quantiles["p50"]) == (1.0, 8.0, 5.0)

    count = profile["count"]
    assert (count.kind, count.count, count.missing) == ("numeric", 7, 1)
    assert count.mean == 3.42857142857  # 24 / 7, rounded to 12 significant digits

    colour = profile["colour"]
    assert (colour.kind, colour.count, colour.missing, colour.distinct) == ("categorical", 6, 2, 3)
    assert [(c.value, c.count, c.frequency) for c in colour.top] == [
        ("red", 3, 0.5),
        ("blue", 2, 0.333333333333),
        ("green", 1, 0.166666666667),
    ]

    member = profile["member"]
    assert member.kind == "categorical"
    assert [(c.value, c.count) for c in member.top] == [(True, 6), (False, 2)]

    review = profile["review"]
    assert (review.kind, review.count, review.missing, review.distinct) == ("text", 7, 1, 3)
    assert [(c.value, c.count) for c in review.top] == [("good", 4), ("bad", 2), ("fine", 1)]


def test_profile_lists_at_most_fifty_categories_most_frequent_first(run_step: RunStep, tmp_path: Path) -> None:
    # 60 categories: c00 once, c01 twice, ..., c59 sixty times; ties cannot happen.
    codes = [f"c{i:02d}" for i in range(60) for _ in range(i + 1)]
    frame = pd.DataFrame({"code": codes, "x": np.arange(len(codes), dtype=float), "target": np.arange(len(codes)) % 2})
    train = tmp_path / "train.parquet"
    write_dataset(frame, train)
    tf = tmp_path / "transformer"
    run_step("preprocess", {"label": "target"}, {"train": train}, {"transformer": tf})
    _, meta, _ = _train(run_step, tmp_path, train, tf, {"estimator": "sklearn.dummy.DummyClassifier"})
    assert meta.profile is not None
    code = meta.profile[0]
    assert code.distinct == 60 and len(code.top) == 50
    assert [c.value for c in code.top] == [f"c{i:02d}" for i in range(59, 9, -1)]


def test_training_twice_gives_the_same_artifact_bytes(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path], transformer: Path
) -> None:
    digests = set()
    for name in ("first", "second"):
        _train(
            run_step,
            tmp_path,
            breast_cancer_split[0],
            transformer,
            {"estimator": RF, "params": {"n_estimators": 5}},
            name=name,
        )
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1


def test_profile_counts_infinities_as_missing_and_survives_empty_columns() -> None:
    from conveyor.components._train import profile_features

    frame = pd.DataFrame({"x": [1.0, np.inf, -np.inf, 3.0], "none": [np.nan] * 4, "c": [None] * 4})
    x, none, c = profile_features(frame)
    assert (x.count, x.missing, x.mean, x.max) == (2, 2, 2.0, 3.0)
    assert (none.kind, none.count, none.missing, none.mean, none.quantiles) == ("numeric", 0, 4, None, {})
    assert (c.kind, c.count, c.missing, c.distinct, c.top) == ("categorical", 0, 4, 0, [])
