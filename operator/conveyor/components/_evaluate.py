"""The work of the `evaluate` component (the contract is `conveyor.components.evaluate`): load, predict, score."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn import metrics as skm
from sklearn.base import is_classifier

from conveyor.components.atomic import json_safe, write_json
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, require_columns, require_rows, split_label
from conveyor.components.evaluate import EvaluateConfig
from conveyor.components.modelio import load_artifact

Task = Literal["classification", "regression"]


def _classification(model: Any, x: pd.DataFrame, y: pd.Series) -> tuple[dict[str, float], dict[str, Any]]:
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
        notes.append(f"test labels never seen in training: {unknown!r}; roc_auc and log_loss skipped")
    elif len(values) < 2:
        notes.append("test set holds a single class; roc_auc and log_loss skipped")
    elif hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)
        if binary:
            scores["roc_auc"] = skm.roc_auc_score(y_true == classes[1], proba[:, 1])
        elif len(values) == len(classes):
            scores["roc_auc"] = skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)
        else:
            notes.append("test set lacks some classes; one-vs-rest roc_auc skipped")
        scores["log_loss"] = skm.log_loss(y_true, proba, labels=classes)
    elif binary and hasattr(model, "decision_function"):
        scores["roc_auc"] = skm.roc_auc_score(y_true == classes[1], model.decision_function(x))
        notes.append("model has no predict_proba; roc_auc from decision_function, log_loss skipped")
    else:
        notes.append("model has no predict_proba; roc_auc and log_loss skipped")
    report = {
        "classes": classes,
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=classes),
        "per_class": skm.classification_report(y_true, y_pred, labels=classes, output_dict=True, zero_division=0),
        "class_counts": dict(zip(values.tolist(), counts.tolist(), strict=True)),
        "notes": notes,
    }
    return {k: float(v) for k, v in scores.items()}, report


def _regression(model: Any, x: pd.DataFrame, y: pd.Series) -> tuple[dict[str, float], dict[str, Any]]:
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


def run(config: EvaluateConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Score `model` on `test`; write `metrics` and `report`."""
    loaded = load_artifact(inputs["model"], kind="model")
    model, meta = loaded.obj, loaded.metadata
    label = config.label or meta.label
    if label is None:
        raise ComponentError("label: not set and the model artifact records none")
    test = read_dataset(inputs["test"], "test")
    require_rows(test, "test")
    _, y = split_label(test, label, "test")
    signature = [f.name for f in meta.inputs]
    require_columns(test, signature, "test", "model inputs")
    model_task: Task = meta.task or ("classification" if is_classifier(model) else "regression")
    task: Task = model_task if config.task == "auto" else config.task
    if task == "classification" and not hasattr(model, "classes_"):
        raise ComponentError("task: 'classification' requested but the model is a regressor")
    try:
        if task == "classification":
            scores, detail = _classification(model, test[signature], y)
        else:
            scores, detail = _regression(model, test[signature], y)
    except (ValueError, TypeError) as exc:
        raise ComponentError(f"evaluate could not score the model on 'test': {exc}") from exc
    scores["rows"] = float(len(test))
    report = {"task": task, "label": label, "estimator": meta.estimator, "metrics": scores, **detail}
    write_json(scores, outputs["metrics"])
    write_json(report, outputs["report"])
    return {k: v for k, v in scores.items() if np.isfinite(v)}
