"""Watching a served model: input drift, live accuracy, and when to start retraining.

Pure functions over plain numbers. The shell scrapes the servers' cumulative input counters
(rows, per-feature sum and sum of squares, per-category counts), turns them into a window of new
rows, and reads the sampled predictions and fed-back labels from the artifact store; everything
decided from those numbers lives here.

Drift, per numeric feature: the standardized mean shift |live mean - training mean| / training
std, the effect-size statistic behind a two-sample z-test, which stays meaningful at any request
volume (a p-value on thousands of rows flags shifts nobody cares about). A feature drifted when its
shift exceeds `FEATURE_SHIFT` (0.5 std) or its live std left [0.5x, 2x] of the training std.

Drift, per categorical feature: the population stability index (PSI) between the training shares
of its categories and the window's, drifted above `CATEGORY_PSI` (0.2, the conventional "significant
shift" cut-off). PSI rather than total variation distance because it weighs relative change: a
category going from 1 % to 10 % of traffic matters to a model even though it moves only 9 % of the
mass, which is all TVD sees; it is also the statistic the pipeline's validate step already uses.
The categories are the training profile's top list, each a label of the servers' counter; every
other value (rarer training categories, values never seen in training) is counted as `OTHER_CATEGORY`,
whose training share is what the top list leaves. PSI over sparse bins is noise (its expected
value on an unchanged distribution is about (bins - 1) / rows), so a category gets a bin of its
own only when the window expects at least `MIN_EXPECTED_ROWS` rows of it; the others are pooled
into one bin, and a feature left with a single bin is not judged yet. Shares are floored at half
a row of the window, the usual continuity correction, so an empty bin counts for what a window of
that size can tell rather than for the logarithm of an arbitrary epsilon.

The deployment's drift score is the share of monitored features that drifted, both kinds together
(Evidently's dataset-drift share, with effect sizes in place of p-values). A feature is judged once
its window holds at least `MIN_WINDOW_ROWS` present values; a feature not judged in a window keeps
its latest verdict, so a slow feature neither drops out of the score nor holds up the others.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from conveyor.api.base import Condition, ConditionStatus
from conveyor.api.modeldeployment import (
    DriftMeasure,
    DriftMonitor,
    DriftStatus,
    FeatureDrift,
    LiveAccuracy,
    Monitoring,
    RetrainingStatus,
)
from conveyor.core.categories import OTHER_CATEGORY, category_slots
from conveyor.core.rollout import Event

FEATURE_SHIFT = 0.5
STD_RATIO = (0.5, 2.0)
MIN_WINDOW_ROWS = 30
CATEGORY_PSI = 0.2
MIN_EXPECTED_ROWS = 20
THRESHOLDS = {DriftMeasure.MEAN_SHIFT: FEATURE_SHIFT, DriftMeasure.PSI: CATEGORY_PSI}


@dataclass(frozen=True)
class FeatureReference:
    """A feature's training distribution, as far as drift needs it."""

    mean: float
    std: float


@dataclass(frozen=True)
class CategoryReference:
    """A categorical feature's training shares by category label; what they leave is `OTHER_CATEGORY`'s."""

    shares: Mapping[str, float]


def category_reference(top: Sequence[tuple[Hashable, float]]) -> CategoryReference:
    """Shares by label from a training profile's (value, frequency) top list, labelled as the server labels them."""
    labels, slots = category_slots(value for value, _ in top)
    shares = dict.fromkeys(labels, 0.0)
    for value, frequency in top:
        if value in slots:
            shares[labels[slots[value]]] += frequency
    return CategoryReference(shares)


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

    def since(self, old: FeatureWindow) -> FeatureWindow:
        """What was added after `old` of the same counters; all of them if they went down (a restart)."""
        if self.rows < old.rows:
            return self
        return FeatureWindow(self.rows - old.rows, self.total - old.total, self.squares - old.squares)

    @property
    def mean(self) -> float:
        return self.total / self.rows if self.rows else math.nan

    @property
    def std(self) -> float:
        if self.rows < 2:
            return math.nan
        var = max(self.squares / self.rows - self.mean**2, 0.0)
        return math.sqrt(var)


@dataclass
class CategoryWindow:
    """Present values of a categorical feature by category label over one window."""

    counts: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> float:
        return sum(self.counts.values())

    def add(self, other: CategoryWindow) -> None:
        for label, n in other.counts.items():
            self.counts[label] = self.counts.get(label, 0.0) + n

    def since(self, old: CategoryWindow) -> CategoryWindow:
        """What was added after `old` of the same counters; all of them if any went down (a restart)."""
        delta = {label: n - old.counts.get(label, 0.0) for label, n in self.counts.items()}
        if any(n < 0 for n in delta.values()) or not old.counts.keys() <= self.counts.keys():
            return self
        return CategoryWindow(delta)


Reference = FeatureReference | CategoryReference
Window = FeatureWindow | CategoryWindow


@dataclass(frozen=True)
class Verdict:
    """One feature judged on one window."""

    score: float
    drifted: bool
    rows: int
    measure: DriftMeasure


def feature_shift(ref: FeatureReference, live: FeatureWindow) -> tuple[float, bool]:
    """(standardized mean shift, drifted?) of one feature."""
    if ref.std <= 0 or not math.isfinite(ref.std):
        # A constant training column: any change of value is drift, measured in its own units.
        shift = abs(live.mean - ref.mean)
        return shift, shift > 0
    shift = abs(live.mean - ref.mean) / ref.std
    ratio = live.std / ref.std if math.isfinite(live.std) else 1.0
    return shift, shift > FEATURE_SHIFT or not (STD_RATIO[0] <= ratio <= STD_RATIO[1])


def category_shift(ref: CategoryReference, live: CategoryWindow) -> tuple[float, bool] | None:
    """(PSI, drifted?) of one categorical feature, or None while the window cannot separate two bins."""
    rows = live.rows
    if rows < MIN_WINDOW_ROWS:
        return None
    known = sum(ref.shares.values())
    training = {**ref.shares, OTHER_CATEGORY: max(1.0 - known, 0.0)}
    own = [label for label, share in training.items() if share * rows >= MIN_EXPECTED_ROWS]
    pooled = len(own) < len(training)
    if len(own) + pooled < 2:
        return None  # a single bin: nothing to compare
    expected = [training[label] for label in own]
    observed = [live.counts.get(label, 0.0) / rows for label in own]
    if pooled:
        expected.append(max(1.0 - sum(expected), 0.0))
        observed.append(max(1.0 - sum(observed), 0.0))
    floor = 0.5 / rows
    pairs = [(max(p, floor), max(q, floor)) for p, q in zip(expected, observed, strict=True)]
    psi = sum((q - p) * math.log(q / p) for p, q in pairs)
    return psi, psi > CATEGORY_PSI


def judge(reference: Mapping[str, Reference], window: Mapping[str, Window]) -> dict[str, Verdict]:
    """The verdict on every monitored feature whose window is large enough to judge."""
    out: dict[str, Verdict] = {}
    for name, live in window.items():
        ref = reference.get(name)
        if isinstance(ref, FeatureReference) and isinstance(live, FeatureWindow) and live.rows >= MIN_WINDOW_ROWS:
            shift, drifted = feature_shift(ref, live)
            out[name] = Verdict(shift, drifted, int(live.rows), DriftMeasure.MEAN_SHIFT)
        elif isinstance(ref, CategoryReference) and isinstance(live, CategoryWindow):
            judged = category_shift(ref, live)
            if judged is not None:
                out[name] = Verdict(judged[0], judged[1], int(live.rows), DriftMeasure.PSI)
    return out


def summarize(verdicts: Mapping[str, Verdict]) -> tuple[float, int, list[FeatureDrift]] | None:
    """(score, rows of the smallest window, most shifted features) of the features' latest verdicts."""
    if not verdicts:
        return None
    drifted = sum(1 for v in verdicts.values() if v.drifted)
    ranked = sorted(verdicts.items(), key=lambda kv: (not kv[1].drifted, -kv[1].score / THRESHOLDS[kv[1].measure]))
    features = [
        FeatureDrift(name=f, score=round(v.score, 4), measure=v.measure, drifted=v.drifted) for f, v in ranked[:10]
    ]
    return round(drifted / len(verdicts), 4), min(v.rows for v in verdicts.values()), features


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


@dataclass(frozen=True)
class DriftReport:
    """What a deployment says about its drift: its Drifting condition, and the Event that goes with it."""

    condition: Condition
    event: Event | None
    """A Warning when the deployment has just started drifting (not on every pass while it drifts)."""


def drift_report(
    policy: DriftMonitor,
    drift: DriftStatus | None,
    previous: Condition | None,
    now: datetime,
    generation: int | None,
) -> DriftReport:
    """The Drifting condition after a pass: True (Drifting) once the score has stayed above the threshold for the
    whole window; False with ShiftDetected while it is above but not for long enough yet, else WithinThreshold.
    `previous` is the condition as it stood, so the Event marks the transition only."""
    is_drifting = drifting(drift, policy.window_seconds, now)
    above = drift is not None and drift.above_since is not None
    reason = "Drifting" if is_drifting else "ShiftDetected" if above else "WithinThreshold"
    message = (
        f"drift score {drift.score:.2f} (threshold {policy.threshold:.2f}) over {drift.rows} rows"
        if drift is not None
        else "not enough traffic measured yet"
    )
    condition = Condition(
        type="Drifting",
        status=ConditionStatus.TRUE if is_drifting else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )
    started = is_drifting and (previous is None or previous.status is not ConditionStatus.TRUE)
    return DriftReport(condition, Event("Warning", "Drifting", message) if started else None)


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


def decision_due(
    monitoring: Monitoring, drift: DriftStatus | None, last: RetrainingStatus | None, now: datetime
) -> datetime | None:
    """The next time a monitoring decision can change with nothing new measured: the drift score, above its
    threshold, having stayed there for the whole window (Drifting turns True, a retraining may start), or
    the retraining rate limit running out. None when neither lies ahead."""
    due = []
    if monitoring.drift is not None and drift is not None and drift.above_since is not None:
        due.append(drift.above_since + timedelta(seconds=monitoring.drift.window_seconds))
    if monitoring.retrain is not None and last is not None:
        due.append(last.at + timedelta(seconds=monitoring.retrain.min_interval_seconds))
    return min((d for d in due if d > now), default=None)
