"""Reading the model servers themselves: their Prometheus metrics and why a replica is not ready.

The operator asks each server pod directly (pod IP and container port), like Prometheus does;
a pod that does not answer within a short timeout is skipped for this pass. Parsing and summing
is plain functions over the samples, so the arithmetic is tested without servers.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from conveyor.core.monitoring import CategoryWindow, FeatureWindow
from conveyor.core.rollout import VersionStats

log = logging.getLogger("conveyor.serving")

PREFIX = "conveyor_server_"
NOT_A_REJECTION = ("loading", "draining", "shutting down", "starting")


@dataclass
class ServerSamples:
    """The counters of one server pod that the operator uses."""

    requests: dict[tuple[str, str], float] = field(default_factory=dict)
    """(version, code) → requests."""
    latency_buckets: dict[tuple[str, float], float] = field(default_factory=dict)
    """(version, upper bound) → cumulative count."""
    rows: dict[str, float] = field(default_factory=dict)
    """version → input rows."""
    feature_sum: dict[tuple[str, str], float] = field(default_factory=dict)
    feature_squares: dict[tuple[str, str], float] = field(default_factory=dict)
    feature_missing: dict[tuple[str, str], float] = field(default_factory=dict)
    category_counts: dict[tuple[str, str, str], float] = field(default_factory=dict)
    """(version, feature, category label) → present values."""


def parse_metrics(text: str) -> ServerSamples:
    out = ServerSamples()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name, labels, value = s.name, s.labels, float(s.value)
            version = labels.get("version", "")
            if name == PREFIX + "requests_total":
                key = (version, labels.get("code", ""))
                out.requests[key] = out.requests.get(key, 0.0) + value
            elif name == PREFIX + "request_duration_seconds_bucket":
                le = float(labels.get("le", "inf"))
                out.latency_buckets[(version, le)] = out.latency_buckets.get((version, le), 0.0) + value
            elif name == PREFIX + "input_rows_total":
                out.rows[version] = out.rows.get(version, 0.0) + value
            elif name == PREFIX + "input_feature_sum_total" or name == PREFIX + "input_feature_sum":
                out.feature_sum[(version, labels.get("feature", ""))] = value
            elif name in (PREFIX + "input_feature_sum_squares_total", PREFIX + "input_feature_sum_squares"):
                out.feature_squares[(version, labels.get("feature", ""))] = value
            elif name == PREFIX + "input_feature_missing_total":
                out.feature_missing[(version, labels.get("feature", ""))] = value
            elif name == PREFIX + "input_category_total":
                out.category_counts[(version, labels.get("feature", ""), labels.get("category", ""))] = value
    return out


def version_stats(pods: list[ServerSamples], version: str) -> VersionStats:
    """Requests, non-2xx answers and p99 latency of one version over all pods (cumulative)."""
    requests = errors = 0.0
    buckets: dict[float, float] = defaultdict(float)
    for p in pods:
        for (v, code), n in p.requests.items():
            if v != version:
                continue
            requests += n
            if not code.startswith("2"):
                errors += n
        for (v, le), n in p.latency_buckets.items():
            if v == version:
                buckets[le] += n
    return VersionStats(int(requests), int(errors), _quantile(buckets, 0.99))


def _quantile(buckets: dict[float, float], q: float) -> float | None:
    """Upper bound of the histogram bucket holding quantile q (Prometheus' estimate without interpolation)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    for le in bounds:
        if buckets[le] >= q * total:
            return le if math.isfinite(le) else bounds[-2] if len(bounds) > 1 else None
    return None


def feature_totals(p: ServerSamples, version: str) -> dict[str, FeatureWindow]:
    """Cumulative per-feature sums of one pod for one version (rows exclude the feature's missing values)."""
    rows = p.rows.get(version, 0.0)
    out = {}
    for (v, feature), total in p.feature_sum.items():
        if v != version:
            continue
        missing = p.feature_missing.get((v, feature), 0.0)
        out[feature] = FeatureWindow(rows - missing, total, p.feature_squares.get((v, feature), 0.0))
    return out


def category_totals(p: ServerSamples, version: str) -> dict[str, CategoryWindow]:
    """Cumulative per-category counts of one pod for one version, by categorical feature."""
    out: dict[str, CategoryWindow] = {}
    for (v, feature, category), n in p.category_counts.items():
        if v == version:
            out.setdefault(feature, CategoryWindow()).counts[category] = n
    return out


W = TypeVar("W", FeatureWindow, CategoryWindow)


def window_delta(new: dict[str, W], old: dict[str, W] | None) -> dict[str, W]:
    """What a pod added since the last scrape; a restarted pod (counters went down) counts from zero."""
    if old is None:
        return {}
    return {f: w.since(old[f]) if f in old else w for f, w in new.items()}


def fetch_metrics(ip: str, port: int, timeout: float = 2.0) -> ServerSamples | None:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=timeout) as resp:
            return parse_metrics(resp.read().decode())
    except (OSError, ValueError) as e:
        log.debug("metrics of %s:%s unavailable: %s", ip, port, e)
        return None


def readiness_error(ip: str, port: int, model: str, timeout: float = 2.0) -> str | None:
    """The server's own reason for not being ready (a refused model), or None (ready, or just starting)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/v2/models/{model}/ready", timeout=timeout):
            return None
    except urllib.error.HTTPError as e:
        try:
            reason = str(json.loads(e.read() or b"{}").get("error", ""))
        except ValueError:
            return None
        if not reason or reason.lower().startswith(NOT_A_REJECTION):
            return None
        return reason[:1024]
    except OSError:
        return None
