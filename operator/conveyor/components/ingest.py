"""The `ingest` component: bring a dataset into the pipeline as a Parquet file.

Sources: the datasets scikit-learn ships (`sklearn://breast_cancer`, iris, wine, diabetes,
digits; the target column is `target`), local files (`file://` CSV, Parquet, JSON lines), or a
file the step runtime already fetched, passed as the optional input `data`.

This module is the contract, cheap to import; the work (pandas, pyarrow, scikit-learn) is in `_ingest`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from conveyor.components.base import Component, ComponentConfig, Metrics

FileFormat = Literal["auto", "csv", "parquet", "jsonl"]


class IngestConfig(ComponentConfig):
    """Where the data comes from."""

    source: str | None = None
    """`sklearn://<name>` or `file://<path>`; omit when the step passes the input `data`."""
    format: FileFormat = "auto"
    """File format; `auto` decides from the file suffix."""


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Load the source and write it to the `dataset` output."""
    from conveyor.components import _ingest  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, IngestConfig)
    return _ingest.run(config, inputs, outputs)


COMPONENT = Component(
    name="ingest",
    config=IngestConfig,
    run=run,
    optional_inputs=frozenset({"data"}),
    outputs=frozenset({"dataset"}),
    description="Load a dataset (scikit-learn sample data, a local CSV/Parquet/JSON-lines file) as Parquet.",
)
