"""The evaluate component: classification and regression metrics, notes instead of gaps, errors."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, write_dataset
from conveyor.components.registry import get_component

RunStep = Callable[..., Metrics]


def _model(
    run_step: RunStep, tmp_path: Path, dataset: str, estimator: str, params: dict[str, Any]
) -> tuple[Path, Path]:
    """ingest → stratified/random split → preprocess → train; returns (model, test)."""
    d = tmp_path
    run_step("ingest", {"source": f"sklearn://{dataset}"}, {}, {"dataset": d / "ds"})
    split = {"label": "target", "strategy": "stratified"} if dataset != "diabetes" else {}
    run_step("split", {**split, "seed": 0}, {"dataset": d / "ds"}, {"train": d / "train", "test": d / "test"})
    run_step("preprocess", {"label": "target"}, {"train": d / "train"}, {"transformer": d / "tf"})
    run_step(
        "train",
        {"label": "target", "estimator": estimator, "params": params},
        {"train": d / "train", "transformer": d / "tf"},
        {"model": d / "model"},
    )
    return d / "model", d / "test"


def _evaluate(
    run_step: RunStep, tmp_path: Path, model: Path, test: Path, config: dict[str, Any]
) -> tuple[Metrics, Any, Any]:
    outputs = {
        "metrics": tmp_path / "metrics.json",
        "report": tmp_path / "report.json",
        "plots": tmp_path / "plots.zip",
        "report_html": tmp_path / "report.html",
    }
    metrics = run_step("evaluate", config, {"model": model, "test": test}, outputs)
    return metrics, json.loads(outputs["metrics"].read_text()), json.loads(outputs["report"].read_text())


def test_multiclass_classification(run_step: RunStep, tmp_path: Path) -> None:
    model, test = _model(run_step, tmp_path, "iris", "sklearn.linear_model.LogisticRegression", {})
    metrics, written, report = _evaluate(run_step, tmp_path, model, test, {})
    assert set(metrics) == {
        "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier",
        "majority_class_accuracy", "rows",
    }  # fmt: skip
    assert written == metrics
    assert metrics["rows"] == 30
    assert metrics["accuracy"] > 0.9 and metrics["roc_auc"] > 0.95 and metrics["log_loss"] < 0.5
    assert metrics["majority_class_accuracy"] == pytest.approx(1 / 3)
    assert report["task"] == "classification" and report["classes"] == [0, 1, 2]
    assert sum(map(sum, report["confusion_matrix"])) == 30
    assert set(report["per_class"]) >= {"0", "1", "2", "macro avg"}


def test_regression_reports_r2(run_step: RunStep, tmp_path: Path) -> None:
    model, test = _model(run_step, tmp_path, "diabetes", "sklearn.linear_model.Ridge", {"alpha": 1.0})
    metrics, _, report = _evaluate(run_step, tmp_path, model, test, {})
    assert report["task"] == "regression"
    assert {"mae", "rmse", "r2", "max_error"} <= set(metrics)
    assert 0.25 < metrics["r2"] < 0.7  # a noisy target: Ridge explains about a third on this split (0.33)
    assert metrics["rmse"] >= metrics["mae"] > 0


def test_single_class_test_set_gets_a_note_not_a_crash(run_step: RunStep, tmp_path: Path) -> None:
    model, test = _model(run_step, tmp_path, "breast_cancer", "sklearn.linear_model.LogisticRegression", {})
    frame = read_dataset(test)
    write_dataset(frame[frame["target"] == 1], tmp_path / "ones")
    metrics, _, report = _evaluate(run_step, tmp_path, model, tmp_path / "ones", {})
    assert "roc_auc" not in metrics and "log_loss" not in metrics
    assert "single class" in report["notes"][0]
    assert metrics["accuracy"] > 0.9


@pytest.mark.parametrize(
    ("change", "config", "message"),
    [
        ("drop_label", {}, r"label: column 'target' is not in input 'test'"),
        ("drop_feature", {}, r"model inputs: column 'mean radius' is not in input 'test'"),
        ("empty", {}, r"input 'test' is empty"),
        (None, {"task": "regression", "label": "nope"}, r"label: column 'nope'"),
    ],
)
def test_bad_input(run_step: RunStep, tmp_path: Path, change: str | None, config: dict[str, Any], message: str) -> None:
    model, test = _model(run_step, tmp_path, "breast_cancer", "sklearn.tree.DecisionTreeClassifier", {})
    frame = read_dataset(test)
    if change == "drop_label":
        frame = frame.drop(columns=["target"])
    elif change == "drop_feature":
        frame = frame.drop(columns=["mean radius"])
    elif change == "empty":
        frame = frame.iloc[:0]
    write_dataset(frame, tmp_path / "bad")
    with pytest.raises(ComponentError, match=message):
        _evaluate(run_step, tmp_path, model, tmp_path / "bad", config)
    assert not (tmp_path / "metrics.json").exists()


def test_classification_requested_for_a_regressor(run_step: RunStep, tmp_path: Path) -> None:
    model, test = _model(run_step, tmp_path, "diabetes", "sklearn.linear_model.Ridge", {})
    with pytest.raises(ComponentError, match="task: 'classification' requested but the model is a regressor"):
        _evaluate(run_step, tmp_path, model, test, {"task": "classification"})


def test_a_transformer_is_not_a_model(run_step: RunStep, tmp_path: Path) -> None:
    _, test = _model(run_step, tmp_path, "iris", "sklearn.tree.DecisionTreeClassifier", {})
    with pytest.raises(ComponentError, match="holds a transformer, expected a model"):
        _evaluate(run_step, tmp_path, tmp_path / "tf", test, {})


def test_bad_config() -> None:
    with pytest.raises(ValidationError, match="tsk"):
        get_component("evaluate").config.model_validate({"tsk": "regression"})


def test_calibration_slices_and_importance(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    frame = read_dataset(test)
    frame["site"] = ["north" if i % 3 else "south" for i in range(len(frame))]  # a column the model never saw
    write_dataset(frame, tmp_path / "test")
    config = {"slices": ["mean radius", "site"], "importance": True, "importance_repeats": 2, "calibration_bins": 5}
    metrics, _, report = _evaluate(run_step, tmp_path, bc_models["good"], tmp_path / "test", config)
    calibration = report["calibration"]
    assert calibration["kind"] == "positive-class" and calibration["brier"] == metrics["brier"] < 0.05
    assert sum(b["count"] for b in calibration["bins"]) == 114 and len(calibration["bins"]) <= 5
    assert all(0 <= b["lower"] <= b["mean_predicted"] <= b["upper"] <= 1 for b in calibration["bins"])
    assert 0 <= calibration["expected_calibration_error"] < 0.1
    radius = report["slices"]["mean radius"]
    assert [s["kind"] for s in radius] == ["quantile"] * 4 and sum(s["n"] for s in radius) == 114
    assert all(s["metrics"]["accuracy"] > 0.8 for s in radius)
    site = {s["slice"]: s for s in report["slices"]["site"]}
    assert set(site) == {"north", "south"} and site["south"]["n"] == 38 and site["north"]["kind"] == "value"
    importance = report["importance"]
    assert importance["scoring"] == "roc_auc" and len(importance["features"]) == 30
    means = [f["mean"] for f in importance["features"]]
    assert means == sorted(means, reverse=True) and means[0] > 0


def test_slices_of_a_single_class_get_notes_and_missing_values_a_slice(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    frame = read_dataset(test)
    frame["group"] = frame["target"].map({0: "a", 1: "b"}).where(frame.index % 10 != 0)
    write_dataset(frame, tmp_path / "test")
    _, _, report = _evaluate(run_step, tmp_path, bc_models["good"], tmp_path / "test", {"slices": ["group"]})
    slices = {s["slice"]: s for s in report["slices"]["group"]}
    assert set(slices) == {"a", "b", "missing"} and slices["missing"]["n"] == 12
    assert "roc_auc" not in slices["a"]["metrics"] and "single class" in slices["a"]["notes"][0]


def test_multiclass_calibration_is_top_label(run_step: RunStep, tmp_path: Path) -> None:
    model, test = _model(run_step, tmp_path, "iris", "sklearn.linear_model.LogisticRegression", {})
    _, _, report = _evaluate(run_step, tmp_path, model, test, {"importance": True, "importance_repeats": 2})
    assert report["calibration"]["kind"] == "top-label" and report["importance"]["scoring"] == "accuracy"


def test_regression_slices_and_importance(run_step: RunStep, tmp_path: Path) -> None:
    model, test = _model(run_step, tmp_path, "diabetes", "sklearn.linear_model.Ridge", {})
    _, _, report = _evaluate(run_step, tmp_path, model, test, {"slices": ["sex"], "importance": True})
    assert "calibration" not in report and report["importance"]["scoring"] == "r2"
    assert len(report["slices"]["sex"]) == 2 and all("rmse" in s["metrics"] for s in report["slices"]["sex"])


def test_unknown_slice_column_is_named(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    with pytest.raises(ComponentError, match="slices: column 'region' is not in input 'test'"):
        _evaluate(run_step, tmp_path, bc_models["good"], test, {"slices": ["region"]})


# --- plots and the HTML page ---------------------------------------------------------------------


def _plots(tmp_path: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    with zipfile.ZipFile(tmp_path / "plots.zip") as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
        assert [i.date_time for i in archive.infolist()] == [(1980, 1, 1, 0, 0, 0)] * len(entries)
    assert list(entries) == sorted(entries)
    return entries, json.loads(entries.pop("index.json"))


def _png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@pytest.mark.parametrize(
    ("dataset", "estimator", "expected"),
    [
        (
            "breast_cancer",
            "sklearn.linear_model.LogisticRegression",
            ["calibration_curve.png", "confusion_matrix.png", "precision_recall_curve.png", "roc_curve.png"],
        ),
        (
            "iris",
            "sklearn.linear_model.LogisticRegression",
            ["calibration_curve.png", "confusion_matrix.png", "precision_recall_curve.png", "roc_curve.png"],
        ),
        (
            "breast_cancer",
            "sklearn.svm.LinearSVC",
            ["confusion_matrix.png", "precision_recall_curve.png", "roc_curve.png"],
        ),
        ("diabetes", "sklearn.linear_model.Ridge", ["predicted_vs_actual.png", "residuals.png"]),
    ],
)
def test_plots_per_task(run_step: RunStep, tmp_path: Path, dataset: str, estimator: str, expected: list[str]) -> None:
    model, test = _model(run_step, tmp_path, dataset, estimator, {})
    _evaluate(run_step, tmp_path, model, test, {})
    pngs, index = _plots(tmp_path)
    assert sorted(pngs) == expected == sorted(p["file"] for p in index["plots"])
    for png in pngs.values():
        assert _png_size(png) == (640, 480)
        assert b"Software" not in png and b"tIME" not in png  # nothing that names a version or a time
    if estimator.endswith("LinearSVC"):  # no probabilities: ROC from the decision function, no calibration
        assert any("calibration" in n for n in index["notes"])
    else:
        assert index["notes"] == []


def test_single_class_test_set_gets_a_plot_note(run_step: RunStep, tmp_path: Path) -> None:
    model, test = _model(run_step, tmp_path, "breast_cancer", "sklearn.linear_model.LogisticRegression", {})
    frame = read_dataset(test)
    write_dataset(frame[frame["target"] == 1], tmp_path / "ones")
    _evaluate(run_step, tmp_path, model, tmp_path / "ones", {})
    pngs, index = _plots(tmp_path)
    assert sorted(pngs) == ["confusion_matrix.png"]
    assert any("single class" in n for n in index["notes"])


_EVALUATE_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
from conveyor.components.registry import get_component
component = get_component("evaluate")
inputs = {"model": Path(sys.argv[1]), "test": Path(sys.argv[2])}
out = Path(sys.argv[3])
names = ("metrics", "report", "plots", "report_html")
component.run(component.config.model_validate({}), inputs, {n: out / n for n in names})
"""


def test_plots_and_page_are_byte_identical_across_processes(
    tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    digests = []
    for run in ("first", "second"):
        subprocess.run(
            [
                sys.executable,
                "-c",
                _EVALUATE_IN_A_FRESH_PROCESS,
                str(bc_models["good"]),
                str(test),
                str(tmp_path / run),
            ],
            check=True,
            timeout=300,
        )
        files = ("plots", "report_html", "report")
        digests.append({f: hashlib.sha256((tmp_path / run / f).read_bytes()).hexdigest() for f in files})
    assert digests[0] == digests[1]


def test_html_report_is_self_contained_with_metrics_and_plots(
    run_step: RunStep, tmp_path: Path, bc_models: dict[str, Path], breast_cancer_split: tuple[Path, Path]
) -> None:
    _, test = breast_cancer_split
    metrics, _, _ = _evaluate(run_step, tmp_path, bc_models["good"], test, {})
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert re.search(r"<td>roc_auc</td><td class=\"number\">0\.99\d*</td>", page)
    assert f"{metrics['accuracy']:.6g}" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    pngs, _ = _plots(tmp_path)
    assert sorted(base64.b64decode(i) for i in images) == sorted(pngs.values())
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere


def test_html_escapes_what_it_shows(run_step: RunStep, tmp_path: Path) -> None:
    run_step("ingest", {"source": "sklearn://iris"}, {}, {"dataset": tmp_path / "ds"})
    frame = read_dataset(tmp_path / "ds")
    frame["kind"] = frame["target"].map({0: "<b>setosa</b>", 1: "versicolor & co", 2: "virginica"})
    write_dataset(frame.drop(columns=["target"]), tmp_path / "ds2")
    run_step("preprocess", {"label": "kind"}, {"train": tmp_path / "ds2"}, {"transformer": tmp_path / "tf"})
    run_step(
        "train",
        {"label": "kind", "estimator": "sklearn.linear_model.LogisticRegression"},
        {"train": tmp_path / "ds2", "transformer": tmp_path / "tf"},
        {"model": tmp_path / "model"},
    )
    _evaluate(run_step, tmp_path, tmp_path / "model", tmp_path / "ds2", {})
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<b>setosa</b>" not in page and "&lt;b&gt;setosa&lt;/b&gt;" in page
    assert "versicolor &amp; co" in page
