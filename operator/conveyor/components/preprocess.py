"""The `preprocess` component: fit the feature transformation on training data only.

Columns are routed by dtype into one scikit-learn `ColumnTransformer`: numeric columns are
imputed then scaled, other columns (strings, categories, booleans) are imputed with the most
frequent value then one-hot or ordinal encoded (categories unseen in training encode as all
zeros / -1 rather than failing at serving time), and the configured text columns go through
TF-IDF. The fitted transformer is saved as a skops artifact; `train` puts it, unchanged, in
front of the model, so serving applies exactly the statistics learned here.

This module is the contract, cheap to import; the work (pandas, scikit-learn, skops) is in `_preprocess`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from conveyor.components.base import Component, ComponentConfig, Metrics


class PreprocessConfig(ComponentConfig):
    """Which columns to use and how to transform each kind."""

    label: str | None = None
    """The label column, excluded from the features."""
    drop_columns: list[str] = []
    """Columns that are not features (ids, timestamps): excluded from the input signature."""
    numeric_imputation: Literal["mean", "median", "most_frequent", "constant"] = "median"
    scaling: Literal["standard", "minmax", "none"] = "standard"
    categorical_encoding: Literal["onehot", "ordinal"] = "onehot"
    text_columns: list[str] = []
    """Free-text columns, vectorized with TF-IDF (one vocabulary per column)."""
    tfidf_max_features: int = Field(default=10_000, gt=0)


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Fit the transformer on `train` and save it to `transformer`."""
    from conveyor.components import _preprocess  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, PreprocessConfig)
    return _preprocess.run(config, inputs, outputs)


COMPONENT = Component(
    name="preprocess",
    config=PreprocessConfig,
    run=run,
    required_inputs=frozenset({"train"}),
    outputs=frozenset({"transformer"}),
    description="Fit imputation, scaling, encoding and TF-IDF on training data; save the fitted transformer.",
)
