"""Watching a served model: input drift, live accuracy, and when to start retraining.

Pure functions over plain numbers. The shell scrapes the servers' cumulative input counters
(rows, per-feature sum and sum of squares), turns them into a window of new rows, and reads the
sampled predictions and fed-back labels from the artifact store; everything decided from those
numbers lives here.

Drift, per numeric feature: the standardized mean shift |live mean - training mean| / training
std, the effect-size statistic behind a two-sample z-test, which stays meaningful at any request
volume (a p-value on thousands of rows flags shifts nobody cares about). A feature drifted when its
shift exceeds `FEATURE_SHIFT` (0.5 std) or its live std left [0.5x, 2x] of the training std. The
deployment's drift score is the share of monitored features that drifted (Evidently's
dataset-drift share, with its 0.5 std effect size in place of a p-value); a window needs at least
`MIN_WINDOW_ROWS` rows before it is judged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.api.modeldeployment import DriftStatus, FeatureDrift, LiveAccuracy, Monitoring, RetrainingStatus

FEATURE_SHIFT = 0.5
STD_RATIO = (0.5, 2.0)
MIN_WINDOW_ROWS = 30


@dataclass(frozen=True)
class FeatureReference:
    """A feature's training distribution, as far as drift needs it."""

    mean: float
    std: float


@dataclass
class FeatureWindow:
    """Sums over the rows of one window (only numbers that can be added across replicas)."""

    rows: float = 0.0
    total: float = 0.0
    squares: float = 0.0

    def add(self, other: FeatureWindow) -> None:
        self.rows += other.rows
        self.total += other.total
        self.squares += other.squares

    @property
    def mean(self) -> float:
        return self.total / self.rows if self.rows else math.nan

    @property
    def std(self) -> float:
        if self.rows < 2:
            return math.nan
        var = max(self.squares / self.rows - self.mean**2, 0.0)
        return math.sqrt(var)


def feature_shift(ref: FeatureReference, live: FeatureWindow) -> tuple[float, bool]:
    """(standardized mean shift, drifted?) of one feature."""
    if ref.std <= 0 or not math.isfinite(ref.std):
        # A constant training column: any change of value is drift, measured in its own units.
        shift = abs(live.mean - ref.mean)
        return shift, shift > 0
    shift = abs(live.mean - ref.mean) / ref.std
    ratio = live.std / ref.std if math.isfinite(live.std) else 1.0
    return shift, shift > FEATURE_SHIFT or not (STD_RATIO[0] <= ratio <= STD_RATIO[1])


def drift_score(
    reference: Mapping[str, FeatureReference], window: Mapping[str, FeatureWindow]
) -> tuple[float, int, list[FeatureDrift]] | None:
    """(score, rows, most shifted features) of a window, or None while it is too small to judge."""
    judged = {f: w for f, w in window.items() if f in reference and w.rows >= MIN_WINDOW_ROWS}
    if not judged:
        return None
    rows = int(min(w.rows for w in judged.values()))
    results = {f: feature_shift(reference[f], w) for f, w in judged.items()}
    drifted = sum(1 for _, d in results.values() if d)
    top = sorted(results.items(), key=lambda kv: -kv[1][0])[:10]
    features = [FeatureDrift(name=f, score=round(s, 4)) for f, (s, _) in top]
    return round(drifted / len(results), 4), rows, features


def next_drift(
    previous: DriftStatus | None,
    measured: tuple[float, int, list[FeatureDrift]],
    threshold: float,
    now: datetime,
) -> DriftStatus:
    """The drift status after a new window: `above_since` remembers when the score first crossed."""
    score, rows, features = measured
    above = score > threshold
    since = (previous.above_since if previous is not None and previous.above_since else now) if above else None
    return DriftStatus(score=score, rows=rows, above_since=since, features=features, at=now)


def drifting(drift: DriftStatus | None, window_seconds: float, now: datetime) -> bool:
    """The score has stayed above the threshold for the whole window."""
    return (
        drift is not None
        and drift.above_since is not None
        and (now - drift.above_since).total_seconds() >= window_seconds
    )


def live_accuracy(
    predictions: Iterable[Mapping[str, Any]], labels: Iterable[Mapping[str, Any]], task: str | None
) -> list[LiveAccuracy]:
    """Join logged predictions with fed-back labels on (request id, row), per model version.

    A label for a prediction that was not sampled is ignored; the latest label for a row wins.
    """
    truth: dict[tuple[str, int], Any] = {}
    for label in labels:
        truth[(str(label.get("id")), int(label.get("row", 0) or 0))] = label.get("label")
    joined: dict[str, list[tuple[Any, Any]]] = {}
    for p in predictions:
        key = (str(p.get("id")), int(p.get("row", 0) or 0))
        if key in truth:
            joined.setdefault(str(p.get("version")), []).append((p.get("prediction"), truth[key]))
    out = []
    for version, pairs in sorted(joined.items()):
        if task == "regression":
            errors = [abs(float(pred) - float(true)) for pred, true in pairs]
            out.append(LiveAccuracy(version=version, labels=len(pairs), mean_absolute_error=sum(errors) / len(errors)))
        else:
            correct = sum(1 for pred, true in pairs if _same(pred, true))
            out.append(LiveAccuracy(version=version, labels=len(pairs), accuracy=correct / len(pairs)))
    return out


def _same(a: Any, b: Any) -> bool:
    """Labels compare as numbers when both are numeric (1 == 1.0 == "1"), else as strings."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


@dataclass(frozen=True)
class RetrainDecision:
    reason: str
    """Drift or AccuracyDropped."""
    message: str


def retrain_decision(
    monitoring: Monitoring,
    drift: DriftStatus | None,
    accuracy: LiveAccuracy | None,
    last: RetrainingStatus | None,
    last_run_finished: bool,
    now: datetime,
) -> RetrainDecision | None:
    """Whether to start a retraining Run now: a reason holds, and neither the rate limit nor an
    unfinished earlier retraining stands in the way."""
    if monitoring.retrain is None:
        return None
    decision = None
    if monitoring.drift is not None and drifting(drift, monitoring.drift.window_seconds, now):
        assert drift is not None
        top = ", ".join(f.name for f in drift.features[:3])
        decision = RetrainDecision(
            "Drift",
            f"drift score {drift.score:.2f} above {monitoring.drift.threshold:.2f} for "
            f"{monitoring.drift.window_seconds}s (most shifted: {top})",
        )
    elif (
        monitoring.min_accuracy is not None
        and accuracy is not None
        and accuracy.accuracy is not None
        and accuracy.labels >= monitoring.min_labels
        and accuracy.accuracy < monitoring.min_accuracy
    ):
        decision = RetrainDecision(
            "AccuracyDropped",
            f"live accuracy {accuracy.accuracy:.3f} over {accuracy.labels} labels"
            f" is below {monitoring.min_accuracy:.3f}",
        )
    if decision is None:
        return None
    if last is not None:
        if not last_run_finished:
            return None
        if (now - last.at).total_seconds() < monitoring.retrain.min_interval_seconds:
            return None
    return decision
