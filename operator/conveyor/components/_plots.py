"""The evaluate component's figures: PNG plots with stable bytes, packed in a deterministic zip.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, so no global figure
state and no GUI backend is ever chosen) under matplotlib's default style, whatever matplotlibrc
the step image carries. Size, dpi and metadata are fixed and the PNG "Software" entry is dropped,
so the same numbers give the same bytes; the zip has sorted entries with a fixed timestamp and
mode, so the same figures give the same archive digest and a re-run is a cache hit downstream.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib.style
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm

from conveyor.components.atomic import atomic_output

FIGURE_SIZE = (6.4, 4.8)  # inches
DPI = 100
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can record
P = ParamSpec("P")
T = TypeVar("T")
_MAX_CURVES = 10
"""One-vs-rest curves drawn per figure at most (MLflow's per-class plots stop at 10 classes too)."""


@dataclass(frozen=True)
class Plot:
    """One figure: its file name in the archive, a title for people, and the PNG bytes."""

    name: str
    title: str
    png: bytes


def _new_axes() -> tuple[Figure, Axes]:
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # "Software" is the only text chunk matplotlib writes by default, and it names the version.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _labels(classes: Sequence[Any]) -> list[str]:
    return [str(c) for c in classes]


def _roc_and_pr(y_true: np.ndarray, scores: np.ndarray, classes: Sequence[Any]) -> list[Plot]:
    """ROC and precision-recall curves: of the second class (binary) or one-vs-rest per class."""
    if scores.ndim == 1:  # binary: scores of classes[1]
        curves = [(str(classes[1]), y_true == classes[1], scores)]
    else:
        curves = [(str(c), y_true == c, scores[:, i]) for i, c in enumerate(classes)][:_MAX_CURVES]
    curves = [(name, hit, s) for name, hit, s in curves if 0 < hit.sum() < len(hit)]
    if not curves:
        return []
    one_vs_rest = " (one-vs-rest)" if scores.ndim > 1 else ""
    roc_figure, roc = _new_axes()
    pr_figure, pr = _new_axes()
    for name, hit, score in curves:
        fpr, tpr, _ = skm.roc_curve(hit, score)
        roc.plot(fpr, tpr, drawstyle="steps-post", label=f"{name} (AUC {skm.auc(fpr, tpr):.3f})")
        precision, recall, _ = skm.precision_recall_curve(hit, score)
        average = skm.average_precision_score(hit, score)
        pr.plot(recall, precision, drawstyle="steps-post", label=f"{name} (AP {average:.3f})")
    roc.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02))
    roc.set_title(f"ROC curve{one_vs_rest}")
    pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    pr.set_title(f"Precision-recall curve{one_vs_rest}")
    roc.legend(loc="lower right", title="positive class")
    pr.legend(loc="lower left", title="positive class")
    return [
        Plot("roc_curve.png", "ROC curve" + one_vs_rest, _png(roc_figure)),
        Plot("precision_recall_curve.png", "Precision-recall curve" + one_vs_rest, _png(pr_figure)),
    ]


def _confusion_matrix(matrix: np.ndarray, classes: Sequence[Any]) -> Plot:
    """Counts, with each cell shaded by its share of the true class's row (rows of any size compare)."""
    figure, axes = _new_axes()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true class")
    names = _labels(classes)
    axes.set_xticks(range(len(names)), names, rotation=45 if len(names) > 5 else 0)
    axes.set_yticks(range(len(names)), names)
    axes.set(xlabel="predicted", ylabel="true")
    axes.set_title("Confusion matrix")
    if len(names) <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            colour = "white" if shares[i, j] > 0.5 else "black"
            axes.text(j, i, str(int(count)), ha="center", va="center", color=colour)
    return Plot("confusion_matrix.png", "Confusion matrix", _png(figure))


def _calibration(calibration: Mapping[str, Any]) -> Plot:
    """The reliability curve of the report's bins, with the row count of each bin beneath."""
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    curve, counts = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    bins = calibration["bins"]
    predicted = [b["mean_predicted"] for b in bins]
    curve.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    curve.plot(predicted, [b["observed"] for b in bins], marker="o", label="model")
    what = "positive class" if calibration["kind"] == "positive-class" else "predicted class (top-label)"
    curve.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1.02))
    curve.set_title(f"Calibration ({what}); ECE {calibration['expected_calibration_error']:.3f}")
    curve.legend(loc="upper left")
    counts.bar(
        [(b["lower"] + b["upper"]) / 2 for b in bins],
        [b["count"] for b in bins],
        width=[b["upper"] - b["lower"] for b in bins],
        edgecolor="white",
    )
    counts.set(xlabel="mean predicted probability", ylabel="rows")
    return Plot("calibration_curve.png", "Calibration (reliability) curve", _png(figure))


def classification_plots(
    model: Any, x: Any, y_true: np.ndarray, confusion: np.ndarray, calibration: Mapping[str, Any] | None
) -> tuple[list[Plot], list[str]]:
    """ROC, precision-recall, confusion matrix and calibration figures, with a note for each one skipped."""
    classes = list(model.classes_)
    plots: list[Plot] = []
    notes: list[str] = []
    scores: np.ndarray | None = None
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(x), dtype=float)
        scores = proba[:, 1] if len(classes) == 2 else proba
    elif len(classes) == 2 and hasattr(model, "decision_function"):
        scores = np.asarray(model.decision_function(x), dtype=float)
    if scores is None:
        notes.append(
            "no ROC or precision-recall curve: the model has neither predict_proba nor a binary decision_function"
        )
    else:
        curves = _roc_and_pr(y_true, scores, classes)
        if not curves:
            notes.append("no ROC or precision-recall curve: the data holds a single class")
        elif scores.ndim > 1 and len(classes) > _MAX_CURVES:
            notes.append(f"ROC and precision-recall curves show the first {_MAX_CURVES} of {len(classes)} classes")
        plots.extend(curves)
    plots.append(_confusion_matrix(confusion, classes))
    if calibration is not None and calibration["bins"]:
        plots.append(_calibration(calibration))
    else:
        notes.append("no calibration curve: it needs probabilities and at least two classes in the data")
    return plots, notes


def regression_plots(y_true: np.ndarray, y_pred: np.ndarray) -> list[Plot]:
    """Predicted against actual values, and residuals against predictions."""
    figure, axes = _new_axes()
    alpha = 0.6 if len(y_true) <= 2000 else 0.2  # many points: lighter, so density shows
    axes.scatter(y_true, y_pred, s=12, alpha=alpha, linewidths=0)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    axes.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1, label="prediction = actual")
    axes.set(xlabel="actual", ylabel="predicted")
    axes.set_title("Predicted vs actual")
    axes.legend(loc="upper left")
    predicted_vs_actual = Plot("predicted_vs_actual.png", "Predicted vs actual", _png(figure))
    figure, axes = _new_axes()
    axes.scatter(y_pred, y_true - y_pred, s=12, alpha=alpha, linewidths=0)
    axes.axhline(0.0, linestyle="--", color="grey", linewidth=1)
    axes.set(xlabel="predicted", ylabel="residual (actual - predicted)")
    axes.set_title("Residuals")
    return [predicted_vs_actual, Plot("residuals.png", "Residuals", _png(figure))]


def render(draw: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call `draw(*args)` under matplotlib's default style, ignoring any matplotlibrc in the image."""
    with matplotlib.style.context("default"):
        return draw(*args, **kwargs)


def write_plots_zip(plots: Sequence[Plot], notes: Sequence[str], path: Path) -> None:
    """Write the PNGs and an index.json (names, titles, notes) as a zip with stable bytes."""
    index = {"plots": [{"file": p.name, "title": p.title} for p in plots], "notes": list(notes)}
    entries = {p.name: p.png for p in plots}
    entries["index.json"] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever the host
            # PNGs are compressed already; storing keeps the archive independent of the zlib build.
            archive.writestr(info, entries[name], compress_type=zipfile.ZIP_STORED)
