"""Requests to a Service's ready pods, for clusters without kube-proxy (test harness code).

The test environments have no kube-proxy, so a Service's ClusterIP does not route. `Router` plays
its part from the test process: it follows the Service's EndpointSlices and sends each request to
one ready, non-terminating endpoint in turn, as a ClusterIP would. `Load` is a bounded request
loop through a Router that counts every answer that was not a 200.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
from kubernetes import client as k8s_client


class Router:
    """Sends requests to the ready endpoints of a Service, refreshed from its EndpointSlices."""

    def __init__(self, api: k8s_client.ApiClient, ns: str, service: str) -> None:
        self.discovery = k8s_client.DiscoveryV1Api(api)
        self.ns, self.service = ns, service
        self.endpoints: list[tuple[str, int]] = []
        self._rr = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> Router:
        self.refresh()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def refresh(self) -> None:
        slices = self.discovery.list_namespaced_endpoint_slice(
            self.ns, label_selector=f"kubernetes.io/service-name={self.service}"
        ).items
        ready = []
        for s in slices:
            port = next((p.port for p in s.ports or [] if p.port), None)
            for ep in s.endpoints or []:
                c = ep.conditions
                if port and c is not None and c.ready and not c.terminating:
                    ready += [(addr, port) for addr in ep.addresses]
        self.endpoints = sorted(ready)

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.refresh()
            except Exception as e:
                print(f"router refresh failed: {e}")

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
        endpoints = self.endpoints
        if not endpoints:
            raise ConnectionError(f"service {self.service} has no ready endpoints")
        host, port = endpoints[next(self._rr) % len(endpoints)]
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, payload, {"Content-Type": "application/json"} if payload else {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()


def infer_body(rows: np.ndarray, request_id: str | None = None) -> dict[str, Any]:
    """An Open Inference Protocol v2 request with one FP64 tensor of ``rows``."""
    body: dict[str, Any] = {
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]
    }
    if request_id:
        body["id"] = request_id
    return body


class Load:
    """A request loop in a thread, one row a request, until the block ends or ``limit`` requests were sent."""

    def __init__(self, router: Router, model: str, rows: np.ndarray, limit: int = 100_000) -> None:
        self.router, self.model, self.rows, self.limit = router, model, rows, limit
        self.ok = 0
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        """Answers per model_version (12 hex digits of the model's digest): who served the traffic."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        i = 0
        while not self._stop.is_set() and i < self.limit:
            row = self.rows[i % len(self.rows) : i % len(self.rows) + 1]
            i += 1
            try:
                status, body = self.router.request("POST", f"/v2/models/{self.model}/infer", infer_body(row))
                if status == 200:
                    self.ok += 1
                    self.versions[str(body.get("model_version"))] += 1
                else:
                    self.failures.append(f"{status}: {body}")
            except Exception as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            time.sleep(0.01)
