"""The work of the `ingest` component (the contract is `conveyor.components.ingest`): read a source, write Parquet."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.request import url2pathname

import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn import datasets as skdatasets

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import require_rows, write_dataset
from conveyor.components.ingest import FileFormat, IngestConfig

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
    raise ComponentError(f"source: scheme {scheme + '://'!r} is not supported yet (supported: sklearn://, file://)")


def run(config: IngestConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Load the source and write it to the `dataset` output."""
    data = inputs.get("data")
    if (data is None) == (config.source is None):
        raise ComponentError("source: set exactly one of the config key 'source' or the input 'data'")
    frame = _load_file(data, config.format) if data is not None else _load_source(str(config.source), config.format)
    require_rows(frame, "dataset")
    write_dataset(frame, outputs["dataset"])
    return {"rows": float(len(frame)), "columns": float(frame.shape[1])}
