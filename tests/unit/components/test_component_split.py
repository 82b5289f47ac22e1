"""The split component: sizes, stratification, and no leakage of groups or the future."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, write_dataset
from conveyor.components.registry import get_component

RunStep = Callable[..., Metrics]


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n),
            "label": np.where(np.arange(n) < 160, "a", "b"),  # 80/20 imbalance
            "customer": rng.integers(0, 25, size=n),
            "day": rng.integers(0, 30, size=n),
        }
    )


def _split(run_step: RunStep, tmp_path: Path, frame: pd.DataFrame, config: dict[str, Any]) -> tuple[Any, Any]:
    source = tmp_path / "dataset.parquet"
    write_dataset(frame, source)
    outputs = {"train": tmp_path / "train.parquet", "test": tmp_path / "test.parquet"}
    metrics = run_step("split", config, {"dataset": source}, outputs)
    train, test = read_dataset(outputs["train"]), read_dataset(outputs["test"])
    assert metrics == {"train_rows": len(train), "test_rows": len(test)}
    assert sorted([*train["id"], *test["id"]]) == list(range(len(frame)))  # a partition
    return train, test


@pytest.mark.parametrize(
    "config",
    [
        {"strategy": "random", "test_size": 0.25},
        {"strategy": "stratified", "label": "label", "test_size": 0.25},
        {"strategy": "group", "group_column": "customer", "test_size": 0.25},
        {"strategy": "time", "time_column": "day", "test_size": 0.25},
    ],
)
def test_every_strategy_partitions_the_rows(
    run_step: RunStep, tmp_path: Path, frame: pd.DataFrame, config: dict[str, Any]
) -> None:
    _, test = _split(run_step, tmp_path, frame, config)
    assert 0.15 * len(frame) <= len(test) <= 0.35 * len(frame)


def test_stratified_keeps_class_shares(run_step: RunStep, tmp_path: Path, frame: pd.DataFrame) -> None:
    _, test = _split(run_step, tmp_path, frame, {"strategy": "stratified", "label": "label", "test_size": 0.25})
    assert (test["label"] == "b").sum() == 10  # exactly 20 % of 50


def test_group_split_keeps_groups_apart(run_step: RunStep, tmp_path: Path, frame: pd.DataFrame) -> None:
    train, test = _split(run_step, tmp_path, frame, {"strategy": "group", "group_column": "customer"})
    assert set(train["customer"]).isdisjoint(set(test["customer"]))


def test_time_split_trains_on_the_past_only(run_step: RunStep, tmp_path: Path, frame: pd.DataFrame) -> None:
    train, test = _split(run_step, tmp_path, frame, {"strategy": "time", "time_column": "day", "test_size": 0.3})
    assert train["day"].max() < test["day"].min()  # strict, although days repeat
    assert train["day"].is_monotonic_increasing and test["day"].is_monotonic_increasing


def test_seed_decides_the_split(run_step: RunStep, tmp_path: Path, frame: pd.DataFrame) -> None:
    ids = []
    for seed in (1, 1, 2):
        _, test = _split(run_step, tmp_path, frame, {"seed": seed})
        ids.append(sorted(test["id"]))
    assert ids[0] == ids[1]
    assert ids[0] != ids[2]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"strategy": "stratified", "label": "nope"}, r"label: column 'nope' is not in input 'dataset'"),
        ({"strategy": "group", "group_column": "nope"}, r"group_column: column 'nope'"),
        ({"strategy": "time", "time_column": "nope"}, r"time_column: column 'nope'"),
        ({"strategy": "stratified", "label": "id"}, r"strategy 'stratified':.*least populated class"),
    ],
)
def test_bad_columns(
    run_step: RunStep, tmp_path: Path, frame: pd.DataFrame, config: dict[str, Any], message: str
) -> None:
    source = tmp_path / "dataset.parquet"
    write_dataset(frame, source)
    outputs = {"train": tmp_path / "train.parquet", "test": tmp_path / "test.parquet"}
    with pytest.raises(ComponentError, match=message):
        run_step("split", config, {"dataset": source}, outputs)
    assert not outputs["train"].exists() and not outputs["test"].exists()


def test_empty_dataset(run_step: RunStep, tmp_path: Path, frame: pd.DataFrame) -> None:
    source = tmp_path / "dataset.parquet"
    write_dataset(frame.iloc[:0], source)
    with pytest.raises(ComponentError, match=r"input 'dataset' is empty"):
        run_step("split", {}, {"dataset": source}, {"train": tmp_path / "a", "test": tmp_path / "b"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"strategy": "stratified"}, "needs 'label'"),
        ({"strategy": "group"}, "needs 'group_column'"),
        ({"strategy": "time"}, "needs 'time_column'"),
        ({"test_size": 1.5}, "test_size"),
        ({"strategy": "kfold"}, "strategy"),
        ({"seeed": 3}, "seeed"),
    ],
)
def test_bad_config(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        get_component("split").config.model_validate(config)
