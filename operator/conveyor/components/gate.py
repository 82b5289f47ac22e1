"""The `gate` component: bless a candidate model, or stop the pipeline before it deploys.

The candidate and, when given, the `baseline` (the model serving now) are scored on the SAME
`evaluation` dataset by the code `evaluate` uses, so the comparison is like for like. The
candidate is blessed only if every check passes:

- `thresholds`: per metric an explicit bound, `{min: 0.95}` for a score (roc_auc, accuracy, r2, ...)
  or `{max: 0.2}` for an error (log_loss, brier, rmse, mae, ...); both may be given;
- with a `baseline`: for every metric in `compare` (default: the threshold metrics, else the
  task's headline metric, roc_auc or accuracy for classifiers, rmse for regressors), the candidate
  may be worse than the baseline by at most `max_regression`, relative to the baseline's value
  (0.01 = 1 %; the default 0 means "no worse than what serves now"), in the metric's direction.

A classifier is also refused when it is degenerate: it predicts one class for every row of the
evaluation data, or its accuracy is no better than always predicting the majority class (the check
`degenerate`; `allow_degenerate_classifier: true` lets such a model through, still saying so). A
constant model can rank rows well enough for a high ROC AUC, so thresholds alone do not catch it.

A metric that cannot be computed (say roc_auc on a one-class evaluation set) fails its check:
the gate never blesses on a missing number. With neither thresholds nor a baseline there is
nothing to judge by and the step fails ("the gate needs thresholds or a baseline") instead of
rubber-stamping the model.

Output `verdict` (JSON): `blessed`, `reasons` (every failed check, in words), `checks` (every
check with its numbers), and `metrics` (each metric's value for the candidate and the baseline).
Metrics: `blessed` (1.0 or 0.0), `checks`, `failed_checks`, `rows`.

`on_reject: fail` (the default) fails the step when the candidate is not blessed, naming the
reasons, so nothing downstream (a deployment) runs. `on_reject: record` succeeds with
`blessed: 0.0`, for pipelines that branch on it: `when: "steps.gate.metrics.blessed == 1.0"`.

This module is the contract, cheap to import; the work (pandas, scikit-learn) is in `_gate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.components.base import Component, ComponentConfig, Metrics
from conveyor.components.scoring import check_metric


class Bound(BaseModel):
    """The acceptable range of one metric: `min` for scores, `max` for errors (both allowed)."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class GateConfig(ComponentConfig):
    """What the candidate must reach, and how much worse than the baseline it may be."""

    label: str | None = None
    """Defaults to the label recorded in the candidate artifact."""
    thresholds: dict[str, Bound] = {}
    """Metric → bound, e.g. `{roc_auc: {min: 0.95}, log_loss: {max: 0.3}}`."""
    max_regression: float | dict[str, float] = Field(default=0.0)
    """Allowed relative worsening against the baseline: one value for all metrics, or per metric."""
    compare: list[str] | None = None
    """Metrics compared with the baseline (default: the threshold metrics, else the headline metric)."""
    on_reject: Literal["fail", "record"] = "fail"
    """`fail`: a rejected candidate fails the step; `record`: the step succeeds with blessed 0."""
    allow_degenerate_classifier: bool = False
    """Bless a classifier that predicts one class for every row, or is no more accurate than always
    predicting the majority class. Off: such a candidate is refused whatever its other numbers (a
    constant model can still rank rows well enough for a high ROC AUC)."""

    @field_validator("thresholds")
    @classmethod
    def _known_threshold_metrics(cls, value: dict[str, Bound]) -> dict[str, Bound]:
        for name in value:
            check_metric(name, "thresholds")
        return value

    @field_validator("compare")
    @classmethod
    def _known_compare_metrics(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            check_metric(name, "compare")
        return value

    @field_validator("max_regression")
    @classmethod
    def _valid_regression(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        for name, allowed in (value if isinstance(value, dict) else {"": value}).items():
            if name:
                check_metric(name, "max_regression")
            if allowed < 0:
                raise ValueError(f"max_regression{'.' + name if name else ''}: must be >= 0, got {allowed}")
        return value

    def allowed_regression(self, metric: str) -> float:
        """The relative worsening allowed for `metric` (0 for a metric a per-metric map does not name)."""
        if isinstance(self.max_regression, dict):
            return self.max_regression.get(metric, 0.0)
        return self.max_regression


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Score `candidate` (and `baseline`) on `evaluation`; write `verdict`; fail when rejected unless recording."""
    from conveyor.components import _gate  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, GateConfig)
    return _gate.run(config, inputs, outputs)


COMPONENT = Component(
    name="gate",
    config=GateConfig,
    run=run,
    required_inputs=frozenset({"candidate", "evaluation"}),
    optional_inputs=frozenset({"baseline"}),
    outputs=frozenset({"verdict"}),
    description="Bless a model against thresholds and the serving baseline on the same data, or stop the pipeline.",
)
