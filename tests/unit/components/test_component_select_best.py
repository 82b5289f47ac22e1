"""The select-best component: scores every trial of a fan-in, keeps the best byte for byte, reports them all."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, write_dataset
from conveyor.components.registry import get_component

RunStep = Callable[..., Metrics]
GRID = [{"max_depth": d} for d in (1, 2, 4, 8)]


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def fan_in(directory: Path, trials: list[tuple[Any, Path]]) -> Path:
    """A fan-in directory as the step runtime lays it out: one file per item and items.json in item order."""
    directory.mkdir(parents=True)
    listing = []
    for i, (item, model) in enumerate(trials):
        (directory / str(i)).write_bytes(model.read_bytes())
        listing.append({"item": item, "path": str(i), "digest": _digest(model)})
    (directory / "items.json").write_text(json.dumps(listing, indent=1))
    return directory


@pytest.fixture(scope="module")
def tree_trials(
    tmp_path_factory: pytest.TempPathFactory,
    breast_cancer_split: tuple[Path, Path],
    fit_model: Callable[..., Path],
) -> Path:
    """Four decision-tree trials over max_depth, fitted on breast_cancer's training split."""
    d = tmp_path_factory.mktemp("trials")
    train, _ = breast_cancer_split
    models = [
        (item, fit_model(train, None, d / f"model-{i}", "sklearn.tree.DecisionTreeClassifier", item))
        for i, item in enumerate(GRID)
    ]
    return fan_in(d / "models", models)


def _select(
    run_step: RunStep, tmp_path: Path, models: Path, validation: Path, config: dict[str, Any]
) -> tuple[Metrics, dict[str, Any]]:
    outputs = {"model": tmp_path / "best", "report": tmp_path / "report.json"}
    metrics = run_step("select-best", config, {"models": models, "validation": validation}, outputs)
    return metrics, json.loads(outputs["report"].read_text())


@pytest.mark.parametrize(
    ("metric", "direction", "pick"),
    [
        ("roc_auc", None, max),
        ("accuracy", None, max),
        ("f1", "maximize", max),
        ("log_loss", None, min),
        ("brier", None, min),
        ("roc_auc", "minimize", min),  # an explicit direction wins over the metric's own
    ],
)
def test_picks_the_best_trial_and_copies_it_byte_for_byte(
    run_step: RunStep,
    tmp_path: Path,
    tree_trials: Path,
    breast_cancer_split: tuple[Path, Path],
    metric: str,
    direction: str | None,
    pick: Callable[..., float],
) -> None:
    _, validation = breast_cancer_split
    config: dict[str, Any] = {"metric": metric, **({"direction": direction} if direction else {})}
    metrics, report = _select(run_step, tmp_path, tree_trials, validation, config)
    scores = [t["score"] for t in report["trials"]]
    assert metrics["trials"] == 4 and len(set(scores)) > 1
    assert metrics["best_score"] == pick(scores) == report["winner"]["score"]
    best = int(metrics["best_index"])
    assert best == scores.index(pick(scores))  # the earliest of equal scores
    assert report["winner"]["item"] == GRID[best] and report["trials"][best]["item"] == GRID[best]
    assert (tmp_path / "best").read_bytes() == (tree_trials / str(best)).read_bytes()
    assert report["winner"]["digest"] == _digest(tmp_path / "best")
    assert report["trials"][best]["params"]["max_depth"] == GRID[best]["max_depth"]
    assert all(t["metrics"][metric] == t["score"] for t in report["trials"])


def test_ties_go_to_the_earliest_trial(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, validation = breast_cancer_split
    models = fan_in(tmp_path / "m", [("a", bc_models["dummy"]), ("b", bc_models["good"]), ("c", bc_models["good"])])
    metrics, report = _select(run_step, tmp_path, models, validation, {"metric": "roc_auc"})
    assert metrics["best_index"] == 1 and report["winner"]["item"] == "b"


def test_a_single_model_file_is_one_trial(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, validation = breast_cancer_split
    metrics, report = _select(run_step, tmp_path, bc_models["good"], validation, {"metric": "accuracy"})
    assert metrics["trials"] == 1 and report["winner"]["item"] is None
    assert (tmp_path / "best").read_bytes() == bc_models["good"].read_bytes()


def test_regression_trials_with_neg_rmse(
    run_step: RunStep, tmp_path: Path, fit_model: Callable[..., Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    run_step("ingest", {"source": "sklearn://diabetes"}, {}, {"dataset": tmp_path / "ds"})
    run_step("split", {"seed": 0}, {"dataset": tmp_path / "ds"}, {"train": tmp_path / "tr", "test": tmp_path / "te"})
    alphas = [0.01, 1.0, 100.0]
    trials = [(a, fit_model(tmp_path / "tr", None, tmp_path / f"r{a}", "sklearn.linear_model.Ridge", {"alpha": a}))
              for a in alphas]  # fmt: skip
    models = fan_in(tmp_path / "m", trials)
    by_rmse, report = _select(run_step, tmp_path, models, tmp_path / "te", {"metric": "rmse"})
    by_neg, _ = _select(run_step, tmp_path, models, tmp_path / "te", {"metric": "neg_rmse"})
    assert by_rmse["best_index"] == by_neg["best_index"] and by_neg["best_score"] == -by_rmse["best_score"]
    assert report["direction"] == "minimize" and by_rmse["best_score"] == min(t["score"] for t in report["trials"])


def test_bad_config_names_the_field() -> None:
    config = get_component("select-best").config
    with pytest.raises(ValidationError, match="metric: unknown metric 'roc'"):
        config.model_validate({"metric": "roc"})
    with pytest.raises(ValidationError, match="direction"):
        config.model_validate({"metric": "roc_auc", "direction": "up"})
    with pytest.raises(ValidationError, match="metric"):
        config.model_validate({})


def test_bad_inputs_name_what_is_wrong(
    run_step: RunStep, tmp_path: Path, tree_trials: Path, breast_cancer_split: tuple[Path, Path]
) -> None:
    _, validation = breast_cancer_split
    with pytest.raises(ComponentError, match="metric: 'r2' is not a classification metric"):
        _select(run_step, tmp_path, tree_trials, validation, {"metric": "r2"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ComponentError, match="input 'models': expected the fan-in"):
        _select(run_step, tmp_path, tmp_path / "empty", validation, {"metric": "roc_auc"})
    frame = read_dataset(validation)
    write_dataset(frame.drop(columns=["worst area"]), tmp_path / "narrow")
    with pytest.raises(
        ComponentError, match=r"trial 0 \(item \{\"max_depth\": 1\}\): model inputs: column 'worst area'"
    ):
        _select(run_step, tmp_path, tree_trials, tmp_path / "narrow", {"metric": "roc_auc"})
    write_dataset(frame[frame["target"] == 0], tmp_path / "zeros")
    with pytest.raises(ComponentError, match=r"metric: 'roc_auc' could not be computed for trial 0.*single class"):
        _select(run_step, tmp_path, tree_trials, tmp_path / "zeros", {"metric": "roc_auc"})
    assert not (tmp_path / "best").exists()
