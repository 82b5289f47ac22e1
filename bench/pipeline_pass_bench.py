"""API requests and bytes of one steady-state Pipeline pass, on the real test control plane.

Two Pipelines in one namespace: one with a cron schedule that is not due (yearly) and three finished
scheduled Runs of its own (history within its limits), one with a drift trigger on a ModelDeployment that
does not drift. Each gets three warm-up passes, then `--passes` passes are counted, one resync apart on the
caches' clock: every request the kubernetes client sends (method and resource, counted as in
bench/model_deployment_pass_bench.py), and the bytes of each answer. Run it against the code before and
after the Pipeline reconciler moved to the watch cache (PYTHONPATH at each checkout): the reconciler's
constructor says which it is; the "after" one is fed its caches as the operator's handlers feed them (the
ADDED event of each object and Run, then its own writes).

Usage: .venv/bin/python bench/pipeline_pass_bench.py [--passes 12]   (prints one JSON document)
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from model_deployment_pass_bench import REQUESTS, _record_requests  # noqa: E402  (its path set above)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=12)
    args = parser.parse_args()
    _record_requests()
    from kubernetes import client as k8s

    from conveyor.controller import pipelines as module
    from conveyor.controller.config import OperatorConfig
    from conveyor.controller.pipelines import PipelineReconciler
    from conveyor.kube.cluster import Cluster
    from testenv import stack
    from testenv.crds import apply_crds, crd_files

    group, version, ns = "conveyor.dev", "v1alpha1", "bench"
    steps = [{"name": "a", "container": {"image": "i", "command": ["true"]}}]
    with stack.control_plane() as cp:
        apply_crds(cp, crd_files())
        with cp.api_client() as api:
            k8s.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
            custom = k8s.CustomObjectsApi(api)

            def create(plural: str, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
                body = {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": name}, "spec": spec}
                created: Any = custom.create_namespaced_custom_object(group, version, ns, plural, body)
                return dict(created)

            md = create("modeldeployments", "ModelDeployment", "m", {"model": {"pipeline": {"name": "drift"}}})
            pipelines = {
                "schedule": create(
                    "pipelines", "Pipeline", "schedule", {"steps": steps, "schedule": {"cron": "0 0 1 1 *"}}
                ),
                "drift": create(
                    "pipelines",
                    "Pipeline",
                    "drift",
                    {"steps": steps, "triggers": [{"drift": {"modelDeployment": "m"}}]},
                ),
            }
            runs = []
            for i in range(3):  # finished scheduled Runs of the first Pipeline (history within its limits)
                run = module.scheduled_run(pipelines["schedule"], f"schedule-{29000000 + i}", _at(i))
                created_run: Any = custom.create_namespaced_custom_object(group, version, ns, "runs", run)
                finished: Any = custom.patch_namespaced_custom_object_status(
                    group, version, ns, "runs", created_run["metadata"]["name"], {"status": {"phase": "Succeeded"}}
                )
                runs.append(dict(finished))
            config = OperatorConfig(credentials_secret=None)  # the default 10 s resync
            seconds = [0.0]
            """The caches' clock: one resync passes between counted passes, as in a steady operator."""
            params = inspect.signature(PipelineReconciler).parameters
            options: dict[str, Any] = {}
            shape = "before: a GET of the Pipeline and a LIST of its Runs every pass, unconditional status writes"
            if "watched" in params:
                from conveyor.kube.watchcache import WatchCache

                cache = WatchCache(clock=lambda: seconds[0])
                for body in pipelines.values():
                    cache.object_event("pipelines", "ADDED", body)
                cache.object_event("modeldeployments", "ADDED", md)
                options = {"watched": cache, "events": lambda *a: None, "runs": module.PipelineRuns(lambda: seconds[0])}
                shape = "after: the watch cache and the Run watch, conditional status writes"
            reconciler = PipelineReconciler(Cluster(api), config, **options)
            for run in runs:
                if hasattr(reconciler, "run_event"):
                    reconciler.run_event("ADDED", run)
            out: dict[str, Any] = {"code": shape, "passes": args.passes}
            for name in pipelines:
                for _ in range(3):
                    reconciler.reconcile(ns, name)
                REQUESTS.clear()
                for _ in range(args.passes):
                    seconds[0] += config.resync_seconds
                    reconciler.reconcile(ns, name)
                counted = Counter((verb, resource) for verb, resource, _ in REQUESTS)
                out[name] = {
                    "requests_per_pass": len(REQUESTS) / args.passes,
                    "bytes_per_pass": sum(b for _, _, b in REQUESTS) / args.passes,
                    "by_request": {f"{v} {r}": n / args.passes for (v, r), n in sorted(counted.items())},
                }
    print(json.dumps(out, indent=1))


def _at(i: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp((29000000 + i) * 60, UTC)


if __name__ == "__main__":
    main()
