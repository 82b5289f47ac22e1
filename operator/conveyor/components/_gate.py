"""The work of the `gate` component (the contract is `conveyor.components.gate`): score both models, judge."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.components._scoring import Scored, comparable, score_model
from conveyor.components.atomic import json_safe, write_json
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset
from conveyor.components.gate import GateConfig
from conveyor.components.modelio import load_artifact
from conveyor.components.scoring import METRIC_DIRECTIONS, metrics_of


def _headline(scored: Scored) -> str:
    if scored.task == "regression":
        return "rmse"
    return "roc_auc" if "roc_auc" in scored.scores else "accuracy"


def _threshold_checks(config: GateConfig, candidate: Mapping[str, float], notes: list[str]) -> list[dict[str, Any]]:
    checks = []
    for metric, bound in sorted(config.thresholds.items()):
        value = candidate.get(metric)
        check: dict[str, Any] = {
            "kind": "threshold",
            "metric": metric,
            "candidate": value,
            "min": bound.min,
            "max": bound.max,
        }
        if value is None:
            why = f"; {' '.join(notes)}" if notes else ""
            check.update(passed=False, reason=f"{metric}: the candidate's value could not be computed{why}")
        elif bound.min is not None and value < bound.min:
            check.update(passed=False, reason=f"{metric} {value:.4g} is below the minimum {bound.min:g}")
        elif bound.max is not None and value > bound.max:
            check.update(passed=False, reason=f"{metric} {value:.4g} is above the maximum {bound.max:g}")
        else:
            check.update(passed=True, reason=f"{metric} {value:.4g} is within the threshold")
        checks.append(check)
    return checks


def _degenerate_check(config: GateConfig, candidate: Scored) -> dict[str, Any] | None:
    """Whether a classifier predicts a single class, or no better than the majority class; None when the
    evaluation data holds one class (nothing to tell a constant model from)."""
    classes, matrix = candidate.detail.get("classes", []), candidate.detail.get("confusion_matrix")
    if candidate.task != "classification" or matrix is None or len(candidate.detail.get("class_counts", {})) < 2:
        return None
    predicted = [c for c, n in zip(classes, [sum(col) for col in zip(*matrix, strict=True)], strict=True) if n]
    accuracy, majority = candidate.scores["accuracy"], candidate.scores["majority_class_accuracy"]
    problems = []
    if len(predicted) == 1:
        problems.append(f"the candidate predicts one class ({json_safe(predicted[0])!r}) for every row")
    if accuracy <= majority:
        problems.append(
            f"its accuracy {accuracy:.4g} is no better than always predicting the majority class ({majority:.4g})"
        )
    check: dict[str, Any] = {
        "kind": "degenerate",
        "predicted_classes": len(predicted),
        "accuracy": accuracy,
        "majority_class_accuracy": majority,
        "allowed": config.allow_degenerate_classifier,
    }
    if not problems:
        return {**check, "passed": True, "reason": f"predicts {len(predicted)} classes, beats the majority class"}
    what = "degenerate classifier: " + " and ".join(problems)
    if config.allow_degenerate_classifier:
        return {**check, "passed": True, "reason": f"{what} (allowed by allow_degenerate_classifier)"}
    return {**check, "passed": False, "reason": f"{what} (set allow_degenerate_classifier to bless it anyway)"}


def _baseline_checks(
    config: GateConfig, metrics: list[str], candidate: Mapping[str, float], baseline: Mapping[str, float]
) -> list[dict[str, Any]]:
    checks = []
    for metric in metrics:
        direction = METRIC_DIRECTIONS[metric]
        allowed = config.allowed_regression(metric)
        new, old = candidate.get(metric), baseline.get(metric)
        check: dict[str, Any] = {
            "kind": "baseline",
            "metric": metric,
            "direction": direction,
            "candidate": new,
            "baseline": old,
            "max_regression": allowed,
        }
        if new is None or old is None:
            missing = "candidate" if new is None else "baseline"
            check.update(passed=False, reason=f"{metric}: the {missing}'s value could not be computed")
            checks.append(check)
            continue
        # Worsening as a share of the baseline's magnitude; positive means worse in the metric's direction.
        worse_by = (old - new) if direction == "maximize" else (new - old)
        relative = worse_by / abs(old) if old != 0 else (0.0 if worse_by <= 0 else float("inf"))
        check["relative_regression"] = relative
        if relative > allowed:
            check.update(
                passed=False,
                reason=(
                    f"{metric} {new:.4g} is {relative:.2%} worse than the baseline's {old:.4g} (allowed: {allowed:.2%})"
                ),
            )
        else:
            check.update(passed=True, reason=f"{metric} {new:.4g} vs baseline {old:.4g}: within {allowed:.2%}")
        checks.append(check)
    return checks


def run(config: GateConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Score `candidate` (and `baseline`) on `evaluation`; write `verdict`; fail when rejected unless recording."""
    has_baseline = "baseline" in inputs
    if not config.thresholds and not has_baseline:
        raise ComponentError(
            "the gate needs thresholds or a baseline: set with.thresholds, or pass the serving model as 'baseline'"
        )
    evaluation = read_dataset(inputs["evaluation"], "evaluation")
    loaded = load_artifact(inputs["candidate"], kind="model")
    candidate = score_model(loaded, evaluation, label=config.label, what="evaluation")
    candidate_scores = comparable(candidate)
    known = metrics_of(candidate.task)
    for metric in [*config.thresholds, *(config.compare or [])]:
        if metric not in known:
            raise ComponentError(f"thresholds/compare: {metric!r} is not a {candidate.task} metric")
    notes: list[str] = candidate.detail.get("notes", [])
    checks = _threshold_checks(config, candidate_scores, notes)
    if (degenerate := _degenerate_check(config, candidate)) is not None:
        checks.append(degenerate)
    baseline_scores: dict[str, float] = {}
    baseline_meta = None
    if has_baseline:
        baseline_loaded = load_artifact(inputs["baseline"], kind="model")
        baseline_meta = baseline_loaded.metadata
        try:
            baseline = score_model(baseline_loaded, evaluation, label=candidate.label, what="evaluation")
        except ComponentError as exc:
            raise ComponentError(f"baseline: {exc}") from exc
        if baseline.task != candidate.task:
            raise ComponentError(
                f"baseline: a {baseline.task} model cannot be compared with a {candidate.task} candidate"
            )
        baseline_scores = comparable(baseline)
        compared = config.compare or sorted(config.thresholds) or [_headline(candidate)]
        checks += _baseline_checks(config, compared, candidate_scores, baseline_scores)
    reasons = [c["reason"] for c in checks if not c["passed"]]
    blessed = not reasons
    verdict = {
        "blessed": blessed,
        "reasons": reasons,
        "checks": checks,
        "metrics": {
            name: {"candidate": candidate_scores.get(name), "baseline": baseline_scores.get(name)}
            for name in sorted(set(candidate_scores) | set(baseline_scores))
            if name in known
        },
        "task": candidate.task,
        "label": candidate.label,
        "rows": len(evaluation),
        "candidate": {"estimator": loaded.metadata.estimator, "params": loaded.metadata.params},
        "baseline": None
        if baseline_meta is None
        else {"estimator": baseline_meta.estimator, "params": baseline_meta.params},
        "notes": notes,
    }
    write_json(verdict, outputs["verdict"])
    if not blessed and config.on_reject == "fail":
        raise ComponentError("the gate rejected the candidate: " + "; ".join(reasons))
    return {
        "blessed": 1.0 if blessed else 0.0,
        "checks": float(len(checks)),
        "failed_checks": float(len(reasons)),
        "rows": float(len(evaluation)),
    }
