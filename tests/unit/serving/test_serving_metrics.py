"""Per-category input counters of the model server: labels only from the training profile, counted per batch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.components.modelio import CategoryCount, FeatureProfile
from conveyor.controller.scrape import category_totals, parse_metrics
from conveyor.core.categories import OTHER_CATEGORY
from conveyor.serving.codec import Rows, Signature
from conveyor.serving.metrics import BatchStats, CategoryCounter, training_categories

SIGNATURE = Signature(["x", "colour", "notes"], [True, False, False])
COLOURS = ["red", "green", "blue"]


def column(*values: Any) -> np.ndarray[Any, Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def batch(colours: list[Any], notes: list[Any] | None = None) -> Rows:
    n = len(colours)
    return Rows(n, [np.arange(n, dtype=np.float64), column(*colours), column(*(notes or ["n"] * n))])


def stats(categories: dict[str, list[Any]] | None = None) -> BatchStats:
    return BatchStats(
        "m", "v1", SIGNATURE, "classification", [0, 1], {"colour": COLOURS} if categories is None else categories
    )


def exported(collector: BatchStats) -> dict[tuple[str, str], float]:
    """(feature, category) → value of every conveyor_server_input_category_total sample."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.labels["feature"], s.labels["category"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "conveyor_server_input_category_total"
    }


def test_values_are_counted_by_training_category_and_the_rest_as_other() -> None:
    s = stats()
    s.observe(batch(["red", "red", "blue", "purple", None, math.nan, "RED"]), np.zeros(7))
    s.observe(batch(["green", "red"]), np.zeros(2))
    assert exported(s) == {
        ("colour", "red"): 3,
        ("colour", "green"): 1,
        ("colour", "blue"): 1,
        ("colour", OTHER_CATEGORY): 2,  # purple and RED: not in the training top list
    }
    missing = {i: int(n) for i, n in enumerate(s.missing)}
    assert missing[SIGNATURE.positions["colour"]] == 2  # None and NaN: missing, not a category
    assert s.rows == 9


def test_labels_stay_bounded_whatever_clients_send() -> None:
    s = stats()
    rng = np.random.default_rng(0)
    hostile = [f"user-{i}-{rng.integers(1 << 60)}" for i in range(2000)] + ["red"] * 10
    s.observe(batch(hostile), np.zeros(len(hostile)))
    series = exported(s)
    assert set(series) == {("colour", c) for c in [*COLOURS, OTHER_CATEGORY]}
    assert series[("colour", OTHER_CATEGORY)] == 2000 and series[("colour", "red")] == 10


def test_only_categorical_features_with_a_profile_are_counted() -> None:
    assert exported(stats({})) == {}  # no profile: no category series at all, missing values still counted
    s = stats({})
    s.observe(batch(["red", None], notes=[None, "x"]), np.zeros(2))
    assert list(s.missing) == [0, 1, 1]
    profile = [
        FeatureProfile(name="x", kind="numeric", count=3, missing=0, mean=1.0, std=1.0),
        FeatureProfile(
            name="colour",
            kind="categorical",
            count=3,
            missing=0,
            top=[CategoryCount(value="red", count=3, frequency=1.0)],
        ),
        FeatureProfile(
            name="notes", kind="text", count=3, missing=0, top=[CategoryCount(value="hi", count=3, frequency=1.0)]
        ),
    ]
    assert training_categories(profile) == {"colour": ["red"]}
    assert training_categories(None) == {}


@pytest.mark.parametrize(
    ("top", "values", "expected"),
    [
        # values match as the training profile's value_counts matched them: 1 == 1.0 == True, 1 != "1"
        ([1, 2.5, "b"], [1, 2.5, True, 1.0, "1", 3], {"1": 3, "2.5": 1, "b": 0, OTHER_CATEGORY: 2}),
        # two values with one label share it (the operator's reference merges them the same way)
        ([1, "1", "x" * 150, "x" * 120], [1, "1", "x" * 150, "x" * 120], {"1": 2, "x" * 100: 2, OTHER_CATEGORY: 0}),
        # a value equal to an earlier one is counted with it, and its label is not exported (the operator agrees)
        ([1, True, "b"], [True, 1, "b"], {"1": 2, "b": 1, OTHER_CATEGORY: 0}),
        # a training value that looks like the other label is counted as other
        ([OTHER_CATEGORY, "a"], [OTHER_CATEGORY, "a", "b"], {"a": 1, OTHER_CATEGORY: 2}),
    ],
)
def test_category_labels(top: list[Any], values: list[Any], expected: dict[str, int]) -> None:
    counter = CategoryCounter(top)
    counted = counter.count(column(*values))
    assert dict(zip([*counter.labels, OTHER_CATEGORY], counted[: counter.missing].tolist(), strict=True)) == expected
    assert counted[counter.missing] == 0


def test_the_operator_reads_back_what_the_server_exports() -> None:
    s = stats()
    s.observe(batch(["red", "blue", "teal"]), np.zeros(3))
    registry = CollectorRegistry()
    registry.register(s)
    totals = category_totals(parse_metrics(generate_latest(registry).decode()), "v1")
    assert totals["colour"].counts == {"red": 1, "green": 0, "blue": 1, OTHER_CATEGORY: 1}
