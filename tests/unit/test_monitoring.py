"""Drift, live accuracy, the retraining decision, model sources and metric scraping, as plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from conveyor.api.modeldeployment import (
    DriftMeasure,
    DriftStatus,
    FeatureDrift,
    LiveAccuracy,
    Monitoring,
    RetrainingStatus,
    RunOutputSource,
)
from conveyor.api.pipeline import PipelineSpec
from conveyor.components.modelio import ArtifactMetadata, CategoryCount, FeatureProfile, FeatureSpec
from conveyor.controller.modeldeployments import merge_patch, reference_profile
from conveyor.controller.scrape import category_totals, feature_totals, parse_metrics, version_stats, window_delta
from conveyor.core import modelsource
from conveyor.core.categories import OTHER_CATEGORY
from conveyor.core.monitoring import (
    CATEGORY_PSI,
    CategoryReference,
    CategoryWindow,
    FeatureReference,
    FeatureWindow,
    Verdict,
    category_reference,
    category_shift,
    drifting,
    judge,
    live_accuracy,
    next_drift,
    retrain_decision,
    summarize,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RNG = np.random.default_rng(7)


def window_of(values: np.ndarray) -> FeatureWindow:
    return FeatureWindow(float(len(values)), float(values.sum()), float((values**2).sum()))


def test_window_statistics_match_numpy() -> None:
    x = RNG.normal(3.0, 2.0, 500)
    w = window_of(x)
    assert w.mean == pytest.approx(x.mean())
    assert w.std == pytest.approx(x.std())


REFERENCE = {f"f{i}": FeatureReference(0.0, 1.0) for i in range(10)}


@pytest.mark.parametrize(
    ("shifted", "by", "score"),
    [
        (0, 0.0, 0.0),  # same distribution
        (3, 2.0, 0.3),  # three of ten features moved by two standard deviations
        (10, 2.0, 1.0),
        (5, 0.2, 0.0),  # small shifts are not drift
    ],
)
def test_drift_score_is_the_share_of_shifted_features(shifted: int, by: float, score: float) -> None:
    window = {f: window_of(RNG.normal(by if i < shifted else 0.0, 1.0, 400)) for i, f in enumerate(REFERENCE)}
    measured = summarize(judge(REFERENCE, window))
    assert measured is not None
    assert measured[0] == pytest.approx(score)
    assert measured[1] == 400
    if shifted and by > 1:
        assert {f.name for f in measured[2][:shifted]} == {f"f{i}" for i in range(shifted)}


def test_a_variance_change_is_drift_too() -> None:
    window = {f: window_of(RNG.normal(0.0, 3.0, 400)) for f in REFERENCE}
    measured = summarize(judge(REFERENCE, window))
    assert measured is not None and measured[0] == 1.0


def test_a_small_window_is_not_judged() -> None:
    assert summarize(judge(REFERENCE, {f: window_of(RNG.normal(5, 1, 10)) for f in REFERENCE})) is None
    assert summarize(judge(REFERENCE, {"unknown": window_of(RNG.normal(5, 1, 100))})) is None


# ---------------------------------------------------------------- categorical drift

COLOUR = category_reference([("red", 0.5), ("green", 0.3), ("blue", 0.2)])  # every training value in the top list
CITY = category_reference([(f"city{i}", 0.1) for i in range(8)])  # 20 % of training values outside the top list
TAIL = category_reference([("a", 0.6), ("b", 0.3), *((f"rare{i}", 0.005) for i in range(10))])


def counts(**by_label: float) -> CategoryWindow:
    return CategoryWindow({OTHER_CATEGORY if k == "other" else k: float(v) for k, v in by_label.items()})


@pytest.mark.parametrize(
    ("reference", "window", "drifted"),
    [
        # unchanged shares: nothing moved
        (COLOUR, counts(red=100, green=60, blue=40), False),
        (CITY, counts(**{f"city{i}": 40 for i in range(8)}, other=80), False),
        # sampling noise of an unchanged distribution
        (COLOUR, counts(red=108, green=54, blue=38), False),
        # one category's share moves a lot (blue 20 % -> 50 %)
        (COLOUR, counts(red=60, green=40, blue=100), True),
        # a category disappears
        (COLOUR, counts(red=130, green=70, blue=0), True),
        # values never seen in training land in other: 30 % of traffic
        (COLOUR, counts(red=70, green=42, blue=28, other=60), True),
        # ... and a few of them (1 %) are not drift
        (COLOUR, counts(red=99, green=60, blue=39, other=2), False),
        # other grows from 20 % to 60 % at the expense of the listed cities
        (CITY, counts(**{f"city{i}": 16 for i in range(8)}, other=192), True),
        # rare categories are pooled: their shares moving among themselves is noise, not drift
        (TAIL, counts(a=120, b=60, rare0=10, rare1=0, other=10), False),
        # ... but the pool as a whole tripling (10 % -> 30 %) is drift
        (TAIL, counts(a=90, b=50, rare0=30, rare1=30), True),
    ],
)
def test_categorical_drift_is_psi_over_category_shares(
    reference: CategoryReference, window: CategoryWindow, drifted: bool
) -> None:
    judged = category_shift(reference, window)
    assert judged is not None
    psi, verdict = judged
    assert verdict is drifted
    assert (psi > CATEGORY_PSI) is drifted


@pytest.mark.parametrize(
    ("reference", "window"),
    [
        (COLOUR, counts(red=10, green=6, blue=4)),  # fewer than 30 present values
        (COLOUR, counts(other=29)),
        (CITY, counts(**{f"city{i}": 9 for i in range(8)}, other=18)),  # 90 rows: no bin expects 20
        (category_reference([]), counts(other=500)),  # a feature with no training categories: one bin
    ],
)
def test_a_categorical_window_too_small_to_separate_bins_is_not_judged(
    reference: CategoryReference, window: CategoryWindow
) -> None:
    assert category_shift(reference, window) is None


def test_psi_by_hand() -> None:
    # two bins, red 50 % -> 80 %, the rest 50 % -> 20 %
    psi, drifted = category_shift(category_reference([("red", 0.5)]), counts(red=80, other=20)) or (0.0, False)
    assert psi == pytest.approx(0.3 * np.log(0.8 / 0.5) + (-0.3) * np.log(0.2 / 0.5))
    assert drifted


@pytest.mark.parametrize("rows", [30, 100, 300, 1000, 5000])
def test_samples_of_the_training_distribution_do_not_drift(rows: int) -> None:
    """The pooling rule keeps PSI's noise below the threshold on a long-tailed distribution at any window size."""
    rng = np.random.default_rng(rows)
    weights = 1 / np.arange(1, 81) ** 1.1
    shares = weights / weights.sum()
    reference = category_reference([(f"c{i}", float(shares[i])) for i in range(50)])
    labels = np.array([f"c{i}" if i < 50 else OTHER_CATEGORY for i in range(80)])
    for _ in range(50):
        drawn = labels[rng.choice(80, rows, p=shares)]
        values, numbers = np.unique(drawn, return_counts=True)
        judged = category_shift(
            reference, CategoryWindow(dict(zip(values.tolist(), numbers.astype(float).tolist(), strict=True)))
        )
        assert judged is None or not judged[1], judged


def test_category_labels_merge_like_the_server_counts_them() -> None:
    ref = category_reference([(1, 0.4), ("1", 0.1), ("x" * 150, 0.2), ("x" * 120, 0.1), (OTHER_CATEGORY, 0.1)])
    assert ref.shares == pytest.approx({"1": 0.5, "x" * 100: 0.3})
    # a value equal to an earlier one (True == 1) goes where the server counts it: under the earlier label
    assert category_reference([(1, 0.4), (True, 0.1), ("b", 0.2)]).shares == pytest.approx({"1": 0.5, "b": 0.2})


def test_drift_score_counts_numeric_and_categorical_features_alike() -> None:
    reference = {"a": FeatureReference(0.0, 1.0), "b": FeatureReference(0.0, 1.0), "colour": COLOUR}
    window = {
        "a": window_of(RNG.normal(0.0, 1.0, 200)),
        "b": window_of(RNG.normal(0.0, 1.0, 200)),
        "colour": counts(red=20, green=60, blue=120),
    }
    measured = summarize(judge(reference, window))
    assert measured is not None
    score, rows, features = measured
    assert score == pytest.approx(1 / 3, abs=1e-4) and rows == 200
    assert features[0].name == "colour" and features[0].measure == DriftMeasure.PSI and features[0].drifted
    assert {f.measure for f in features[1:]} == {DriftMeasure.MEAN_SHIFT}
    assert not any(f.drifted for f in features[1:])
    # a categorical window against a numeric reference (or the other way round) is not judged
    assert judge({"a": COLOUR, "colour": FeatureReference(0, 1)}, window) == {}


def test_features_rank_drifted_first_then_by_score_over_their_threshold() -> None:
    verdicts = {
        "wide": Verdict(0.1, True, 100, DriftMeasure.MEAN_SHIFT),  # drifted by its spread, small shift
        "psi": Verdict(0.3, True, 80, DriftMeasure.PSI),  # 1.5x its threshold
        "mean": Verdict(0.6, True, 100, DriftMeasure.MEAN_SHIFT),  # 1.2x its threshold
        "calm": Verdict(0.4, False, 100, DriftMeasure.MEAN_SHIFT),
    }
    measured = summarize(verdicts)
    assert measured is not None
    assert [f.name for f in measured[2]] == ["psi", "mean", "wide", "calm"]
    assert measured[0] == 0.75 and measured[1] == 80
    assert summarize({}) is None


def test_reference_profile_covers_numeric_and_categorical_features() -> None:
    meta = ArtifactMetadata(
        kind="model",
        estimator="e",
        inputs=[FeatureSpec(name=n, dtype="object") for n in ("x", "colour", "notes", "empty")],
        profile=[
            FeatureProfile(name="x", kind="numeric", count=10, missing=0, mean=1.0, std=2.0),
            FeatureProfile(
                name="colour",
                kind="categorical",
                count=10,
                missing=2,
                distinct=3,
                top=[
                    CategoryCount(value="red", count=6, frequency=0.6),
                    CategoryCount(value=True, count=3, frequency=0.3),
                ],
            ),
            FeatureProfile(name="notes", kind="text", count=10, missing=0, distinct=10),
            FeatureProfile(name="empty", kind="categorical", count=0, missing=10, distinct=0),
        ],
    )
    reference = reference_profile(meta)
    assert reference == {"x": FeatureReference(1.0, 2.0), "colour": CategoryReference({"red": 0.6, "True": 0.3})}


def test_drift_must_stay_above_the_threshold_for_the_window() -> None:
    high = (0.6, 100, [FeatureDrift(name="f0", score=2.0)])
    low = (0.1, 100, [])
    first = next_drift(None, high, 0.2, NOW)
    assert first.above_since == NOW and not drifting(first, 60, NOW + timedelta(seconds=30))
    later = next_drift(first, high, 0.2, NOW + timedelta(seconds=61))
    assert later.above_since == NOW and drifting(later, 60, NOW + timedelta(seconds=61))
    calm = next_drift(later, low, 0.2, NOW + timedelta(seconds=70))
    assert calm.above_since is None and not drifting(calm, 60, NOW + timedelta(seconds=999))


def test_live_accuracy_joins_sampled_predictions_with_labels_per_version() -> None:
    predictions = [
        {"id": "r1", "row": 0, "version": "v1", "prediction": 1},
        {"id": "r1", "row": 1, "version": "v1", "prediction": 0},
        {"id": "r2", "row": 0, "version": "v1", "prediction": 1},
        {"id": "r3", "row": 0, "version": "v2", "prediction": "cat"},
        {"id": "r4", "row": 0, "version": "v2", "prediction": "dog"},  # never labelled
    ]
    labels = [
        {"id": "r1", "row": 0, "label": 1.0},
        {"id": "r1", "row": 1, "label": 1},
        {"id": "r2", "label": "1"},
        {"id": "r3", "row": 0, "label": "cat"},
        {"id": "zz", "row": 0, "label": 1},  # no sampled prediction: ignored
    ]
    got = {a.version: a for a in live_accuracy(predictions, labels, "classification")}
    assert got["v1"].labels == 3 and got["v1"].accuracy == pytest.approx(2 / 3)
    assert got["v2"].labels == 1 and got["v2"].accuracy == 1.0


def test_live_error_for_regression() -> None:
    got = live_accuracy(
        [{"id": "a", "version": "v", "prediction": 10.0}, {"id": "b", "version": "v", "prediction": 4.0}],
        [{"id": "a", "label": 12.0}, {"id": "b", "label": 4.0}],
        "regression",
    )
    assert got[0].mean_absolute_error == pytest.approx(1.0) and got[0].accuracy is None


MON = Monitoring.model_validate(
    {
        "drift": {"threshold": 0.2, "windowSeconds": 60},
        "minAccuracy": 0.9,
        "minLabels": 10,
        "retrain": {"pipeline": "train", "minIntervalSeconds": 600},
    }
)
DRIFTING = DriftStatus(score=0.5, rows=100, above_since=NOW - timedelta(seconds=120), features=[])
CALM = DriftStatus(score=0.0, rows=100)
POOR = LiveAccuracy(version="v", labels=50, accuracy=0.6)
GOOD = LiveAccuracy(version="v", labels=50, accuracy=0.95)
LAST = RetrainingStatus(run="r", reason="Drift", at=NOW - timedelta(seconds=60))
OLD = RetrainingStatus(run="r", reason="Drift", at=NOW - timedelta(seconds=6000))


@pytest.mark.parametrize(
    ("drift", "accuracy", "last", "finished", "reason"),
    [
        (DRIFTING, GOOD, None, True, "Drift"),
        (CALM, POOR, None, True, "AccuracyDropped"),
        (CALM, LiveAccuracy(version="v", labels=5, accuracy=0.1), None, True, None),  # too few labels
        (CALM, GOOD, None, True, None),
        (DRIFTING, GOOD, LAST, True, None),  # rate limit
        (DRIFTING, GOOD, OLD, False, None),  # the earlier retraining still runs
        (DRIFTING, GOOD, OLD, True, "Drift"),
    ],
)
def test_retrain_decision(
    drift: DriftStatus,
    accuracy: LiveAccuracy,
    last: RetrainingStatus | None,
    finished: bool,
    reason: str | None,
) -> None:
    decision = retrain_decision(MON, drift, accuracy, last, finished, NOW)
    assert (decision.reason if decision else None) == reason


def test_no_trigger_no_retraining() -> None:
    mon = Monitoring.model_validate({"drift": {}})
    assert retrain_decision(mon, DRIFTING, POOR, None, True, NOW) is None


# ---------------------------------------------------------------- model sources

PIPELINE = PipelineSpec.model_validate(
    {
        "steps": [
            {"name": "train", "uses": "train", "with": {"estimator": "x", "label": "y"}},
            {
                "name": "gate",
                "uses": "gate",
                "inputs": [
                    {"name": "candidate", "step": "train", "output": "model"},
                    {"name": "evaluation", "step": "train", "output": "model"},
                ],
                "with": {"label": "y", "thresholds": {"accuracy": 0.5}},
            },
        ]
    }
)


def run(name: str, finished: str, blessed: float, digest: str, phase: str = "Succeeded") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": finished},
        "status": {
            "phase": phase,
            "finishedAt": finished,
            "steps": [
                {
                    "name": "train",
                    "phase": "Succeeded",
                    "outputs": [{"name": "model", "uri": f"s3://b/{digest}", "digest": "sha256:" + digest * 64}],
                },
                {"name": "gate", "phase": "Succeeded", "metrics": {"blessed": blessed}},
            ],
        },
    }


def test_latest_blessed_model_of_a_pipeline() -> None:
    runs = [
        run("r1", "2026-11-01T00:00:00Z", 1.0, "1"),
        run("r2", "2026-11-03T00:00:00Z", 0.0, "2"),  # newest finished, but not blessed
        run("r3", "2026-11-02T00:00:00Z", 1.0, "3"),
        run("r4", "2026-11-04T00:00:00Z", 1.0, "4", phase="Failed"),
    ]
    model = modelsource.latest_blessed("p", PIPELINE, runs)
    assert model.digest == "sha256:" + "3" * 64 and model.version == "3" * 12


def test_no_blessed_model_says_why() -> None:
    with pytest.raises(modelsource.Unresolved, match="has blessed a model yet"):
        modelsource.latest_blessed("p", PIPELINE, [run("r2", "2026-11-03T00:00:00Z", 0.0, "2")])
    no_gate = PipelineSpec.model_validate({"steps": [{"name": "train", "uses": "train", "with": {}}]})
    with pytest.raises(modelsource.Unresolved, match="no gate step"):
        modelsource.latest_blessed("p", no_gate, [])


def test_a_run_output_is_served_only_when_its_gate_blessed_it() -> None:
    src = RunOutputSource(name="r1", step="train")
    assert modelsource.run_output(run("r1", "t", 1.0, "1"), src, PIPELINE).uri == "s3://b/1"
    with pytest.raises(modelsource.Unresolved, match="did not bless"):
        modelsource.run_output(run("r1", "t", 0.0, "1"), src, PIPELINE)
    with pytest.raises(modelsource.Unresolved, match="has no output"):
        modelsource.run_output(run("r1", "t", 1.0, "1"), RunOutputSource(name="r1", step="train", output="x"), None)
    with pytest.raises(modelsource.Unresolved, match="has not succeeded"):
        modelsource.run_output(run("r1", "t", 1.0, "1"), RunOutputSource(name="r1", step="evaluate"), None)


# ---------------------------------------------------------------- scraping

METRICS = """
# TYPE conveyor_server_requests_total counter
conveyor_server_requests_total{model="m",version="v1",code="200"} 90.0
conveyor_server_requests_total{model="m",version="v1",code="400"} 10.0
conveyor_server_requests_total{model="m",version="v0",code="200"} 5.0
# TYPE conveyor_server_request_duration_seconds histogram
conveyor_server_request_duration_seconds_bucket{model="m",version="v1",le="0.005"} 50.0
conveyor_server_request_duration_seconds_bucket{model="m",version="v1",le="0.05"} 98.0
conveyor_server_request_duration_seconds_bucket{model="m",version="v1",le="0.5"} 100.0
conveyor_server_request_duration_seconds_bucket{model="m",version="v1",le="+Inf"} 100.0
conveyor_server_request_duration_seconds_count{model="m",version="v1"} 100.0
conveyor_server_request_duration_seconds_sum{model="m",version="v1"} 1.0
# TYPE conveyor_server_input_rows_total counter
conveyor_server_input_rows_total{model="m",version="v1"} 100.0
# TYPE conveyor_server_input_feature_sum counter
conveyor_server_input_feature_sum_total{model="m",version="v1",feature="a"} 250.0
# TYPE conveyor_server_input_feature_sum_squares counter
conveyor_server_input_feature_sum_squares_total{model="m",version="v1",feature="a"} 725.0
# TYPE conveyor_server_input_feature_missing counter
conveyor_server_input_feature_missing_total{model="m",version="v1",feature="a"} 0.0
# TYPE conveyor_server_input_category counter
conveyor_server_input_category_total{model="m",version="v1",feature="colour",category="red"} 60.0
conveyor_server_input_category_total{model="m",version="v1",feature="colour",category="blue"} 30.0
conveyor_server_input_category_total{model="m",version="v1",feature="colour",category="__other__"} 5.0
conveyor_server_input_category_total{model="m",version="v0",feature="colour",category="red"} 7.0
"""


def test_parse_server_metrics_into_version_stats_and_feature_sums() -> None:
    samples = parse_metrics(METRICS)
    stats = version_stats([samples, samples], "v1")
    assert (stats.requests, stats.errors) == (200, 20)
    assert stats.error_rate == pytest.approx(0.1)
    assert stats.latency_p99_seconds == 0.5
    totals = feature_totals(samples, "v1")
    assert totals["a"].mean == pytest.approx(2.5)
    assert totals["a"].std == pytest.approx(np.sqrt(7.25 - 6.25))
    categories = category_totals(samples, "v1")
    assert categories == {"colour": CategoryWindow({"red": 60.0, "blue": 30.0, OTHER_CATEGORY: 5.0})}
    assert categories["colour"].rows == 95
    assert category_totals(samples, "v0")["colour"].rows == 7


def test_window_delta_between_scrapes_and_after_a_restart() -> None:
    old = {"a": FeatureWindow(100, 250, 725)}
    new = {"a": FeatureWindow(150, 400, 1200)}
    assert window_delta(new, None) == {}
    delta = window_delta(new, old)["a"]
    assert (delta.rows, delta.total, delta.squares) == (50, 150, 475)
    restarted = window_delta({"a": FeatureWindow(10, 20, 50)}, old)["a"]
    assert restarted.rows == 10


@pytest.mark.parametrize(
    ("old", "new", "delta"),
    [
        ({"red": 10, "blue": 5}, {"red": 15, "blue": 5, "__other__": 2}, {"red": 5, "blue": 0, "__other__": 2}),
        ({"red": 10, "blue": 5}, {"red": 3, "blue": 6}, {"red": 3, "blue": 6}),  # red went down: a restart
        ({"red": 10, "blue": 5}, {"red": 12}, {"red": 12}),  # a series vanished: a restart
    ],
)
def test_category_window_delta_between_scrapes_and_after_a_restart(
    old: dict[str, float], new: dict[str, float], delta: dict[str, float]
) -> None:
    assert window_delta({"colour": CategoryWindow(new)}, None) == {}  # a pod's first scrape only sets the baseline
    got = window_delta({"colour": CategoryWindow(new)}, {"colour": CategoryWindow(old)})
    assert got == {"colour": CategoryWindow(delta)}
    summed = CategoryWindow()
    summed.add(got["colour"])
    summed.add(CategoryWindow({"red": 1}))  # a second replica's delta
    assert summed.counts["red"] == delta["red"] + 1


def test_merge_patch_nulls_what_disappeared() -> None:
    old = {"a": 1, "b": {"x": 1, "y": 2}, "c": [1]}
    new = {"a": 1, "b": {"x": 1}, "d": 4}
    assert merge_patch(old, new) == {"b": {"y": None}, "c": None, "d": 4}
