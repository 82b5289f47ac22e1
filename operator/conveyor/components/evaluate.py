"""The `evaluate` component: score a saved model on held-out data.

It loads the very artifact `train` wrote (and the server will serve) and writes two JSON
documents: `metrics`, a flat map of headline numbers that a gate can compare, and `report`,
the detail behind them (per-class scores, confusion matrix, and a note for every metric that
could not be computed and why, instead of a silent gap).

Classification: accuracy, balanced accuracy, precision, recall, F1 (binary: of the second
class in `classes_`; multiclass: macro), ROC AUC (binary, or macro one-vs-rest), log loss,
and the majority-class accuracy as a baseline. Regression: MAE, RMSE, R², max error.

This module is the contract, cheap to import; the work (pandas, numpy, scikit-learn) is in `_evaluate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from conveyor.components.base import Component, ComponentConfig, Metrics


class EvaluateConfig(ComponentConfig):
    """Which column holds the truth and what kind of task this is."""

    label: str | None = None
    """Defaults to the label recorded in the model artifact."""
    task: Literal["auto", "classification", "regression"] = "auto"
    """`auto` takes the task recorded in the model (classifier or regressor)."""


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Score `model` on `test`; write `metrics` and `report`."""
    from conveyor.components import _evaluate  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, EvaluateConfig)
    return _evaluate.run(config, inputs, outputs)


COMPONENT = Component(
    name="evaluate",
    config=EvaluateConfig,
    run=run,
    required_inputs=frozenset({"model", "test"}),
    outputs=frozenset({"metrics", "report"}),
    description="Score a model artifact on a test set (classification or regression metrics).",
)
