"""The `ingest` component: bring a dataset into the pipeline as a Parquet file.

Sources: the datasets scikit-learn ships (`sklearn://breast_cancer`, iris, wine, diabetes,
digits; the target column is `target`), local files (`file://` CSV, Parquet, JSON lines), or a
file the step runtime already fetched, passed as the optional input `data`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.request import url2pathname

import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn import datasets as skdatasets

from conveyor.components.base import Component, ComponentConfig, ComponentError, Metrics
from conveyor.components.datasets import require_rows, write_dataset

FileFormat = Literal["auto", "csv", "parquet", "jsonl"]

SKLEARN_DATASETS: dict[str, Callable[..., Any]] = {
    "breast_cancer": skdatasets.load_breast_cancer,
    "iris": skdatasets.load_iris,
    "wine": skdatasets.load_wine,
    "diabetes": skdatasets.load_diabetes,
    "digits": skdatasets.load_digits,
}
_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


class IngestConfig(ComponentConfig):
    """Where the data comes from."""

    source: str | None = None
    """`sklearn://<name>` or `file://<path>`; omit when the step passes the input `data`."""
    format: FileFormat = "auto"
    """File format; `auto` decides from the file suffix."""


def _load_sklearn(name: str) -> pd.DataFrame:
    loader = SKLEARN_DATASETS.get(name)
    if loader is None:
        raise ComponentError(
            f"source: unknown scikit-learn dataset {name!r}; known: {', '.join(sorted(SKLEARN_DATASETS))}"
        )
    bunch = loader(as_frame=True)
    frame = bunch.frame
    # Columns named by position (digits: pixel_0_0 ...) are strings already; make sure of it for Parquet.
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _file_format(path: Path, configured: FileFormat) -> FileFormat:
    """The configured format, else the suffix's, else a sniff of the first bytes.

    Sniffing matters for files the runtime fetched: they are stored under the input's name,
    without a suffix.
    """
    if configured != "auto":
        return configured
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip().startswith(b"{"):
        return "jsonl"
    if b"\0" in head:
        raise ComponentError(f"format: {path.name!r} is binary but not Parquet; set format explicitly")
    return "csv"


def _load_file(path: Path, configured: FileFormat) -> pd.DataFrame:
    if not path.is_file():
        raise ComponentError(f"source: no file at {str(path)!r}")
    fmt = _file_format(path, configured)
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        if fmt == "parquet":
            return pq.read_table(path).to_pandas()
        return pd.read_json(path, lines=True)
    except pd.errors.EmptyDataError as exc:
        raise ComponentError(f"source: {path.name!r} is empty") from exc
    except (ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise ComponentError(f"source: {path.name!r} is not valid {fmt}: {exc}") from exc


def _load_source(source: str, configured: FileFormat) -> pd.DataFrame:
    scheme, sep, rest = source.partition("://")
    if not sep:
        raise ComponentError(f"source: {source!r} is not a URI; use sklearn://<name> or file://<path>")
    if scheme == "sklearn":
        return _load_sklearn(rest.strip("/"))
    if scheme == "file":
        return _load_file(Path(url2pathname(rest)), configured)
    raise ComponentError(
        f"source: scheme {scheme + '://'!r} is not supported yet (supported: sklearn://, file://)"
    )


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Load the source and write it to the `dataset` output."""
    assert isinstance(config, IngestConfig)
    data = inputs.get("data")
    if (data is None) == (config.source is None):
        raise ComponentError("source: set exactly one of the config key 'source' or the input 'data'")
    frame = (
        _load_file(data, config.format)
        if data is not None
        else _load_source(str(config.source), config.format)
    )
    require_rows(frame, "dataset")
    write_dataset(frame, outputs["dataset"])
    return {"rows": float(len(frame)), "columns": float(frame.shape[1])}


COMPONENT = Component(
    name="ingest",
    config=IngestConfig,
    run=run,
    optional_inputs=frozenset({"data"}),
    outputs=frozenset({"dataset"}),
    description="Load a dataset (scikit-learn sample data, a local CSV/Parquet/JSON-lines file) as Parquet.",
)
