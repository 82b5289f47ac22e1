"""The work of the `tune` component (the contract is `conveyor.components.tune`): check, search, refit, save."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm
from sklearn.base import clone, is_classifier
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  # makes the halving searches importable
from sklearn.model_selection import (
    GridSearchCV,
    HalvingGridSearchCV,
    HalvingRandomSearchCV,
    KFold,
    RandomizedSearchCV,
    StratifiedKFold,
)

from conveyor.components._scoring import Task
from conveyor.components._train import TrainingData, build_estimator, read_training_data, recorded_warnings, save_model
from conveyor.components.atomic import json_safe, write_json
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.scoring import METRIC_DIRECTIONS, metrics_of
from conveyor.components.tune import DEFAULT_RANDOM_CANDIDATES, TuneConfig

N_SAMPLES = "n_samples"


def _classification_score(metric: str, model: Any, x: Any, y_true: np.ndarray) -> float:
    """One metric exactly as `_scoring.classification_scores` defines it (NaN where it skips the metric).

    `_scoring` computes every metric and report at once, which costs ten times a fit of a small
    model; a search scores every candidate on every fold, so it computes only the metric it needs.
    A test holds the two to the same numbers.
    """
    classes = list(model.classes_)
    binary = len(classes) == 2
    if metric in ("accuracy", "balanced_accuracy", "precision", "recall", "f1"):
        y_pred = model.predict(x)
        if metric == "accuracy":
            return float(skm.accuracy_score(y_true, y_pred))
        if metric == "balanced_accuracy":
            return float(skm.balanced_accuracy_score(y_true, y_pred)) if len(np.unique(y_true)) > 1 else np.nan
        averaging: dict[str, Any] = {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
        function = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[metric]
        return float(function(y_true, y_pred, zero_division=0, **averaging))
    values = np.unique(y_true)
    if set(json_safe(values.tolist())) - set(json_safe(classes)) or len(values) < 2:
        return np.nan  # labels the model never saw, or a single class: probabilistic scores are undefined
    if not hasattr(model, "predict_proba"):
        if metric == "roc_auc" and binary and hasattr(model, "decision_function"):
            return float(skm.roc_auc_score(y_true == classes[1], model.decision_function(x)))
        return np.nan
    proba = model.predict_proba(x)
    if metric == "log_loss":
        return float(skm.log_loss(y_true, proba, labels=classes))
    if binary:
        positive = y_true == classes[1]
        function = {"roc_auc": skm.roc_auc_score, "pr_auc": skm.average_precision_score, "brier": skm.brier_score_loss}
        return float(function[metric](positive, proba[:, 1]))
    if metric == "brier":
        return float(skm.brier_score_loss(y_true, proba, labels=classes))
    if len(values) < len(classes):
        return np.nan
    if metric == "roc_auc":
        return float(skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes))
    onehot = np.asarray([[label == c for c in classes] for label in y_true])
    return float(skm.average_precision_score(onehot, proba, average="macro"))


def _regression_score(metric: str, model: Any, x: Any, y_true: np.ndarray) -> float:
    """One metric exactly as `_scoring.regression_scores` and `comparable` define it."""
    y_pred = np.asarray(model.predict(x), dtype=float)
    if metric == "r2":
        return float(skm.r2_score(y_true, y_pred)) if len(y_true) >= 2 else np.nan
    sign = -1.0 if metric.startswith("neg_") else 1.0
    function = {"mae": skm.mean_absolute_error, "rmse": skm.root_mean_squared_error, "max_error": skm.max_error}
    return sign * float(function[metric.removeprefix("neg_")](y_true, y_pred))


class MetricScorer:
    """A scikit-learn scorer for one of our metrics, defined as `evaluate`, `gate` and `select-best` define it.

    scikit-learn maximizes scores, so a metric to minimize (log_loss, rmse, ...) is returned negated;
    a metric that cannot be computed on a fold (e.g. ROC AUC on a single class) scores NaN.
    """

    def __init__(self, metric: str, task: Task) -> None:
        self.metric = metric
        self.task = task
        self.sign = 1.0 if METRIC_DIRECTIONS[metric] == "maximize" else -1.0

    def __call__(self, estimator: Any, x: Any, y: Any) -> float:
        """The signed score of a fitted `estimator` on `x`, `y` (scikit-learn's scorer signature)."""
        if self.task == "classification":
            return self.sign * _classification_score(self.metric, estimator, x, np.asarray(y))
        return self.sign * _regression_score(self.metric, estimator, x, np.asarray(y, dtype=float))


def _parameter_error(field: str, path: str, name: str, accepted: Mapping[str, Any]) -> ComponentError:
    return ComponentError(f"{field}: {path!r} has no parameter {name!r} (parameters: {', '.join(sorted(accepted))})")


def check_names(config: TuneConfig, estimator: Any) -> None:
    """Refuse, before anything is fitted, a space or resource naming no parameter of the estimator."""
    accepted = estimator.get_params(deep=False)
    for name in config.space:
        if name not in accepted:
            raise _parameter_error(f"space.{name}", config.estimator, name, accepted)
    fixed = sorted(set(config.space) & set(config.params))
    if fixed:
        raise ComponentError(f"params: {fixed[0]!r} is also in space; a parameter is either fixed or searched")
    if not config.strategy.startswith("halving") or config.resource == N_SAMPLES:
        return
    if config.resource not in accepted:
        raise ComponentError(
            f"resource: {config.estimator!r} has no parameter {config.resource!r} "
            f"(n_samples, or an integer parameter: {', '.join(sorted(accepted))})"
        )
    for field, names in (("space", config.space), ("params", config.params)):
        if config.resource in names:
            raise ComponentError(f"{field}: {config.resource!r} is the resource; halving sets it, round by round")
    if config.max_resources is None:
        raise ComponentError(
            f"max_resources: required when the resource is an estimator parameter ({config.resource!r})"
        )


def _distribution(spec: Mapping[str, list[float | int]]) -> Any:
    """The scipy distribution a `{kind: [low, high]}` space entry stands for (validated by the contract)."""
    (kind, (low, high)), *_ = spec.items()
    if kind == "uniform":
        return stats.uniform(loc=low, scale=high - low)
    if kind == "loguniform":
        return stats.loguniform(low, high)
    return stats.randint(int(low), int(high) + 1)  # our bounds include `high`; scipy's exclude it


def build_search(config: TuneConfig, estimator: Any, scorer: MetricScorer) -> Any:
    """The scikit-learn search for `config.strategy`; the winner is refitted by `run`, not by the search."""
    splitter_type = StratifiedKFold if is_classifier(estimator) else KFold
    common: dict[str, Any] = {
        "scoring": scorer,
        "cv": splitter_type(n_splits=config.cv, shuffle=True, random_state=config.seed),
        "refit": False,
        "error_score": np.nan,
        "n_jobs": config.n_jobs,
    }
    space = {
        name: values if isinstance(values, list) else _distribution(values) for name, values in config.space.items()
    }
    factor: float = int(config.factor) if float(config.factor).is_integer() else config.factor
    halving: dict[str, Any] = {
        "factor": factor,
        "resource": config.resource,
        "max_resources": config.max_resources or "auto",
        "aggressive_elimination": config.aggressive_elimination,
        "return_train_score": False,
        "random_state": config.seed,
    }
    if config.strategy == "grid":
        return GridSearchCV(estimator, space, **common)
    if config.strategy == "random":
        n_iter = config.n_candidates or DEFAULT_RANDOM_CANDIDATES
        return RandomizedSearchCV(estimator, space, n_iter=n_iter, random_state=config.seed, **common)
    if config.strategy == "halving-grid":
        return HalvingGridSearchCV(
            estimator, space, min_resources=config.min_resources or "exhaust", **halving, **common
        )
    return HalvingRandomSearchCV(
        estimator,
        space,
        n_candidates=config.n_candidates or "exhaust",
        min_resources=config.min_resources or "smallest",
        **halving,
        **common,
    )


def _rounds(search: Any, config: TuneConfig, rows: int) -> list[dict[str, Any]]:
    if config.strategy.startswith("halving"):
        return [
            {"round": i, "candidates": int(n), "resource": int(r)}
            for i, (n, r) in enumerate(zip(search.n_candidates_, search.n_resources_, strict=True))
        ]
    return [{"round": 0, "candidates": len(search.cv_results_["params"]), "resource": rows}]


def _trials(search: Any, config: TuneConfig, sign: float, rows: int) -> list[dict[str, Any]]:
    results = search.cv_results_
    count = len(results["params"])
    halving = config.strategy.startswith("halving")
    rounds = [int(r) for r in results["iter"]] if halving else [0] * count
    budgets = [int(r) for r in results["n_resources"]] if halving else [rows] * count

    def searched(params: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k != config.resource}

    trials = []
    for i, params in enumerate(results["params"]):
        later = [searched(p) for p, r in zip(results["params"], rounds, strict=True) if r == rounds[i] + 1]
        trials.append(
            {
                "index": i,
                "round": rounds[i],
                "resource": budgets[i],
                "params": json_safe(params),
                "score": sign * float(results["mean_test_score"][i]),
                "score_std": float(results["std_test_score"][i]),
                "promoted": searched(params) in later,
            }
        )
    return trials


def run(config: TuneConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Search `space` on `train` (through the fitted transformer); save the best pipeline and every trial."""
    estimator = build_estimator(config.estimator, config.params, config.seed)
    check_names(config, estimator)
    task: Task = "classification" if is_classifier(estimator) else "regression"
    metric = config.metric or ("accuracy" if task == "classification" else "r2")
    if metric not in metrics_of(task):
        raise ComponentError(f"metric: {metric!r} is not a {task} metric ({', '.join(sorted(metrics_of(task)))})")
    data: TrainingData = read_training_data(inputs, config.label)
    x, rows = data.model_input(), len(data.features)
    scorer = MetricScorer(metric, task)
    search = build_search(config, estimator, scorer)
    with warnings.catch_warnings(record=True) as caught:
        # Failed candidates and non-finite scores are facts about the search, kept in `trials`.
        warnings.simplefilter("always")
        try:
            search.fit(x, data.y)
        except (ValueError, TypeError) as exc:
            raise ComponentError(f"the {config.strategy} search over {config.estimator!r} failed: {exc}") from exc
    search_warnings = recorded_warnings(caught)
    best_index = int(search.best_index_)
    best_score = scorer.sign * float(search.cv_results_["mean_test_score"][best_index])
    if not np.isfinite(best_score):
        raise ComponentError(
            f"metric: {metric!r} could not be computed for any candidate of the last round "
            f"(see the warnings: {'; '.join(search_warnings[:3]) or 'none'})"
        )
    with warnings.catch_warnings(record=True) as caught:
        # The winner's own fit warnings (e.g. non-convergence) are kept in the model's metadata, as in `train`.
        warnings.simplefilter("always")
        try:
            best = clone(estimator).set_params(**search.best_params_).fit(x, data.y)
        except (ValueError, TypeError) as exc:
            raise ComponentError(f"the best candidate of {config.estimator!r} failed to refit: {exc}") from exc
    fit_warnings = recorded_warnings(caught)
    save_model(best, data, config.estimator, config.label, fit_warnings, outputs["model"])
    rounds = _rounds(search, config, rows)
    trials = _trials(search, config, scorer.sign, rows)
    write_json(
        {
            "estimator": config.estimator,
            "strategy": config.strategy,
            "metric": metric,
            "direction": METRIC_DIRECTIONS[metric],
            "resource": config.resource if config.strategy.startswith("halving") else N_SAMPLES,
            "factor": config.factor if config.strategy.startswith("halving") else None,
            "cv": config.cv,
            "seed": config.seed,
            "train_rows": rows,
            "rounds": rounds,
            "trials": trials,
            "best": {k: trials[best_index][k] for k in ("index", "round", "resource", "params", "score")},
            "warnings": search_warnings,
        },
        outputs["trials"],
    )
    return {
        "best_score": best_score,
        "candidates": float(rounds[0]["candidates"]),
        "rounds": float(len(rounds)),
        **{f"candidates_round_{r['round']}": float(r["candidates"]) for r in rounds},
        "train_rows": float(rows),
        "input_features": float(data.features.shape[1]),
        "fit_warnings": float(len(fit_warnings)),
        "search_warnings": float(len(search_warnings)),
    }
