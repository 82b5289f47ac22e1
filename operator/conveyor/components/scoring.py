"""The model metrics that `gate` and `select-best` compare, and which way is better for each.

Light on purpose (no ML imports): the configuration models validate metric names with it, so a
typo such as `roc_acu` is rejected when the pipeline is checked, not after a training run. The
values themselves are computed by `_scoring`, the same code `evaluate` reports with.
"""

from __future__ import annotations

from typing import Literal

Direction = Literal["maximize", "minimize"]
Task = Literal["classification", "regression"]

CLASSIFICATION_METRICS: dict[str, Direction] = {
    "accuracy": "maximize",
    "balanced_accuracy": "maximize",
    "precision": "maximize",
    "recall": "maximize",
    "f1": "maximize",
    "roc_auc": "maximize",
    "pr_auc": "maximize",
    "log_loss": "minimize",
    "brier": "minimize",
}
REGRESSION_METRICS: dict[str, Direction] = {
    "r2": "maximize",
    "mae": "minimize",
    "rmse": "minimize",
    "max_error": "minimize",
    "neg_mae": "maximize",
    "neg_rmse": "maximize",
}
METRIC_DIRECTIONS: dict[str, Direction] = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}


def check_metric(name: str, field: str) -> str:
    """Return `name` if it is a metric we compute; otherwise raise a ValueError naming the field."""
    if name not in METRIC_DIRECTIONS:
        raise ValueError(f"{field}: unknown metric {name!r} (known: {', '.join(sorted(METRIC_DIRECTIONS))})")
    return name


def metrics_of(task: Task) -> dict[str, Direction]:
    """The comparable metrics of a task."""
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def is_better(a: float, b: float, direction: Direction) -> bool:
    """Whether score `a` is strictly better than `b`."""
    return a > b if direction == "maximize" else a < b
