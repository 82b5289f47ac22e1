"""The `train` component: fit a scikit-learn estimator and save the servable pipeline.

The saved model is `Pipeline([("preprocess", transformer), ("model", estimator)])`. The
transformer from `preprocess` is kept exactly as fitted; only the estimator is fitted here, on
the transformed training data. Refitting the whole pipeline would relearn the preprocessing,
so the transformer artifact (and its digest in the lineage) would no longer be what is inside
the model. `evaluate` and the server load this same artifact: what is served is what was
evaluated. Without a `transformer` input the pipeline is `[("model", estimator)]` and every
feature must already be numeric.

Only `sklearn.*` estimators are accepted: the import path comes from pipeline YAML, and the
artifact must load under the skops allow-list (see `modelio`).

This module is the contract, cheap to import; the work (pandas, scikit-learn, skops) is in `_train`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.components.base import Component, ComponentConfig, Metrics


class TrainConfig(ComponentConfig):
    """Which estimator to fit, with which hyperparameters, predicting which column."""

    estimator: str
    """Import path of a scikit-learn estimator class, e.g. `sklearn.ensemble.RandomForestClassifier`."""
    params: dict[str, Any] = {}
    """Constructor parameters; unknown names are errors."""
    label: str
    seed: int = 0
    """Used as `random_state` when the estimator has one and `params` does not set it."""


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Fit the estimator on `train` (through the fitted transformer) and save the pipeline to `model`."""
    from conveyor.components import _train  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, TrainConfig)
    return _train.run(config, inputs, outputs)


COMPONENT = Component(
    name="train",
    config=TrainConfig,
    run=run,
    required_inputs=frozenset({"train"}),
    optional_inputs=frozenset({"transformer"}),
    outputs=frozenset({"model"}),
    description="Fit a scikit-learn estimator behind the fitted transformer; save the pipeline as a model.",
)
