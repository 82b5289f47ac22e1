"""Owned workload objects of ModelDeployments (Deployments, Services, HPAs, PDBs, ServiceMonitors).

Applied by create-or-merge-patch, guarded by a hash of what we last wrote (an annotation), so an
unchanged object is never patched and fields other controllers own (the HPA's replica count, a
Service's clusterIP) are never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from conveyor.kube.cluster import ClusterRefused, _api_message

log = logging.getLogger("conveyor.kube")

APPLIED_HASH = "conveyor.dev/applied-hash"

_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    # (apiVersion, kind): (typed API class, method suffix)
    ("apps/v1", "Deployment"): ("AppsV1Api", "namespaced_deployment"),
    ("v1", "Service"): ("CoreV1Api", "namespaced_service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("AutoscalingV2Api", "namespaced_horizontal_pod_autoscaler"),
    ("policy/v1", "PodDisruptionBudget"): ("PolicyV1Api", "namespaced_pod_disruption_budget"),
}
_CUSTOM = {("monitoring.coreos.com/v1", "ServiceMonitor"): ("monitoring.coreos.com", "v1", "servicemonitors")}


def _hash(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def _json(resp: Any) -> Any:
    return json.loads(resp.data) if resp.data else None


class Workloads:
    """Create, update, read and delete the objects a ModelDeployment owns."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._typed: dict[str, Any] = {}
        self._groups: dict[str, tuple[float, bool]] = {}

    def _op(self, verb: str, api_version: str, kind: str) -> Any:
        """The client method for a verb on a kind, as a function of (namespace, name|None, body|None)."""
        if (api_version, kind) in _CUSTOM:
            group, version, plural = _CUSTOM[(api_version, kind)]
            c = self.custom
            ops = {
                "read": lambda ns, name, body: c.get_namespaced_custom_object(
                    group, version, ns, plural, name, _preload_content=False
                ),
                "create": lambda ns, name, body: c.create_namespaced_custom_object(
                    group, version, ns, plural, body, _preload_content=False
                ),
                "patch": lambda ns, name, body: c.patch_namespaced_custom_object(
                    group, version, ns, plural, name, body, _preload_content=False
                ),
                "delete": lambda ns, name, body: c.delete_namespaced_custom_object(
                    group, version, ns, plural, name, propagation_policy="Background", _preload_content=False
                ),
            }
            return ops[verb]
        cls, suffix = _KINDS[(api_version, kind)]
        typed = self._typed.setdefault(cls, getattr(client, cls)(self.api))
        method = getattr(typed, f"{verb}_{suffix}")
        if verb == "read":
            return lambda ns, name, body: method(name, ns, _preload_content=False)
        if verb == "create":
            return lambda ns, name, body: method(ns, body, _preload_content=False)
        if verb == "patch":
            return lambda ns, name, body: method(name, ns, body, _preload_content=False)
        return lambda ns, name, body: method(name, ns, propagation_policy="Background", _preload_content=False)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = _json(self._op("read", api_version, kind)(namespace, name, None))
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    def apply(self, manifest: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """Create the object, or merge-patch it when what we want changed since we last wrote it.

        `keep` names top-level spec fields left to others once the object exists (e.g. `replicas`,
        which the autoscaler owns)."""
        meta = manifest["metadata"]
        want_hash = _hash(manifest)
        body = json.loads(json.dumps(manifest))
        body["metadata"].setdefault("annotations", {})[APPLIED_HASH] = want_hash
        api_version, kind, ns, name = manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        current = self.get(api_version, kind, ns, name)
        try:
            if current is None:
                created: dict[str, Any] = _json(self._op("create", api_version, kind)(ns, name, body))
                return created
            if current["metadata"].get("annotations", {}).get(APPLIED_HASH) == want_hash:
                return current
            for field in keep:
                body.get("spec", {}).pop(field, None)
            # The client sends a dict patch as a JSON merge patch for these kinds.
            patched: dict[str, Any] = _json(self._op("patch", api_version, kind)(ns, name, body))
            return patched
        except ApiException as e:
            if e.status == 409:  # created meanwhile by another pass: the next pass patches it
                return current or body
            if e.status is not None and 400 <= e.status < 500:
                raise ClusterRefused(f"applying {kind} {ns}/{name} was refused: {_api_message(e)}") from None
            raise

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete if present; True when something was deleted."""
        try:
            self._op("delete", api_version, kind)(namespace, name, None)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def has_group(self, group_version: str, ttl: float = 60.0) -> bool:
        """Whether the API server serves this group/version (e.g. the Prometheus operator's CRDs)."""
        cached = self._groups.get(group_version)
        now = time.monotonic()
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        group, _, version = group_version.partition("/")
        try:
            groups: Any = client.ApisApi(self.api).get_api_versions()
            present = any(
                g.name == group and any(v.version == version for v in g.versions or []) for g in groups.groups or []
            )
        except ApiException as e:
            if e.status != 403:
                raise
            present = False
        self._groups[group_version] = (now, present)
        return present

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp: Any = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items
