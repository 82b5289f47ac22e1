"""Fixtures for the built-in component tests: running a step by name over files in a temp dir."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from conveyor.components.base import Metrics
from conveyor.components.registry import get_component

RunStep = Callable[[str, Mapping[str, Any], Mapping[str, Path], Mapping[str, Path]], Metrics]


def run_component(
    name: str, config: Mapping[str, Any], inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> Metrics:
    """Validate the config the way the step runtime does, then run the component."""
    component = get_component(name)
    return component.run(component.config.model_validate(dict(config)), dict(inputs), dict(outputs))


@pytest.fixture(scope="session")
def run_step() -> RunStep:
    return run_component


@pytest.fixture(scope="session")
def breast_cancer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """breast_cancer ingested once as Parquet."""
    path = tmp_path_factory.mktemp("bc") / "dataset.parquet"
    run_component("ingest", {"source": "sklearn://breast_cancer"}, {}, {"dataset": path})
    return path


@pytest.fixture(scope="session")
def breast_cancer_split(tmp_path_factory: pytest.TempPathFactory, breast_cancer: Path) -> tuple[Path, Path]:
    """A stratified 80/20 split of breast_cancer: (train, test)."""
    directory = tmp_path_factory.mktemp("bc-split")
    train, test = directory / "train.parquet", directory / "test.parquet"
    run_component(
        "split",
        {"label": "target", "strategy": "stratified", "seed": 0},
        {"dataset": breast_cancer},
        {"train": train, "test": test},
    )
    return train, test
