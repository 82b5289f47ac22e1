"""The work of the `evaluate` component (the contract is `conveyor.components.evaluate`): load, predict, score, plot."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn.inspection import permutation_importance

from conveyor.components import _plots
from conveyor.components._html import page, table
from conveyor.components._scoring import Scored, score_model, score_subset
from conveyor.components.atomic import atomic_output, write_json
from conveyor.components.base import Metrics
from conveyor.components.datasets import read_dataset, require_columns
from conveyor.components.evaluate import EvaluateConfig
from conveyor.components.modelio import load_artifact


def _calibration(model: Any, scored: Scored, n_bins: int) -> dict[str, Any] | None:
    """Reliability curve: per equal-width probability bin, rows, mean predicted probability, observed rate.

    Binary models: the probability of the second class against its observed frequency. Multiclass:
    "top-label", the probability of the predicted class against how often that prediction was right.
    """
    if "brier" not in scored.scores:
        return None  # no probabilities, or a single class: the notes say why
    classes = list(model.classes_)
    proba = model.predict_proba(scored.x)
    y_true = scored.y.to_numpy()
    if len(classes) == 2:
        kind, confidence, hit = "positive-class", proba[:, 1], y_true == classes[1]
    else:
        kind = "top-label"
        confidence = proba.max(axis=1)
        hit = np.asarray(classes, dtype=object)[proba.argmax(axis=1)] == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = which == b
        if members.any():
            bins.append(
                {
                    "lower": float(edges[b]),
                    "upper": float(edges[b + 1]),
                    "count": int(members.sum()),
                    "mean_predicted": float(confidence[members].mean()),
                    "observed": float(hit[members].mean()),
                }
            )
    errors = sum(c["count"] * abs(c["mean_predicted"] - c["observed"]) for c in bins) / len(y_true)
    return {"kind": kind, "brier": scored.scores["brier"], "expected_calibration_error": errors, "bins": bins}


def _slices_of(column: pd.Series, bins: int) -> Iterator[tuple[str, str, np.ndarray]]:
    """(kind, slice name, row mask) per distinct value, or per quantile bin of a many-valued numeric column."""
    present = column.notna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype)
    if numeric and column.nunique(dropna=True) > bins:
        cut = pd.qcut(column, q=bins, duplicates="drop")
        for interval in cut.cat.categories:
            yield "quantile", str(interval), (cut == interval).to_numpy()
        if not present.all():
            yield "missing", "missing", ~present
        return
    for value in sorted(column.dropna().unique().tolist(), key=lambda v: (str(type(v)), v)):
        yield "value", str(value), (column == value).to_numpy()
    if not present.all():
        yield "missing", "missing", ~present


def _slice_report(model: Any, scored: Scored, test: pd.DataFrame, config: EvaluateConfig) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for feature in config.slices:
        entries = []
        for kind, name, mask in _slices_of(test[feature], config.slice_bins):
            if not mask.any():
                continue
            scores, detail = score_subset(scored.task, model, scored.x[mask], scored.y[mask])
            entries.append(
                {"slice": name, "kind": kind, "n": int(mask.sum()), "metrics": scores, "notes": detail["notes"]}
            )
        report[feature] = entries
    return report


def _importance(model: Any, scored: Scored, config: EvaluateConfig) -> dict[str, Any]:
    """Permutation importance of each model input: how much the score drops when the column is shuffled."""
    if scored.task == "regression":
        scoring = "r2"
    elif len(model.classes_) == 2 and "roc_auc" in scored.scores:
        scoring = "roc_auc"
    else:
        scoring = "accuracy"
    result = permutation_importance(
        model, scored.x, scored.y, scoring=scoring, n_repeats=config.importance_repeats, random_state=config.seed
    )
    ranked = sorted(
        (
            (str(c), float(m), float(s))
            for c, m, s in zip(scored.x.columns, result.importances_mean, result.importances_std, strict=True)
        ),
        key=lambda f: (-f[1], f[0]),
    )
    features = [{"feature": name, "mean": mean, "std": std} for name, mean, std in ranked]
    return {"scoring": scoring, "repeats": config.importance_repeats, "seed": config.seed, "features": features}


def _plots_of(model: Any, scored: Scored, report: Mapping[str, Any]) -> tuple[list[_plots.Plot], list[str]]:
    if scored.task == "classification":
        confusion = np.asarray(report["confusion_matrix"])
        return _plots.render(
            _plots.classification_plots, model, scored.x, scored.y.to_numpy(), confusion, report["calibration"]
        )
    y_pred = np.asarray(model.predict(scored.x), dtype=float)
    return _plots.render(_plots.regression_plots, scored.y.to_numpy(dtype=float), y_pred), []


def render_html(report: Mapping[str, Any], plots: Sequence[_plots.Plot], notes: Sequence[str]) -> str:
    """One self-contained page: what was evaluated, the metrics, per-class scores, notes and the plots inline."""
    about = [
        ("task", report["task"]),
        ("label", report["label"]),
        ("estimator", report["estimator"] or "unknown"),
        ("rows", int(report["metrics"]["rows"])),
    ]
    metrics = [(k, v) for k, v in sorted(report["metrics"].items()) if k != "rows"]
    sections = [table(["", ""], about), "<h2>Metrics</h2>", table(["metric", "value"], metrics)]
    per_class = report.get("per_class")
    if per_class:
        rows = [
            (name, s["precision"], s["recall"], s["f1-score"], int(s["support"]))
            for name, s in per_class.items()
            if isinstance(s, dict)
        ]
        sections += ["<h2>Per class</h2>", table(["class", "precision", "recall", "F1", "support"], rows)]
    all_notes = [*report.get("notes", []), *notes]
    if all_notes:
        items = "\n".join(f"<li>{html.escape(n)}</li>" for n in all_notes)
        sections += ["<h2>Notes</h2>", f"<ul>\n{items}\n</ul>"]
    if plots:
        sections.append("<h2>Plots</h2>")
    for plot in plots:
        data = base64.b64encode(plot.png).decode("ascii")
        caption = html.escape(plot.title)
        sections.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    title = f"Evaluation of {report['estimator'] or 'the model'} on {report['label']!r}"
    return page(title, "\n".join(sections))


def run(config: EvaluateConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Score `model` on `test`; write `metrics`, `report`, `plots` and `report_html`."""
    loaded = load_artifact(inputs["model"], kind="model")
    model, meta = loaded.obj, loaded.metadata
    test = read_dataset(inputs["test"], "test")
    if config.slices:
        require_columns(test, config.slices, "test", "slices")
    scored = score_model(loaded, test, label=config.label, what="test", task=config.task)
    scores = dict(scored.scores)
    scores["rows"] = float(len(test))
    report: dict[str, Any] = {
        "task": scored.task,
        "label": scored.label,
        "estimator": meta.estimator,
        "metrics": scores,
        **scored.detail,
    }
    if scored.task == "classification":
        report["calibration"] = _calibration(model, scored, config.calibration_bins)
    if config.slices:
        report["slices"] = _slice_report(model, scored, test, config)
    if config.importance:
        report["importance"] = _importance(model, scored, config)
    plots, plot_notes = _plots_of(model, scored, report)
    write_json(scores, outputs["metrics"])
    write_json(report, outputs["report"])
    _plots.write_plots_zip(plots, plot_notes, outputs["plots"])
    page = render_html(report, plots, plot_notes)
    with atomic_output(outputs["report_html"]) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return {k: v for k, v in scores.items() if np.isfinite(v)}
