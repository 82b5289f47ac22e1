"""The autoscaling benchmark: how long a ModelDeployment's HPA takes to scale up from a CPU-heavy load's start.

A container stack of its own (control plane on the node bridge's gateway, MinIO, the kubelet with
containerd), the chart installed by helm from the project's images, and metrics-server on the host
registered as metrics.k8s.io (tests/testenv/metricsserver.py: 10 s metric resolution, its floor).
The HPA controller syncs every 5 s (tests/testenv/controlplane.py). A model built in this process
is stored in MinIO; then TRIES times: a ModelDeployment (1 to 3 replicas, 200m CPU each, target
20 %, the fast behaviour of tests/testenv/autoscaling.py) is created, its one replica and the HPA's
first CPU figure awaited, a bounded request loop turns heavy (three threads of 100-row requests),
and the benchmark records

  decided_s     heavy load started → the HPA's desiredReplicas ≥ 2
  scaled_up_s   heavy load started → a second replica ready and among the routed endpoints
  scaled_down_s heavy load stopped (light stream on) → one replica left

then deletes the ModelDeployment and waits for its pods to go. p50 is the median of the tries.
Every try must end with 0 failed requests, or the benchmark fails.

Run it under the container lock (one container stack per machine):
  flock /tmp/conveyor-containers.lock .venv/bin/python bench/autoscaling_bench.py [--tries 3] [--json-out FILE]
Prints one JSON document (and writes it to --json-out when given).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kubernetes import client as k8s_client  # noqa: E402

from testenv.autoscaling import (  # noqa: E402
    GROUP,
    VERSION,
    deployment_body,
    hpa_cpu_utilization,
    live_pods,
    scale_up_and_down,
    stored_model,
)
from testenv.binaries import pinned_versions  # noqa: E402
from testenv.containerstack import container_stack  # noqa: E402
from testenv.images import build_project_images  # noqa: E402
from testenv.metricsserver import MetricsServer  # noqa: E402
from testenv.processes import wait_until  # noqa: E402
from testenv.release import install  # noqa: E402


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "loadavg_at_start": os.getloadavg()}  # fmt: skip


def commit() -> str:
    git = ["git", "-C", str(ROOT)]
    done = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return done.stdout.strip() + ("+uncommitted changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=3, help="scale-up-and-down tries (default 3)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    args = parser.parse_args()
    autoscaling = deployment_body("x", {})["spec"]["autoscaling"]
    result: dict[str, Any] = {
        "benchmark": "autoscaling",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "versions": pinned_versions(),
        "settings": {"metric_resolution": "10s", "hpa_sync_period": "5s", "server_cpu": "200m",
                     "target_cpu_utilization": autoscaling["targetCpuUtilization"],
                     "heavy": "3 threads x 100 rows a request", "behavior": autoscaling["behavior"]},
    }  # fmt: skip
    began = time.monotonic()
    tries: list[dict[str, Any]] = []
    # The test environment reports its start-up on stdout; keep stdout for the JSON document.
    with contextlib.redirect_stdout(sys.stderr), container_stack() as stack:
        release = install(stack, build_project_images())
        try:
            with MetricsServer(stack) as metrics, release.api() as api:
                result["metrics_server_startup_s"] = round(metrics.startup_seconds or 0, 1)
                model, rows = stored_model(stack.minio.endpoint)
                custom = k8s_client.CustomObjectsApi(api)
                for number in range(1, args.tries + 1):
                    name = f"bench-{number}"
                    custom.create_namespaced_custom_object(
                        GROUP, VERSION, release.run_ns, "modeldeployments", deployment_body(name, model)
                    )
                    tried = scale_up_and_down(api, release.run_ns, name, rows)
                    print(f"try {number}: {tried.summary()}", file=sys.stderr)
                    custom.delete_namespaced_custom_object(GROUP, VERSION, release.run_ns, "modeldeployments", name)
                    wait_until(lambda n=name: not live_pods(api, release.run_ns, f"conveyor.dev/model-deployment={n}"),
                               timeout=120, what=f"the pods of {name} to go")  # fmt: skip
                    tries.append({
                        "try": number, "decided_s": round(tried.decided_s, 1),
                        "scaled_up_s": round(tried.scaled_up_s, 1), "scaled_down_s": round(tried.scaled_down_s, 1),
                        "baseline_cpu_pct": tried.baseline_cpu, "cpu_pct_at_decision": hpa_cpu_utilization(tried.peak),
                        "desired_at_decision": tried.peak.get("desiredReplicas"),
                        "requests_ok": tried.ok, "requests_failed": len(tried.failures), "rescales": tried.rescales,
                    })  # fmt: skip
                    if tried.failures:
                        raise SystemExit(f"try {number}: {len(tried.failures)} failed requests: {tried.failures[:5]}")
        finally:
            release.uninstall()
    result["tries"] = tries
    for key in ("decided_s", "scaled_up_s", "scaled_down_s"):
        result[f"p50_{key}"] = round(statistics.median(t[key] for t in tries), 1)
    result["wall_s"] = round(time.monotonic() - began, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
