"""Datasets between components: Parquet files read and written with pyarrow.

Writing is deterministic (same frame, same library versions → same bytes), which keeps
content-addressed caching effective: re-running an unchanged ingest yields the same digest.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.parquet as pq

from conveyor.components.atomic import atomic_output
from conveyor.components.base import ComponentError


def write_dataset(frame: pd.DataFrame, path: Path) -> None:
    """Write `frame` as Parquet, atomically; the index is dropped so row labels never leak into bytes."""
    bad = [c for c in frame.columns if not isinstance(c, str)]
    if bad:
        raise ComponentError(f"column names must be strings, got {bad[:5]!r}")
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    with atomic_output(path) as tmp:
        # Parquet stores no timestamps, only the writer's version: same data and versions, same bytes.
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)


def read_dataset(path: Path, what: str = "dataset") -> pd.DataFrame:
    """Read a Parquet dataset; a missing or unreadable file is a ComponentError naming the input."""
    if not path.is_file():
        raise ComponentError(f"input {what!r}: no file at {path.name!r}")
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise ComponentError(f"input {what!r} is not a readable Parquet dataset: {exc}") from exc
    return frame


def require_rows(frame: pd.DataFrame, what: str) -> None:
    """Reject an empty dataset with a message naming the input."""
    if len(frame) == 0:
        raise ComponentError(f"input {what!r} is empty (0 rows)")


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str, field: str) -> None:
    """Reject config that names columns the dataset lacks, naming the field, the column and what exists."""
    present = set(frame.columns)
    missing = [c for c in columns if c not in present]
    if missing:
        available = ", ".join(map(repr, list(frame.columns)[:20]))
        raise ComponentError(f"{field}: column {missing[0]!r} is not in input {what!r} (columns: {available})")


def split_label(frame: pd.DataFrame, label: str, what: str) -> tuple[pd.DataFrame, pd.Series]:
    """Separate features from the label column, rejecting a missing label or missing label values."""
    require_columns(frame, [label], what, "label")
    y = frame[label]
    if y.isna().any():
        raise ComponentError(f"label: column {label!r} in input {what!r} has {int(y.isna().sum())} missing values")
    return frame.drop(columns=[label]), y
