"""The tune component: successive halving and the plain searches on real data, the trials record, bad input, digests."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, write_dataset
from conveyor.components.modelio import load_artifact
from conveyor.components.registry import get_component

RunStep = Callable[..., Metrics]
LR = "sklearn.linear_model.LogisticRegression"
RF = "sklearn.ensemble.RandomForestClassifier"
LR_SPACE = {"C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0], "class_weight": [None, "balanced"]}


@pytest.fixture(scope="module")
def transformer(
    tmp_path_factory: pytest.TempPathFactory, run_step: RunStep, breast_cancer_split: tuple[Path, Path]
) -> Path:
    out = tmp_path_factory.mktemp("tune-tf") / "transformer"
    run_step("preprocess", {"label": "target"}, {"train": breast_cancer_split[0]}, {"transformer": out})
    return out


def _tune(
    run_step: RunStep, out: Path, train: Path, transformer: Path | None, config: dict[str, Any]
) -> tuple[Metrics, dict[str, Any]]:
    inputs = {"train": train} | ({"transformer": transformer} if transformer else {})
    out.mkdir(parents=True, exist_ok=True)
    metrics = run_step(
        "tune", {"label": "target", **config}, inputs, {"model": out / "model", "trials": out / "trials"}
    )
    return metrics, json.loads((out / "trials").read_text())


@pytest.fixture(scope="module")
def halving(
    tmp_path_factory: pytest.TempPathFactory,
    run_step: RunStep,
    breast_cancer_split: tuple[Path, Path],
    transformer: Path,
) -> tuple[Path, Metrics, dict[str, Any]]:
    out = tmp_path_factory.mktemp("halving")
    metrics, trials = _tune(
        run_step,
        out,
        breast_cancer_split[0],
        transformer,
        {"estimator": LR, "space": LR_SPACE, "strategy": "halving-grid", "metric": "roc_auc"},
    )
    return out, metrics, trials


def test_halving_finds_a_good_model_and_saves_it_like_train(
    halving: tuple[Path, Metrics, dict[str, Any]], breast_cancer_split: tuple[Path, Path], transformer: Path
) -> None:
    out, metrics, trials = halving
    loaded = load_artifact(out / "model", kind="model")
    model, meta = loaded.obj, loaded.metadata
    assert [name for name, _ in model.steps] == ["preprocess", "model"]
    test = read_dataset(breast_cancer_split[1])
    features = test.drop(columns=["target"])
    # The transformer inside the model is the one preprocess fitted, unchanged.
    fitted = load_artifact(transformer).obj
    np.testing.assert_array_equal(model.named_steps["preprocess"].transform(features), fitted.transform(features))
    assert roc_auc_score(test["target"], model.predict_proba(features)[:, 1]) >= 0.97
    # The same metadata train writes: the winner's resolved params, the signature, the training profile.
    assert meta.estimator == LR and meta.task == "classification" and meta.classes == [0, 1]
    assert {k: meta.params[k] for k in ("C", "class_weight")} == trials["best"]["params"]
    assert [f.name for f in meta.inputs] == list(features.columns)
    assert meta.profile is not None and [p.name for p in meta.profile] == list(features.columns)
    assert metrics["best_score"] == trials["best"]["score"] >= 0.97
    assert metrics["train_rows"] == len(read_dataset(breast_cancer_split[0]))


def test_halving_keeps_fewer_candidates_on_more_rows_each_round(halving: tuple[Path, Metrics, dict[str, Any]]) -> None:
    _, metrics, trials = halving
    rounds = trials["rounds"]
    candidates = [r["candidates"] for r in rounds]
    budgets = [r["resource"] for r in rounds]
    assert candidates[0] == 12 and len(rounds) >= 2
    assert all(a > b for a, b in pairwise(candidates))
    assert all(a < b for a, b in pairwise(budgets))
    assert budgets[-1] <= metrics["train_rows"]
    assert metrics["rounds"] == len(rounds) and metrics["candidates"] == 12
    assert [metrics[f"candidates_round_{i}"] for i in range(len(rounds))] == candidates
    assert (trials["strategy"], trials["metric"], trials["direction"], trials["resource"]) == (
        "halving-grid",
        "roc_auc",
        "maximize",
        "n_samples",
    )
    # Every candidate of every round, with its budget; the promoted ones are the next round's candidates.
    for r in rounds:
        listed = [t for t in trials["trials"] if t["round"] == r["round"]]
        assert len(listed) == r["candidates"]
        assert {t["resource"] for t in listed} == {r["resource"]}
        assert all(set(t["params"]) == {"C", "class_weight"} and t["score"] is not None for t in listed)
        if r["round"] + 1 < len(rounds):
            promoted = [t for t in listed if t["promoted"]]
            assert len(promoted) == rounds[r["round"] + 1]["candidates"]
            # scikit-learn promotes the best scores of the round
            assert min(t["score"] for t in promoted) >= max(t["score"] for t in listed if not t["promoted"])
    best = trials["best"]
    assert best["round"] == len(rounds) - 1
    assert best["score"] == max(t["score"] for t in trials["trials"] if t["round"] == best["round"])


def test_halving_random_grows_an_estimator_parameter(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path], transformer: Path
) -> None:
    metrics, trials = _tune(
        run_step,
        tmp_path,
        breast_cancer_split[0],
        transformer,
        {
            "estimator": RF,
            "space": {"max_depth": {"randint": [2, 6]}, "max_features": {"uniform": [0.1, 0.9]}},
            "strategy": "halving-random",
            "resource": "n_estimators",
            "min_resources": 4,
            "max_resources": 36,
            "n_candidates": 9,
            "metric": "log_loss",
            "cv": 3,
            "seed": 3,
        },
    )
    assert [r["resource"] for r in trials["rounds"]] == [4, 12, 36]
    assert [r["candidates"] for r in trials["rounds"]] == [9, 3, 1]
    for trial in trials["trials"]:
        assert trial["params"]["n_estimators"] == trial["resource"]
        assert 2 <= trial["params"]["max_depth"] <= 6 and 0.1 <= trial["params"]["max_features"] <= 0.9
    assert trials["direction"] == "minimize" and 0 < metrics["best_score"] < 0.3  # log loss, not its negation
    meta = load_artifact(tmp_path / "model").metadata
    assert meta.params["n_estimators"] == 36 and meta.params["max_depth"] == trials["best"]["params"]["max_depth"]


@pytest.mark.parametrize(
    ("strategy", "space", "expected"),
    [
        ("grid", {"C": [0.01, 1.0], "fit_intercept": [True, False]}, 4),
        ("random", {"C": {"loguniform": [0.001, 1.0]}}, 10),  # the default number of candidates
    ],
)
def test_plain_searches_are_one_round_on_every_row(
    run_step: RunStep,
    tmp_path: Path,
    breast_cancer_split: tuple[Path, Path],
    transformer: Path,
    strategy: str,
    space: dict[str, Any],
    expected: int,
) -> None:
    metrics, trials = _tune(
        run_step,
        tmp_path,
        breast_cancer_split[0],
        transformer,
        {"estimator": LR, "space": space, "strategy": strategy, "cv": 3},
    )
    rows = int(metrics["train_rows"])
    assert trials["rounds"] == [{"round": 0, "candidates": expected, "resource": rows}]
    assert len(trials["trials"]) == expected and not any(t["promoted"] for t in trials["trials"])
    assert trials["metric"] == "accuracy" and 0.9 < metrics["best_score"] <= 1.0
    assert metrics["best_score"] == max(t["score"] for t in trials["trials"])


def test_regression_minimizes_rmse(run_step: RunStep, tmp_path: Path) -> None:
    dataset = tmp_path / "diabetes"
    run_step("ingest", {"source": "sklearn://diabetes"}, {}, {"dataset": dataset})
    metrics, trials = _tune(
        run_step,
        tmp_path,
        dataset,
        None,
        {"estimator": "sklearn.linear_model.Ridge", "space": {"alpha": [0.01, 0.1, 1.0, 10.0]}, "metric": "rmse"},
    )
    assert trials["direction"] == "minimize" and 40 < metrics["best_score"] < 70
    meta = load_artifact(tmp_path / "model").metadata
    assert meta.task == "regression" and meta.classes is None


def test_same_seed_same_digest(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path], transformer: Path
) -> None:
    config = {
        "estimator": RF,
        "params": {"n_estimators": 10},
        "space": {"max_depth": {"randint": [2, 8]}, "min_samples_leaf": [1, 3, 5]},
        "strategy": "halving-random",
        "n_candidates": 6,
        "cv": 3,
    }
    digests = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        _tune(run_step, tmp_path / name, breast_cancer_split[0], transformer, {**config, "seed": seed})
        digests.append(
            tuple(hashlib.sha256((tmp_path / name / out).read_bytes()).hexdigest() for out in ("model", "trials"))
        )
    assert digests[0] == digests[1]
    assert digests[0][1] != digests[2][1]  # another seed samples other candidates


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"estimator": RF, "space": {"n_estimator": [10, 20]}},
            r"space\.n_estimator: 'sklearn\.ensemble\.RandomForestClassifier' has no parameter 'n_estimator' "
            r"\(parameters: .*'?n_estimators",
        ),
        ({"estimator": "sklearn.ensemble.RandomForestClassifer", "space": {"max_depth": [2]}}, "unknown estimator"),
        ({"estimator": "os.system", "space": {"max_depth": [2]}}, "only scikit-learn estimators"),
        ({"estimator": RF, "params": {"n_trees": 5}, "space": {"max_depth": [2]}}, "has no parameter 'n_trees'"),
        (
            {"estimator": RF, "params": {"max_depth": 3}, "space": {"max_depth": [2]}},
            r"params: 'max_depth' is also in space",
        ),
        (
            {"estimator": RF, "space": {"max_depth": [2]}, "resource": "n_trees", "max_resources": 9},
            r"resource: .* has no parameter 'n_trees'",
        ),
        (
            {"estimator": RF, "space": {"max_depth": [2]}, "resource": "n_estimators"},
            r"max_resources: required when the resource is an estimator parameter \('n_estimators'\)",
        ),
        (
            {"estimator": RF, "space": {"n_estimators": [2]}, "resource": "n_estimators", "max_resources": 9},
            r"space: 'n_estimators' is the resource",
        ),
        ({"estimator": RF, "space": {"max_depth": [2]}, "metric": "rmse"}, r"metric: 'rmse' is not a classification"),
    ],
)
def test_bad_config_is_refused_before_anything_is_read_or_fitted(
    run_step: RunStep, tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    # The train input does not exist: a refusal naming the config proves nothing was read or fitted first.
    with pytest.raises(ComponentError, match=message):
        _tune(run_step, tmp_path, tmp_path / "absent.parquet", None, config)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"space": {"C": {"loguniform": [0.1, 10]}}, "strategy": "grid"}, r"space\.C: a distribution needs strategy"),
        ({"space": {"C": {"normal": [0, 1]}}, "strategy": "random"}, r"space\.C: a distribution is one of"),
        ({"space": {"C": {"loguniform": [0, 1]}}, "strategy": "random"}, r"space\.C: loguniform needs low > 0"),
        ({"space": {"C": {"uniform": [2, 1]}}, "strategy": "random"}, r"space\.C: uniform needs low < high"),
        ({"space": {"C": {"randint": [1.5, 3]}}, "strategy": "random"}, r"space\.C: randint bounds must be integers"),
        ({"space": {"C": []}}, r"space\.C: the list of candidate values is empty"),
        ({"space": {}}, r"space"),
        ({"space": {"C": [1]}, "metric": "roc_acu"}, r"metric: unknown metric 'roc_acu'"),
        ({"space": {"C": [1]}, "strategy": "hyperband"}, r"strategy"),
        ({"space": {"C": [1]}, "factor": 1}, r"factor"),
        ({"space": {"C": [1]}, "cv": 1}, r"cv"),
    ],
)
def test_bad_config_is_refused_by_the_contract(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        get_component("tune").config.model_validate({"estimator": LR, "label": "target", **config})


def test_empty_dataset_is_refused(run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path]) -> None:
    empty = tmp_path / "empty.parquet"
    write_dataset(read_dataset(breast_cancer_split[0]).iloc[:0], empty)
    with pytest.raises(ComponentError, match=r"input 'train' is empty"):
        _tune(run_step, tmp_path / "out", empty, None, {"estimator": LR, "space": {"C": [1.0]}})
    assert not (tmp_path / "out" / "model").exists()


def test_too_few_rows_for_the_folds_is_a_component_error(
    run_step: RunStep, tmp_path: Path, breast_cancer_split: tuple[Path, Path]
) -> None:
    small = tmp_path / "small.parquet"
    write_dataset(read_dataset(breast_cancer_split[0]).groupby("target").head(2), small)
    with pytest.raises(ComponentError, match=r"the halving-grid search over .* failed"):
        _tune(run_step, tmp_path / "out", small, None, {"estimator": LR, "space": {"C": [1.0, 2.0]}})


def _fitted_cases() -> list[tuple[str, Any, Any, Any]]:
    """(name, fitted model, x, y) for the scorer parity test: binary with string labels, multiclass, regression."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.svm import LinearSVC

    cancer = load_breast_cancer()
    names = np.where(cancer.target == 1, "benign", "malignant")
    x = cancer.data[:, :5]
    iris = load_iris()
    diabetes = load_diabetes()
    return [
        ("binary", LogisticRegression(max_iter=1000).fit(x, names), x[::3], names[::3]),
        ("no-proba", LinearSVC().fit(x, names), x[::3], names[::3]),
        ("multiclass", LogisticRegression(max_iter=1000).fit(iris.data, iris.target), iris.data, iris.target),
        (
            "missing-class",
            LogisticRegression(max_iter=1000).fit(iris.data, iris.target),
            iris.data[:90],
            iris.target[:90],
        ),
        ("regression", Ridge().fit(diabetes.data, diabetes.target), diabetes.data, diabetes.target),
    ]


def test_the_search_scores_each_metric_exactly_as_evaluate_does() -> None:
    """The scorer computes one metric where `_scoring` computes them all; both must give the same number."""
    import pandas as pd

    from conveyor.components._scoring import Scored, comparable, score_subset
    from conveyor.components._tune import MetricScorer
    from conveyor.components.scoring import METRIC_DIRECTIONS, metrics_of

    for case, model, x, y in _fitted_cases():
        task = "regression" if case == "regression" else "classification"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true" (missing-class)
            scores, detail = score_subset(task, model, x, pd.Series(y))
        expected = comparable(Scored(task, "y", scores, detail, x, pd.Series(y)))
        for metric in metrics_of(task):
            scorer = MetricScorer(metric, task)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                got = scorer.sign * scorer(model, x, y)
            sign = 1.0 if METRIC_DIRECTIONS[metric] == "maximize" else -1.0
            assert scorer.sign == sign
            if metric in expected:
                assert got == pytest.approx(expected[metric], rel=1e-12, abs=1e-12), (case, metric)
            else:
                assert np.isnan(got), (case, metric)
