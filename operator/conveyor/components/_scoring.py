"""Scoring a loaded model on a dataset: the one implementation behind `evaluate`, `gate` and `select-best`.

Every component that compares models gets its numbers here, so a `roc_auc` in a gate verdict
means exactly what it means in an evaluation report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn import metrics as skm
from sklearn.base import is_classifier

from conveyor.components.atomic import json_safe
from conveyor.components.base import ComponentError
from conveyor.components.datasets import require_columns, require_rows, split_label
from conveyor.components.modelio import LoadedArtifact

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Scored:
    """A model's scores on one dataset, with what was needed to compute them."""

    task: Task
    label: str
    scores: dict[str, float]
    detail: dict[str, Any]
    x: pd.DataFrame
    y: pd.Series


def classification_scores(model: Any, x: pd.DataFrame, y: pd.Series) -> tuple[dict[str, float], dict[str, Any]]:
    """Accuracy, precision/recall/F1, ROC AUC, log loss and Brier score, with notes for what was skipped."""
    classes = list(model.classes_)
    y_true = y.to_numpy()
    y_pred = model.predict(x)
    notes: list[str] = []
    binary = len(classes) == 2
    averaging: dict[str, Any] = {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
    scores: dict[str, float] = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred)
        if len(np.unique(y_true)) > 1
        else float("nan"),
        "precision": skm.precision_score(y_true, y_pred, zero_division=0, **averaging),
        "recall": skm.recall_score(y_true, y_pred, zero_division=0, **averaging),
        "f1": skm.f1_score(y_true, y_pred, zero_division=0, **averaging),
    }
    values, counts = np.unique(y_true, return_counts=True)
    scores["majority_class_accuracy"] = float(counts.max() / counts.sum())
    unknown = sorted(set(values.tolist()) - set(json_safe(classes)))
    if unknown:
        notes.append(f"labels never seen in training: {unknown!r}; roc_auc, log_loss and brier skipped")
    elif len(values) < 2:
        notes.append("the data holds a single class; roc_auc, log_loss and brier skipped")
    elif hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)
        if binary:
            scores["roc_auc"] = skm.roc_auc_score(y_true == classes[1], proba[:, 1])
            scores["pr_auc"] = skm.average_precision_score(y_true == classes[1], proba[:, 1])
            scores["brier"] = skm.brier_score_loss(y_true == classes[1], proba[:, 1])
        else:
            if len(values) == len(classes):
                scores["roc_auc"] = skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)
                onehot = np.asarray([[label == c for c in classes] for label in y_true])
                scores["pr_auc"] = skm.average_precision_score(onehot, proba, average="macro")
            else:
                notes.append("the data lacks some classes; one-vs-rest roc_auc skipped")
            scores["brier"] = skm.brier_score_loss(y_true, proba, labels=classes)
        scores["log_loss"] = skm.log_loss(y_true, proba, labels=classes)
    elif binary and hasattr(model, "decision_function"):
        scores["roc_auc"] = skm.roc_auc_score(y_true == classes[1], model.decision_function(x))
        notes.append("model has no predict_proba; roc_auc from decision_function, log_loss and brier skipped")
    else:
        notes.append("model has no predict_proba; roc_auc, log_loss and brier skipped")
    report = {
        "classes": classes,
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=classes),
        "per_class": skm.classification_report(y_true, y_pred, labels=classes, output_dict=True, zero_division=0),
        "class_counts": dict(zip(values.tolist(), counts.tolist(), strict=True)),
        "notes": notes,
    }
    return {k: float(v) for k, v in scores.items()}, report


def regression_scores(model: Any, x: pd.DataFrame, y: pd.Series) -> tuple[dict[str, float], dict[str, Any]]:
    """MAE, RMSE, max error and R² (when there are two rows or more)."""
    y_true = y.to_numpy(dtype=float)
    y_pred = np.asarray(model.predict(x), dtype=float)
    notes: list[str] = []
    scores = {
        "mae": skm.mean_absolute_error(y_true, y_pred),
        "rmse": skm.root_mean_squared_error(y_true, y_pred),
        "max_error": skm.max_error(y_true, y_pred),
        "mean_label": float(y_true.mean()),
        "mean_prediction": float(y_pred.mean()),
    }
    if len(y_true) >= 2:
        scores["r2"] = skm.r2_score(y_true, y_pred)
    else:
        notes.append("R² needs at least two rows; skipped")
    return {k: float(v) for k, v in scores.items()}, {"notes": notes}


def score_subset(task: Task, model: Any, x: pd.DataFrame, y: pd.Series) -> tuple[dict[str, float], dict[str, Any]]:
    """Score the model on some rows; a scikit-learn refusal becomes a ComponentError."""
    try:
        if task == "classification":
            return classification_scores(model, x, y)
        return regression_scores(model, x, y)
    except (ValueError, TypeError) as exc:
        raise ComponentError(f"could not score the model: {exc}") from exc


def score_model(
    loaded: LoadedArtifact,
    frame: pd.DataFrame,
    *,
    label: str | None,
    what: str,
    task: Literal["auto", "classification", "regression"] = "auto",
) -> Scored:
    """Score a loaded model artifact on the dataset input called `what` (label defaults to the model's)."""
    model, meta = loaded.obj, loaded.metadata
    label = label or meta.label
    if label is None:
        raise ComponentError("label: not set and the model artifact records none")
    require_rows(frame, what)
    _, y = split_label(frame, label, what)
    signature = [f.name for f in meta.inputs]
    require_columns(frame, signature, what, "model inputs")
    model_task: Task = meta.task or ("classification" if is_classifier(model) else "regression")
    chosen: Task = model_task if task == "auto" else task
    if chosen == "classification" and not hasattr(model, "classes_"):
        raise ComponentError("task: 'classification' requested but the model is a regressor")
    x = frame[signature]
    try:
        scores, detail = score_subset(chosen, model, x, y)
    except ComponentError as exc:
        raise ComponentError(f"input {what!r}: {exc}") from exc
    return Scored(task=chosen, label=label, scores=scores, detail=detail, x=x, y=y)


def comparable(scored: Scored) -> dict[str, float]:
    """The scores gate and select-best compare: finite values, plus the negated errors (neg_rmse, neg_mae)."""
    scores = {k: v for k, v in scored.scores.items() if np.isfinite(v)}
    if scored.task == "regression":
        scores["neg_rmse"] = -scores["rmse"]
        scores["neg_mae"] = -scores["mae"]
    return scores
