"""The built-in components chained as the example pipeline chains them, on real data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.components.base import Metrics

RunStep = Callable[..., Metrics]


@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("sklearn.linear_model.LogisticRegression", {}),
        ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 200}),
    ],
)
def test_breast_cancer_end_to_end(run_step: RunStep, tmp_path: Path, estimator: str, params: dict[str, int]) -> None:
    d = tmp_path
    assert run_step("ingest", {"source": "sklearn://breast_cancer"}, {}, {"dataset": d / "dataset"})["rows"] == 569
    checked = run_step(
        "validate",
        {"label": "target"},
        {"dataset": d / "dataset"},
        {"schema": d / "schema", "report": d / "vr"},
    )
    assert checked["anomalies"] == 0
    run_step(
        "split",
        {"label": "target", "strategy": "stratified", "test_size": 0.25, "seed": 42},
        {"dataset": d / "dataset"},
        {"train": d / "train", "test": d / "test"},
    )
    # The held-out split validated against the training split: same population, so no drift.
    held_out = run_step(
        "validate",
        {"label": "target"},
        {"dataset": d / "test", "reference": d / "train", "schema": d / "schema"},
        {"schema": d / "test-schema", "report": d / "test-report"},
    )
    assert held_out["anomalies"] == 0 and held_out["drifted_features"] == 0
    run_step(
        "preprocess",
        {"label": "target", "scaling": "standard"},
        {"train": d / "train"},
        {"transformer": d / "tf"},
    )
    run_step(
        "train",
        {"label": "target", "estimator": estimator, "params": params, "seed": 42},
        {"train": d / "train", "transformer": d / "tf"},
        {"model": d / "model"},
    )
    metrics = run_step(
        "evaluate",
        {"label": "target"},
        {"model": d / "model", "test": d / "test"},
        {"metrics": d / "m", "report": d / "r", "plots": d / "plots", "report_html": d / "page"},
    )
    assert metrics["roc_auc"] >= 0.97
    assert metrics["accuracy"] >= 0.9
    assert json.loads((d / "m").read_text())["roc_auc"] == metrics["roc_auc"]
