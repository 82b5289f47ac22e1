"""The work of the `split` component (the contract is `conveyor.components.split`): indices, then two files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, require_columns, require_rows, write_dataset
from conveyor.components.split import SplitConfig


def _indices(frame: pd.DataFrame, config: SplitConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    positions = np.arange(n)
    if config.strategy == "group":
        groups = frame[config.group_column].to_numpy()
        if len(set(groups.tolist())) < 2:
            raise ComponentError(f"group_column: {config.group_column!r} needs at least two distinct groups")
        splitter = GroupShuffleSplit(n_splits=1, test_size=config.test_size, random_state=config.seed)
        train, test = next(splitter.split(positions, groups=groups))
        return train, test
    stratify = frame[config.label].to_numpy() if config.strategy == "stratified" else None
    train, test = train_test_split(
        positions, test_size=config.test_size, random_state=config.seed, shuffle=True, stratify=stratify
    )
    return np.sort(train), np.sort(test)


def _time_indices(times: np.ndarray, test_size: float) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    cut = len(order) - max(1, round(len(order) * test_size))
    # Move the boundary back over equal timestamps so no test row is as old as a training row.
    while cut > 0 and ordered[cut - 1] == ordered[cut]:
        cut -= 1
    if cut == 0:
        raise ComponentError("time_column: every training row would share the test set's first timestamp")
    return order[:cut], order[cut:]


def run(config: SplitConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Split `dataset` into `train` and `test`."""
    frame = read_dataset(inputs["dataset"])
    require_rows(frame, "dataset")
    for field in ("label", "group_column", "time_column"):
        column = getattr(config, field)
        if column is not None:
            require_columns(frame, [column], "dataset", field)
    for field in ("group_column", "time_column"):
        column = getattr(config, field)
        if column is not None and frame[column].isna().any():
            raise ComponentError(f"{field}: column {column!r} has missing values")
    if len(frame) < 2:
        raise ComponentError("dataset: needs at least 2 rows to split")
    try:
        if config.strategy == "time":
            train, test = _time_indices(frame[config.time_column].to_numpy(), config.test_size)
        else:
            train, test = _indices(frame, config, len(frame))
    except ValueError as exc:  # e.g. a class too small to stratify, a test set of zero rows
        raise ComponentError(f"strategy {config.strategy!r}: {exc}") from exc
    write_dataset(frame.iloc[train], outputs["train"])
    write_dataset(frame.iloc[test], outputs["test"])
    return {"train_rows": float(len(train)), "test_rows": float(len(test))}
