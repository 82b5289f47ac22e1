"""The `split` component: hold out a test set without leaking rows, groups or the future into training.

Strategies: `random`, `stratified` (class proportions kept, needs `label`), `group` (every
value of `group_column` lands wholly in train or wholly in test) and `time` (rows sorted by
`time_column`; the latest rows form the test set, and rows sharing the boundary timestamp all
go to test, so every training timestamp is strictly earlier than every test timestamp).
Both outputs keep the input's row order (time: chronological order).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from pydantic import Field, model_validator
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from conveyor.components.base import Component, ComponentConfig, ComponentError, Metrics
from conveyor.components.datasets import read_dataset, require_columns, require_rows, write_dataset


class SplitConfig(ComponentConfig):
    """How to hold out the test set."""

    label: str | None = None
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 0
    strategy: Literal["random", "stratified", "group", "time"] = "random"
    group_column: str | None = None
    time_column: str | None = None

    @model_validator(mode="after")
    def _strategy_needs_its_column(self) -> Self:
        needed = {
            "stratified": ("label", self.label),
            "group": ("group_column", self.group_column),
            "time": ("time_column", self.time_column),
        }.get(self.strategy)
        if needed is not None and needed[1] is None:
            raise ValueError(f"strategy {self.strategy!r} needs {needed[0]!r} to be set")
        return self


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


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Split `dataset` into `train` and `test`."""
    assert isinstance(config, SplitConfig)
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


COMPONENT = Component(
    name="split",
    config=SplitConfig,
    run=run,
    required_inputs=frozenset({"dataset"}),
    outputs=frozenset({"train", "test"}),
    description="Split a dataset into train and test (random, stratified, by group, or by time).",
)
