"""The gate component: blesses a good model, rejects crippled ones, compares with the baseline, refuses to guess."""

from __future__ import annotations

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
ROC = {"roc_auc": {"min": 0.95}}


def _gate(
    run_step: RunStep,
    tmp_path: Path,
    models: dict[str, Path],
    evaluation: Path,
    candidate: str,
    config: dict[str, Any],
    baseline: str | None = None,
) -> tuple[Metrics, dict[str, Any]]:
    inputs = {"candidate": models[candidate], "evaluation": evaluation}
    if baseline is not None:
        inputs["baseline"] = models[baseline]
    metrics = run_step("gate", {"label": "target", **config}, inputs, {"verdict": tmp_path / "verdict.json"})
    return metrics, json.loads((tmp_path / "verdict.json").read_text())


@pytest.mark.parametrize(
    ("candidate", "baseline", "config", "blessed", "reason"),
    [
        ("good", None, {"thresholds": ROC}, True, None),
        ("dummy", None, {"thresholds": ROC}, False, "roc_auc 0.5 is below the minimum 0.95"),
        ("shuffled", None, {"thresholds": ROC}, False, "is below the minimum 0.95"),
        ("good", None, {"thresholds": {"log_loss": {"max": 0.3}, "accuracy": {"min": 0.9}}}, True, None),
        ("dummy", None, {"thresholds": {"log_loss": {"max": 0.3}}}, False, "is above the maximum 0.3"),
        ("good", "dummy", {}, True, None),
        ("dummy", "good", {}, False, "worse than the baseline's"),
        ("stump", "good", {"compare": ["roc_auc", "f1"]}, False, "worse than the baseline's"),
        ("stump", "good", {"compare": ["roc_auc", "f1"], "max_regression": 0.5}, True, None),
        ("stump", "good", {"compare": ["f1"], "max_regression": {"roc_auc": 0.5}}, False, "f1 "),
        ("good", "good", {"thresholds": ROC}, True, None),  # no worse than itself, max_regression 0
        ("good", "shuffled", {"thresholds": {"roc_auc": {"min": 0.999}}}, False, "below the minimum 0.999"),
    ],
)
def test_verdicts(
    run_step: RunStep,
    tmp_path: Path,
    bc_models: dict[str, Path],
    breast_cancer_split: tuple[Path, Path],
    candidate: str,
    baseline: str | None,
    config: dict[str, Any],
    blessed: bool,
    reason: str | None,
) -> None:
    _, test = breast_cancer_split
    config = {**config, "on_reject": "record"}
    metrics, verdict = _gate(run_step, tmp_path, bc_models, test, candidate, config, baseline)
    assert verdict["blessed"] is blessed and metrics["blessed"] == float(blessed)
    assert metrics["failed_checks"] == len(verdict["reasons"]) and metrics["rows"] == 114
    if reason is None:
        assert verdict["reasons"] == []
    else:
        assert any(reason in r for r in verdict["reasons"]), verdict["reasons"]
    # each metric's value for both models, from the same evaluation data
    assert verdict["metrics"]["roc_auc"]["candidate"] is not None
    assert (verdict["metrics"]["roc_auc"]["baseline"] is None) is (baseline is None)
    assert all("passed" in c and "reason" in c for c in verdict["checks"])


def test_the_good_model_beats_the_crippled_ones(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    _, verdict = _gate(run_step, tmp_path, bc_models, test, "good", {"thresholds": ROC}, "shuffled")
    roc = verdict["metrics"]["roc_auc"]
    assert roc["candidate"] > 0.98 and 0.3 < roc["baseline"] < 0.7
    assert [c["kind"] for c in verdict["checks"]] == ["threshold", "degenerate", "baseline"]


def test_rejection_fails_the_step_by_default_and_still_writes_the_verdict(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    with pytest.raises(ComponentError, match=r"the gate rejected the candidate: roc_auc 0.5 is below the minimum"):
        _gate(run_step, tmp_path, bc_models, test, "dummy", {"thresholds": ROC})
    assert json.loads((tmp_path / "verdict.json").read_text())["blessed"] is False


def test_refuses_with_nothing_to_compare(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    for on_reject in ("fail", "record"):
        with pytest.raises(ComponentError, match="the gate needs thresholds or a baseline"):
            _gate(run_step, tmp_path, bc_models, test, "good", {"on_reject": on_reject})
    assert not (tmp_path / "verdict.json").exists()


def test_a_metric_that_cannot_be_computed_is_never_blessed(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    frame = read_dataset(test)
    write_dataset(frame[frame["target"] == 1], tmp_path / "ones")
    metrics, verdict = _gate(
        run_step, tmp_path, bc_models, tmp_path / "ones", "good", {"thresholds": ROC, "on_reject": "record"}
    )
    assert metrics["blessed"] == 0.0
    assert (
        "roc_auc: the candidate's value could not be computed; the data holds a single class" in verdict["reasons"][0]
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"thresholds": {"roc_acu": {"min": 0.9}}}, "thresholds: unknown metric 'roc_acu'"),
        ({"thresholds": {"roc_auc": {}}}, "a threshold needs 'min' or 'max'"),
        ({"thresholds": {"roc_auc": 0.95}}, "thresholds.roc_auc"),
        ({"thresholds": {"roc_auc": {"min": 0.9, "max": 0.8}}}, "min 0.9 is above max 0.8"),
        ({"compare": ["auc"]}, "compare: unknown metric 'auc'"),
        ({"max_regression": -0.1}, "must be >= 0"),
        ({"max_regression": {"acc": 0.1}}, "max_regression: unknown metric 'acc'"),
        ({"on_reject": "ignore"}, "on_reject"),
        ({"threshold": {}}, "threshold"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        get_component("gate").config.model_validate(config)


def test_bad_inputs_name_what_is_wrong(
    run_step: RunStep,
    tmp_path: Path,
    bc_models: dict[str, Path],
    breast_cancer_split: tuple[Path, Path],
    breast_cancer: Path,
    fit_model: Callable[..., Path],
) -> None:
    _, test = breast_cancer_split
    with pytest.raises(ComponentError, match="thresholds/compare: 'r2' is not a classification metric"):
        _gate(run_step, tmp_path, bc_models, test, "good", {"thresholds": {"r2": {"min": 0.5}}})
    write_dataset(read_dataset(test).drop(columns=["target"]), tmp_path / "unlabelled")
    with pytest.raises(ComponentError, match="label: column 'target' is not in input 'evaluation'"):
        _gate(run_step, tmp_path, bc_models, tmp_path / "unlabelled", "good", {"thresholds": ROC})
    # a baseline that needs columns the evaluation data lacks is named as the baseline
    frame = read_dataset(breast_cancer)
    write_dataset(frame.drop(columns=["worst area"]), tmp_path / "narrow-train")
    models = {**bc_models, "narrow": tmp_path / "narrow"}
    fit_model(tmp_path / "narrow-train", None, models["narrow"], "sklearn.tree.DecisionTreeClassifier")
    write_dataset(read_dataset(test).drop(columns=["worst area"]), tmp_path / "no-worst-area")
    with pytest.raises(
        ComponentError, match="baseline: model inputs: column 'worst area' is not in input 'evaluation'"
    ):
        _gate(run_step, tmp_path, models, tmp_path / "no-worst-area", "narrow", {}, baseline="good")


@pytest.mark.parametrize(
    ("allow", "blessed"), [(False, False), (True, True)], ids=["refused-by-default", "allowed-by-setting"]
)
def test_a_degenerate_classifier_is_refused_unless_allowed(
    run_step: RunStep,
    tmp_path: Path,
    breast_cancer_split: tuple[Path, Path],
    fit_model: Callable[..., Path],
    allow: bool,
    blessed: bool,
) -> None:
    """Logistic regression with C=1e-6 predicts the majority class for every row, yet ranks rows well
    (ROC AUC ≈ 0.99): a gate on ROC AUC alone blessed it."""
    train, test = breast_cancer_split
    transformer = tmp_path / "transformer"
    run_step("preprocess", {"label": "target"}, {"train": train}, {"transformer": transformer})
    models = {"constant": tmp_path / "constant"}
    fit_model(train, transformer, models["constant"], "sklearn.linear_model.LogisticRegression", {"C": 1e-6})
    config = {"thresholds": ROC, "on_reject": "record", "allow_degenerate_classifier": allow}
    metrics, verdict = _gate(run_step, tmp_path, models, test, "constant", config)
    assert verdict["metrics"]["roc_auc"]["candidate"] > 0.95  # the threshold alone would pass
    (check,) = [c for c in verdict["checks"] if c["kind"] == "degenerate"]
    assert check["predicted_classes"] == 1 and check["accuracy"] == check["majority_class_accuracy"]
    assert "degenerate classifier: the candidate predicts one class (1) for every row" in check["reason"]
    assert "no better than always predicting the majority class (0.6316)" in check["reason"]
    assert verdict["blessed"] is blessed and metrics["blessed"] == float(blessed)
    assert check["passed"] is allow and ("allowed by allow_degenerate_classifier" in check["reason"]) is allow


def test_a_useful_classifier_passes_the_degenerate_check(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    _, verdict = _gate(run_step, tmp_path, bc_models, test, "good", {"thresholds": ROC})
    (check,) = [c for c in verdict["checks"] if c["kind"] == "degenerate"]
    assert check["passed"] and check["predicted_classes"] == 2
