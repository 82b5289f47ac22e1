"""The operator's Prometheus metrics: what a platform team graphs and alerts on.

Label values are bounded (results, phases, namespaces) so the series count stays small however
many Runs pass through; per-run detail belongs in Run status and the record, not in labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
    "Time of one reconcile pass of one Run.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RECONCILE_ERRORS = Counter("conveyor_reconcile_errors_total", "Reconcile passes that raised.", ["kind"])
ACTIVE_STEPS = Gauge("conveyor_steps_running", "Step Jobs created and not yet observed finished.", ["namespace"])


def serve(port: int) -> None:
    """Expose /metrics (port 0: off)."""
    if port:
        start_http_server(port)
