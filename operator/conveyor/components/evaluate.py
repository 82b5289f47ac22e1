"""The `evaluate` component: score a saved model on held-out data.

It loads the very artifact `train` wrote (and the server will serve) and writes two JSON
documents: `metrics`, a flat map of headline numbers that a gate can compare, and `report`,
the detail behind them (per-class scores, confusion matrix, and a note for every metric that
could not be computed and why, instead of a silent gap).

Classification: accuracy, balanced accuracy, precision, recall, F1 (binary: of the second
class in `classes_`; multiclass: macro), ROC AUC (binary, or macro one-vs-rest), log loss,
Brier score, and the majority-class accuracy as a baseline. Regression: MAE, RMSE, R², max error.

The report also holds, for classifiers with probabilities, the reliability curve (`calibration`:
per probability bin its row count, mean predicted probability and observed positive rate; of the
second class for binary models, of the predicted class, "top-label", for multiclass ones); with
`slices`, every metric per slice of the named columns (per distinct value, or per
quantile bin for numeric columns with more than `slice_bins` values, each with its row count);
with `importance: true`, the permutation importance of every model input (slow: the model
predicts `importance_repeats` times per column).

`plots` is a zip of PNG figures (matplotlib, Agg canvas, fixed size and dpi, no version text, fixed
zip timestamps and sorted entries, so the same numbers give the same digest) with an `index.json`
naming each figure and noting any that was skipped and why. Classification: ROC and precision-recall
curves (of the second class for binary models, one-vs-rest per class, at most 10, for multiclass),
the confusion matrix, and the reliability curve of the report's calibration bins. Regression:
predicted against actual values, and residuals against predictions. `report_html` is one
self-contained page (no scripts, no external files) with the metrics, per-class scores, notes and
the same figures inlined.

This module is the contract, cheap to import; the work (pandas, numpy, scikit-learn, matplotlib) is
in `_evaluate` and `_plots`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from conveyor.components.base import Component, ComponentConfig, Metrics


class EvaluateConfig(ComponentConfig):
    """Which column holds the truth and what kind of task this is."""

    label: str | None = None
    """Defaults to the label recorded in the model artifact."""
    task: Literal["auto", "classification", "regression"] = "auto"
    """`auto` takes the task recorded in the model (classifier or regressor)."""
    slices: list[str] = []
    """Columns of `test` to report every metric per slice of (they need not be model inputs)."""
    slice_bins: int = Field(default=4, ge=2, le=100)
    """A numeric slice column with more distinct values than this is cut into this many quantile bins."""
    calibration_bins: int = Field(default=10, ge=2, le=100)
    """Equal-width probability bins of the reliability curve."""
    importance: bool = False
    """Permutation feature importance of every model input (off by default: it re-predicts many times)."""
    importance_repeats: int = Field(default=5, ge=1, le=100)
    """Shuffles per column for the permutation importance."""
    seed: int = 0
    """Seed of the permutation importance shuffles."""


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Score `model` on `test`; write `metrics`, `report`, `plots` and `report_html`."""
    from conveyor.components import _evaluate  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, EvaluateConfig)
    return _evaluate.run(config, inputs, outputs)


COMPONENT = Component(
    name="evaluate",
    config=EvaluateConfig,
    run=run,
    required_inputs=frozenset({"model", "test"}),
    outputs=frozenset({"metrics", "report", "plots", "report_html"}),
    description="Score a model artifact on a test set (classification or regression metrics, plots, an HTML report).",
)
