"""The operator's Prometheus metrics: what a platform team graphs and alerts on.

Label values are bounded (results, phases, namespaces) so the series count stays small however
many Runs pass through; per-run detail belongs in Run status and the record, not in labels.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from conveyor.api.modeldeployment import ModelDeploymentStatus
from conveyor.core.rollout import version_of

RUNS = Counter("conveyor_runs_total", "Runs that reached a final phase, by result.", ["namespace", "result"])
STEPS = Counter(
    "conveyor_steps_total",
    "Step attempts that finished, by result (succeeded, failed, retried, cached, skipped).",
    ["namespace", "result"],
)
CACHE_HITS = Counter(
    "conveyor_cache_hits_total", "Steps whose outputs were reused without running a pod.", ["namespace"]
)
STEP_DURATION = Histogram(
    "conveyor_step_duration_seconds",
    "Wall time of one step attempt, from launch to observed completion.",
    ["namespace"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
STEP_OVERHEAD = Histogram(
    "conveyor_step_overhead_seconds",
    "From the last upstream step finishing (or the Run starting) to this step's Job being created.",
    ["namespace"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE = Histogram(
    "conveyor_reconcile_duration_seconds",
    "Time of one reconcile pass of one object, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RECONCILE_ERRORS = Counter("conveyor_reconcile_errors_total", "Reconcile passes that raised.", ["kind"])
JOB_VIEWS = Counter(
    "conveyor_job_views_total",
    "How reconcile passes saw a Run's Jobs and pods: from the watch cache, or by LISTing them.",
    ["source"],
)
RUN_READS = Counter(
    "conveyor_run_reads_total",
    "How reconcile passes read their Run: from the watch cache, or by a GET (first sight, finished, or stale).",
    ["source"],
)
OBJECT_READS = Counter(
    "conveyor_object_reads_total",
    "How reconcile passes read their object, by kind: from the watch cache, or by a GET (first sight, or stale).",
    ["kind", "source"],
)


def count_read(kind: str, source: str) -> None:
    OBJECT_READS.labels(kind, source).inc()
    if kind == "Run":
        RUN_READS.labels(source).inc()


STALE_WRITES = Counter(
    "conveyor_stale_status_writes_total",
    "Status writes refused because the object changed since the pass read it (the pass is redone on a fresh read).",
    ["kind"],
)
EVENTS_DROPPED = Counter(
    "conveyor_events_dropped_total", "Events not posted because the queue of Events to post was full."
)
KINDS = ("Run", "Pipeline", "ModelDeployment")
# Each kind's error and stale-write series exist at 0 from start-up: the dashboard's error panels show 0
# rather than "No data", and rate() and increase() in alerts see the first error as an increase (a series
# born at 1 has no earlier sample to increase from).
for _kind in KINDS:
    RECONCILE_ERRORS.labels(_kind)
    STALE_WRITES.labels(_kind)

ACTIVE_STEPS = Gauge("conveyor_steps_running", "Step Jobs created and not yet observed finished.", ["namespace"])

# Per ModelDeployment (bounded by the number of deployments, not by traffic).
MODEL_READY_REPLICAS = Gauge(
    "conveyor_model_ready_replicas", "Model server replicas ready, all versions.", ["namespace", "deployment"]
)
MODEL_DRIFT = Gauge(
    "conveyor_model_drift_score",
    "Share of monitored input features that drifted from the training profile in the last window.",
    ["namespace", "deployment"],
)
MODEL_LIVE_ACCURACY = Gauge(
    "conveyor_model_live_accuracy",
    "Accuracy of sampled predictions against fed-back labels, per model version.",
    ["namespace", "deployment", "version"],
)
MODEL_INFO = Gauge(
    "conveyor_model_info", "1 for the model version serving now.", ["namespace", "deployment", "version"]
)
_model_series: dict[tuple[str, str], set[tuple[str, ...]]] = {}


def observe_model_deployment(namespace: str, name: str, status: ModelDeploymentStatus) -> None:
    """Export a ModelDeployment's status as gauges, dropping series of versions no longer reported."""
    MODEL_READY_REPLICAS.labels(namespace, name).set(status.ready_replicas)
    if status.drift is not None:
        MODEL_DRIFT.labels(namespace, name).set(status.drift.score)
    series: set[tuple[str, ...]] = set()
    for acc in status.live_accuracy:
        if acc.accuracy is not None:
            MODEL_LIVE_ACCURACY.labels(namespace, name, acc.version).set(acc.accuracy)
            series.add(("acc", acc.version))
    if status.current is not None:
        version = version_of(status.current.digest)
        MODEL_INFO.labels(namespace, name, version).set(1)
        series.add(("info", version))
    for kind, version in _model_series.get((namespace, name), set()) - series:
        gauge = MODEL_LIVE_ACCURACY if kind == "acc" else MODEL_INFO
        gauge.remove(namespace, name, version)
    _model_series[(namespace, name)] = series


def forget_model_deployment(namespace: str, name: str) -> None:
    """Remove every series of a deleted ModelDeployment."""
    for kind, version in _model_series.pop((namespace, name), set()):
        (MODEL_LIVE_ACCURACY if kind == "acc" else MODEL_INFO).remove(namespace, name, version)
    for gauge in (MODEL_READY_REPLICAS, MODEL_DRIFT):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


def serve(port: int) -> None:
    """Expose /metrics (port 0: off)."""
    if port:
        start_http_server(port)
