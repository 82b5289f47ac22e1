"""Fixtures for the built-in component tests: running a step by name over files in a temp dir."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from conveyor.components.base import Metrics
from conveyor.components.datasets import read_dataset, write_dataset
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


def train_model(
    train: Path, transformer: Path | None, out: Path, estimator: str, params: Mapping[str, Any] | None = None
) -> Path:
    """Fit `estimator` with the train component (behind `transformer` if given); returns the artifact path."""
    inputs = {"train": train, **({"transformer": transformer} if transformer else {})}
    run_component(
        "train", {"label": "target", "estimator": estimator, "params": dict(params or {})}, inputs, {"model": out}
    )
    return out


@pytest.fixture(scope="session")
def bc_models(tmp_path_factory: pytest.TempPathFactory, breast_cancer_split: tuple[Path, Path]) -> dict[str, Path]:
    """Models of breast_cancer's training split, from good to useless, all behind one fitted transformer.

    good: logistic regression (test ROC AUC ≈ 0.99); stump: a depth-1 tree (weaker, still useful);
    dummy: always the prior (ROC AUC 0.5); shuffled: a forest fitted on permuted labels (chance level).
    """
    directory = tmp_path_factory.mktemp("bc-models")
    train, _ = breast_cancer_split
    transformer = directory / "transformer"
    run_component("preprocess", {"label": "target"}, {"train": train}, {"transformer": transformer})
    frame = read_dataset(train)
    frame["target"] = frame["target"].sample(frac=1.0, random_state=0).to_numpy()
    write_dataset(frame, directory / "shuffled-train")
    return {
        "good": train_model(train, transformer, directory / "good", "sklearn.linear_model.LogisticRegression"),
        "stump": train_model(
            train, transformer, directory / "stump", "sklearn.tree.DecisionTreeClassifier", {"max_depth": 1}
        ),
        "dummy": train_model(train, transformer, directory / "dummy", "sklearn.dummy.DummyClassifier"),
        "shuffled": train_model(
            directory / "shuffled-train",
            transformer,
            directory / "shuffled",
            "sklearn.ensemble.RandomForestClassifier",
            {"n_estimators": 10},
        ),
    }


FitModel = Callable[..., Path]


@pytest.fixture(scope="session")
def fit_model() -> FitModel:
    """`train_model` as a fixture: fit an estimator with the train component."""
    return train_model
