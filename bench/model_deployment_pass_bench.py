"""API requests and bytes of one steady-state ModelDeployment pass, on the real test control plane.

Two ModelDeployments in one namespace: one serving a model given by URI (its Deployment, Service,
autoscaler and disruption budget exist), one following a Pipeline that has no blessed model yet (the
pass reads the Pipeline and LISTs its Runs). Each gets three warm-up passes (creating its objects,
settling its status), then `--passes` passes are counted, one resync apart on the watch cache's
clock: every request the kubernetes client sends (method and resource), and the bytes of each
answer. Run it against the code before and after the ModelDeployment reconciler moved to the work
queue and watch cache (PYTHONPATH at each checkout): the reconciler's constructor says which it is;
the "after" one is fed the watch cache as the operator's handlers feed it (the ADDED event of each
object, then its own writes), so over six resyncs without news it reads the object afresh once.

Usage: .venv/bin/python bench/model_deployment_pass_bench.py [--passes 10]   (prints one JSON document)
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

REQUESTS: list[tuple[str, str, int]] = []


def _record_requests() -> None:
    from kubernetes.client import rest

    original = rest.RESTClientObject.request

    def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        resp = original(self, method, url, *args, **kwargs)
        path = re.sub(r"\?.*", "", url.split("://", 1)[-1].split("/", 1)[-1])
        parts = path.split("/")
        # .../namespaces/<ns>/<resource>[/<name>[/status]]
        resource = "/".join(parts[parts.index("namespaces") + 2 :][:1]) if "namespaces" in parts else path
        if "namespaces" in parts and len(parts) > parts.index("namespaces") + 3:
            verb = {"GET": "GET", "PATCH": "PATCH", "DELETE": "DELETE", "PUT": "PUT"}.get(method, method)
            resource += "/status" if parts[-1] == "status" else ""
        else:
            verb = "LIST" if method == "GET" else method
        REQUESTS.append((verb, resource, len(resp.read() or b"")))
        return resp

    rest.RESTClientObject.request = request  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    _record_requests()
    from kubernetes import client as k8s

    from conveyor.controller.config import OperatorConfig
    from conveyor.controller.modeldeployments import ModelDeploymentReconciler
    from conveyor.kube.cluster import Cluster
    from conveyor.kube.workloads import Workloads
    from testenv import stack
    from testenv.crds import apply_crds, crd_files

    group, version, ns = "conveyor.dev", "v1alpha1", "bench"
    with stack.control_plane() as cp:
        apply_crds(cp, crd_files())
        with cp.api_client() as api:
            k8s.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
            custom = k8s.CustomObjectsApi(api)
            pipeline = {"apiVersion": f"{group}/{version}", "kind": "Pipeline", "metadata": {"name": "p"}}
            pipeline["spec"] = {"steps": [{"name": "a", "container": {"image": "i", "command": ["true"]}}]}
            created = {"p": custom.create_namespaced_custom_object(group, version, ns, "pipelines", pipeline)}
            sources = {
                "uri": {"uri": "s3://models/blobs/c", "digest": "sha256:" + "c" * 64},
                "follow": {"pipeline": {"name": "p"}},
            }
            mds = {}
            for name, source in sources.items():
                body = {"apiVersion": f"{group}/{version}", "kind": "ModelDeployment", "metadata": {"name": name}}
                body["spec"] = {"model": source}
                mds[name] = custom.create_namespaced_custom_object(group, version, ns, "modeldeployments", body)
            config = OperatorConfig(credentials_secret=None)  # the default 10 s resync
            seconds = [0.0]
            """The watch cache's clock: one resync passes between counted passes, as in a steady operator."""
            params = inspect.signature(ModelDeploymentReconciler).parameters
            options: dict[str, Any] = {}
            shape = "before: GETs every pass, unconditional status writes"
            if "watched" in params:
                from conveyor.kube.watchcache import WatchCache

                cache = WatchCache(clock=lambda: seconds[0])
                cache.pipeline_event("ADDED", created["p"])
                for body in mds.values():
                    cache.object_event("modeldeployments", "ADDED", body)
                options = {"watched": cache, "events": lambda *a: None}
                shape = "after: the watch cache, conditional status writes"
            reconciler = ModelDeploymentReconciler(Cluster(api), Workloads(api), config, **options)
            out: dict[str, Any] = {"code": shape, "passes": args.passes}
            for name in mds:
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


if __name__ == "__main__":
    main()
