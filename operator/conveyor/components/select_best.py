"""The `select-best` component: pick the winning trial of a hyper-parameter search.

Tuning is a fan-out: the `train` step runs once per point of a grid
(`forEach: {grid: {max_depth: [2, 4], ...}, maxConcurrency: 4}` with
`params: {max_depth: "{{ item.max_depth }}"}`), each trial a separate, cached, retried unit
that runs in parallel with the others. `select-best` is the fan-in: its `models` input is the
directory of every trial's model (items.json lists each trial's grid point and digest, in grid
order). It scores every trial on the `validation` dataset with the code `evaluate` uses and
copies the best trial's artifact, byte for byte, to `model`, so the winner keeps the digest its
trial produced. Ties go to the earliest trial in grid order. A `models` input that is a single
model file (a step that was not fanned out) is one trial.

`metric` is any metric `gate` knows (roc_auc, accuracy, f1, log_loss, brier, r2, rmse, neg_rmse,
...); `direction` defaults to the metric's own (maximize for scores, minimize for errors).
Use data the trials did not fit on, and not the final test set: selection on the test set makes its
score optimistic.

Output `report` (JSON): metric, direction, every trial (index, grid item, estimator, resolved
params, digest, every score) and the winner. Metrics: `best_score`, `best_index`, `trials`.

Successive halving instead of a full grid: scikit-learn's `HalvingGridSearchCV` (experimental,
`from sklearn.experimental import enable_halving_search_cv`) runs all candidates on few samples
and only the best third on more, in one process. It is not a built-in step: fan-out gives
per-trial caching, retries and parallelism across pods, which an in-process search cannot.
A custom container step can run it and write a model with `conveyor.components.modelio.save_artifact`.

This module is the contract, cheap to import; the work (pandas, scikit-learn) is in `_select_best`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import field_validator

from conveyor.components.base import Component, ComponentConfig, Metrics
from conveyor.components.scoring import METRIC_DIRECTIONS, Direction, check_metric


class SelectBestConfig(ComponentConfig):
    """Which metric decides, and which way is better."""

    label: str | None = None
    """Defaults to the label recorded in the trials' model artifacts."""
    metric: str
    """The deciding metric, e.g. roc_auc, accuracy, f1, log_loss, r2, neg_rmse."""
    direction: Literal["maximize", "minimize"] | None = None
    """Defaults to the metric's natural direction."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return check_metric(value, "metric")

    def resolved_direction(self) -> Direction:
        """The direction given, or the metric's own."""
        return self.direction or METRIC_DIRECTIONS[self.metric]


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Score every trial in `models` on `validation`; copy the best to `model`; write `report`."""
    from conveyor.components import _select_best  # noqa: PLC0415  # the ML stack loads when a step runs

    assert isinstance(config, SelectBestConfig)
    return _select_best.run(config, inputs, outputs)


COMPONENT = Component(
    name="select-best",
    config=SelectBestConfig,
    run=run,
    required_inputs=frozenset({"models", "validation"}),
    outputs=frozenset({"model", "report"}),
    description="Score every tuning trial's model on validation data and keep the best (byte-identical copy).",
)
