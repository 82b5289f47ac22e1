"""Prometheus metrics of the model server, on a registry of its own (the text format at `/metrics`).

Request metrics carry the served model's name and version, never a name taken from a request, so
label cardinality is bounded whatever clients send. Per-batch statistics of the inputs and
predictions (feature sums, sums of squares, missing counts, class counts, the regression value
histogram) are accumulated in numpy arrays by the worker thread, one vectorised update per batch,
and turned into samples only when Prometheus scrapes.

`conveyor_server_input_feature_sum` and `..._sum_squares` are exposed under exactly those names,
typed gauge: a sum of values that may be negative can fall, so it is not a Prometheus counter,
and counters would gain a `_total` suffix. Both only change by adding a batch's values, so the
operator derives windowed means and variances from `delta()` of the sums and of
`conveyor_server_input_rows_total`.

`conveyor_server_input_category_total` counts the present values of each categorical feature by
category. Its label values come from the training profile, never from requests: each category in
the profile's top list has its own, every other value is counted under `__other__` (so at most 51
series per feature, whatever clients send); missing values are only in `..._feature_missing`. A
column is counted in one pass of the C-level `map` over a dict's `get` and one `np.bincount`, no
Python code per value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from conveyor.components.modelio import FeatureProfile
from conveyor.core.categories import OTHER_CATEGORY, category_slots
from conveyor.serving.codec import Rows, Signature

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
_MAGNITUDES = (0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 1e4, 1e5, 1e6)
VALUE_BUCKETS: tuple[float, ...] = (*sorted(-m for m in _MAGNITUDES), 0.0, *_MAGNITUDES)


def _label(value: Any) -> str:
    return str(value)


def training_categories(profile: Sequence[FeatureProfile] | None) -> dict[str, list[Any]]:
    """The top-list values of each categorical feature of a model's training profile, most frequent first.

    Text features are left out: the frequencies of whole texts say little about free text.
    """
    return {p.name: [c.value for c in p.top] for p in profile or [] if p.kind == "categorical"}


class CategoryCounter:
    """Counts one non-numeric column's values by training category; the last two slots are other and missing."""

    def __init__(self, values: Sequence[Any]) -> None:
        self.labels, slots = category_slots(values)
        self.other = len(self.labels)
        self.missing = self.other + 1
        self.lookup: dict[Any, int] = {**slots, None: self.missing}

    def count(self, column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Values per slot: one per category label, then other, then missing (None or NaN)."""
        codes = np.fromiter(map(self.lookup.get, column, repeat(self.other)), dtype=np.intp, count=len(column))
        nan = np.not_equal(column, column)  # NaN is the only value unequal to itself
        if nan.any():
            codes[nan] = self.missing
        return np.bincount(codes, minlength=self.missing + 1)


class BatchStats(Collector):
    """Input and prediction statistics of one model version, updated per batch, read at scrape time."""

    def __init__(
        self,
        model: str,
        version: str,
        signature: Signature,
        task: str,
        classes: Sequence[Any],
        categories: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.names = signature.names
        self.numeric_index = [i for i, numeric in enumerate(signature.numeric) if numeric]
        self.other_index = [i for i, numeric in enumerate(signature.numeric) if not numeric]
        categories = categories or {}
        self.counters = [CategoryCounter(categories.get(self.names[i], ())) for i in self.other_index]
        # Positions in `other_index` of the features counted by category (the others count only missing).
        self.categorical = [j for j, i in enumerate(self.other_index) if self.names[i] in categories]
        self.task = task
        self.class_labels = [_label(c) for c in classes]
        self._lock = threading.Lock()
        self.rows = 0
        self.sums = np.zeros(len(self.numeric_index))
        self.squares = np.zeros(len(self.numeric_index))
        self.missing = np.zeros(len(self.names), dtype=np.int64)
        self.category_counts = [np.zeros(self.counters[j].missing, dtype=np.int64) for j in self.categorical]
        self.class_counts: dict[str, int] = dict.fromkeys(self.class_labels, 0)
        self.value_buckets = np.zeros(len(VALUE_BUCKETS) + 1, dtype=np.int64)  # the last is +Inf
        self.value_sum = 0.0

    def observe(self, rows: Rows, predictions: np.ndarray[Any, Any]) -> None:
        """Add one batch (its rows and their predictions)."""
        numeric = rows.matrix
        if numeric is None and self.numeric_index:
            numeric = np.column_stack([rows.columns[i] for i in self.numeric_index])
        missing = np.zeros(len(self.names), dtype=np.int64)
        sums = squares = None
        if numeric is not None and numeric.size:
            finite = np.isfinite(numeric)
            clean = np.where(finite, numeric, 0.0)
            sums = clean.sum(axis=0)
            squares = np.square(clean).sum(axis=0)
            missing[self.numeric_index] = numeric.shape[0] - finite.sum(axis=0)
        slots = []
        for i, counter in zip(self.other_index, self.counters, strict=True):
            per_slot = counter.count(rows.columns[i])
            missing[i] = per_slot[counter.missing]
            slots.append(per_slot)
        counts: dict[str, int] = {}
        buckets = None
        value_sum = 0.0
        if self.task == "classification":
            labels, numbers = np.unique(predictions, return_counts=True)
            counts = {_label(label): int(n) for label, n in zip(labels.tolist(), numbers.tolist(), strict=True)}
        else:
            values = np.asarray(predictions, dtype=np.float64).reshape(-1)
            values = values[np.isfinite(values)]
            buckets = np.bincount(np.searchsorted(VALUE_BUCKETS, values, side="left"), minlength=len(VALUE_BUCKETS) + 1)
            value_sum = float(values.sum())
        with self._lock:
            self.rows += rows.count
            if sums is not None and squares is not None:
                self.sums += sums
                self.squares += squares
            self.missing += missing
            for total, j in zip(self.category_counts, self.categorical, strict=True):
                np.add(total, slots[j][: self.counters[j].missing], out=total)
            for label, n in counts.items():
                self.class_counts[label] = self.class_counts.get(label, 0) + n
            if buckets is not None:
                self.value_buckets += buckets
                self.value_sum += value_sum

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            rows = self.rows
            sums, squares, missing = self.sums.copy(), self.squares.copy(), self.missing.copy()
            category_counts = [c.copy() for c in self.category_counts]
            class_counts = dict(self.class_counts)
            value_buckets, value_sum = self.value_buckets.copy(), self.value_sum
        base = [self.model, self.version]
        family = CounterMetricFamily(
            "conveyor_server_input_rows", "Rows received for prediction.", labels=["model", "version"]
        )
        family.add_metric(base, rows)
        yield family
        sum_family = GaugeMetricFamily(
            "conveyor_server_input_feature_sum",
            "Sum of a numeric feature's finite values over all rows received (changes only by adding).",
            labels=["model", "version", "feature"],
        )
        square_family = GaugeMetricFamily(
            "conveyor_server_input_feature_sum_squares",
            "Sum of squares of a numeric feature's finite values over all rows received.",
            labels=["model", "version", "feature"],
        )
        for j, i in enumerate(self.numeric_index):
            sum_family.add_metric([*base, self.names[i]], float(sums[j]))
            square_family.add_metric([*base, self.names[i]], float(squares[j]))
        yield sum_family
        yield square_family
        missing_family = CounterMetricFamily(
            "conveyor_server_input_feature_missing",
            "Values of a feature that were missing (null, NaN or infinite).",
            labels=["model", "version", "feature"],
        )
        for i, name in enumerate(self.names):
            missing_family.add_metric([*base, name], int(missing[i]))
        yield missing_family
        if self.categorical:
            yield self._category_family(base, category_counts)
        if self.task == "classification":
            predictions = CounterMetricFamily(
                "conveyor_server_predictions", "Predictions by class.", labels=["model", "version", "class"]
            )
            for label, n in class_counts.items():
                predictions.add_metric([*base, label], n)
            yield predictions
        else:
            histogram = HistogramMetricFamily(
                "conveyor_server_prediction_value", "Predicted values (regression).", labels=["model", "version"]
            )
            cumulative = np.cumsum(value_buckets).tolist()
            bounds = [*(_float_label(b) for b in VALUE_BUCKETS), "+Inf"]
            histogram.add_metric(base, list(zip(bounds, cumulative, strict=True)), value_sum)
            # prometheus_client leaves out _count and _sum when a bucket bound is negative (an
            # OpenMetrics rule); the Prometheus text format has no such rule and rate(_sum)/rate(_count)
            # is the mean prediction the operator watches, so they are added here.
            series = dict(zip(("model", "version"), base, strict=True))
            histogram.samples.append(Sample("conveyor_server_prediction_value_count", series, cumulative[-1]))
            histogram.samples.append(Sample("conveyor_server_prediction_value_sum", series, value_sum))
            yield histogram

    def _category_family(self, base: list[str], category_counts: list[np.ndarray[Any, Any]]) -> Metric:
        family = CounterMetricFamily(
            "conveyor_server_input_category",
            "Present values of a categorical feature, by training category (__other__: any other value).",
            labels=["model", "version", "feature", "category"],
        )
        for counts, j in zip(category_counts, self.categorical, strict=True):
            counter = self.counters[j]
            feature = self.names[self.other_index[j]]
            for label, n in zip([*counter.labels, OTHER_CATEGORY], counts.tolist(), strict=True):
                family.add_metric([*base, feature, label], n)
        return family


def _float_label(value: float) -> str:
    return repr(float(value))


class ServerMetrics:
    """Every metric of one server process, on its own registry."""

    def __init__(self, model: str, version: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.model = model
        self.version = version
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "conveyor_server_requests",
            "Requests to the model endpoints, by HTTP status.",
            ["model", "version", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "conveyor_server_request_duration_seconds",
            "Time from a request's arrival to its response (infer and predict).",
            ["model", "version"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        ).labels(model, version)
        self.inflight = Gauge(
            "conveyor_server_inflight_requests", "Requests being served now.", ["model"], registry=self.registry
        ).labels(model)
        self.batch_size = Histogram(
            "conveyor_server_batch_size", "Rows per model call.", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.model_info = Gauge(
            "conveyor_server_model_info",
            "1 for the model version this server has loaded.",
            ["model", "version", "digest"],
            registry=self.registry,
        )
        self.monitoring_dropped = Counter(
            "conveyor_server_monitoring_dropped",
            "Monitoring records (sampled predictions, labels) dropped: store outage or a full buffer.",
            registry=self.registry,
        )
        self._codes: dict[int, Any] = {}
        self.stats: BatchStats | None = None

    def count(self, code: int) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.requests.labels(self.model, self.version, str(code))
        child.inc()

    def model_loaded(
        self,
        digest: str,
        signature: Signature,
        task: str,
        classes: Sequence[Any],
        categories: Mapping[str, Sequence[Any]] | None = None,
    ) -> BatchStats:
        self.model_info.labels(self.model, self.version, digest).set(1)
        self.stats = BatchStats(self.model, self.version, signature, task, classes, categories)
        self.registry.register(self.stats)
        return self.stats
