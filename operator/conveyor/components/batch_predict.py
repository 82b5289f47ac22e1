"""The `batch-predict` component: score a whole dataset with a model artifact, chunk by chunk.

The dataset is read with pyarrow in batches of at most `chunk_rows` rows (only the model's
input columns and the `passthrough` ones), each batch is predicted and appended to the output
Parquet file as its own row group, so memory stays bounded by the chunk, not the dataset.
Output columns: the `passthrough` columns (say an id to join back on), then `output_column`
(`predict`), then with `include_probabilities` one `<output_column>_proba_<class>` column per class
(`predict_proba_<class>`): the names the model server gives its outputs.
The model is the artifact `train` wrote, digest-checked by the runtime like every input, so the
predictions come from exactly the model that was evaluated and gated.

This module is the contract, cheap to import; the work (pyarrow, pandas, scikit-learn) is in `_batch_predict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from conveyor.components.base import Component, ComponentConfig, Metrics
from conveyor.components.modelio import OUTPUT_PREDICT


class BatchPredictConfig(ComponentConfig):
    """How big a chunk is and what to write beside the predictions."""

    chunk_rows: int = Field(default=100_000, ge=1)
    """Rows read, predicted and written at a time: the memory bound."""
    output_column: str = Field(default=OUTPUT_PREDICT, min_length=1)
    """Name of the prediction column: `predict`, the model server's output name (set `prediction` for the
    columns this component wrote before it spoke the server's vocabulary)."""
    include_probabilities: bool = False
    """Also write one probability column per class (classifiers with predict_proba only)."""
    passthrough: list[str] = []
    """Columns of `dataset` copied into the output unchanged, e.g. an id."""


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Predict every row of `dataset` with `model`; write `predictions`."""
    from conveyor.components import _batch_predict  # noqa: PLC0415  # the ML stack loads when a step runs

    assert isinstance(config, BatchPredictConfig)
    return _batch_predict.run(config, inputs, outputs)


COMPONENT = Component(
    name="batch-predict",
    config=BatchPredictConfig,
    run=run,
    required_inputs=frozenset({"model", "dataset"}),
    outputs=frozenset({"predictions"}),
    description="Predict a Parquet dataset with a model artifact in bounded-memory chunks; write Parquet.",
)
