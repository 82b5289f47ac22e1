"""The objects of resource steps: any apiVersion/kind, created, read and deleted by name.

Kept apart from kube/cluster.py on purpose: the chart's RBAC scan derives Conveyor's fixed grants from
cluster.py, while these kinds are only known from the user's Pipelines, and the chart grants them only as the
values' `resourceSteps.allowed` lists (create, get, delete).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from conveyor.kube.cluster import ClusterRefused, _api_message


@dataclass(frozen=True)
class ObjectKind:
    api_version: str
    kind: str
    plural: str

    def collection(self, namespace: str) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{prefix}/namespaces/{namespace}/{self.plural}"


class DeleteFailed(Exception):
    """The API server failed a delete (5xx): worth asking again later, unlike a refusal."""


class StepObjects:
    """Resource steps' objects through the generic API paths; a kind's plural comes from discovery (which needs no
    RBAC grant) and is remembered per process."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self._kinds: dict[tuple[str, str], ObjectKind] = {}
        self._guard = threading.Lock()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """One request as plain JSON; ApiException for an answer outside 2xx, as the typed clients raise."""
        request = self.api.param_serialize(
            method,
            path,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*request)
        resp.read()  # type: ignore[no-untyped-call]
        text = resp.data.decode() if resp.data else ""
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=text, data=None)
        return json.loads(text) if text else None

    def kind_of(self, api_version: str, kind: str) -> ObjectKind:
        """The namespaced resource serving `kind` at `api_version`; ClusterRefused when the API server serves none
        (its CRD is not installed)."""
        key = (api_version, kind)
        with self._guard:
            known = self._kinds.get(key)
        if known is not None:
            return known
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = self._call("GET", path)
        except ApiException as e:
            if e.status == 404:
                raise ClusterRefused(f"the API server serves no {api_version} (is its CRD installed?)") from None
            raise
        for r in listing.get("resources", []):
            if r.get("kind") == kind and "/" not in r.get("name", "") and r.get("namespaced"):
                found = ObjectKind(api_version, kind, r["name"])
                with self._guard:
                    self._kinds[key] = found
                return found
        raise ClusterRefused(f"the API server serves no namespaced {kind} in {api_version} (is its CRD installed?)")

    def create(self, body: dict[str, Any]) -> bool:
        """Create the object; False when it already exists (a repeated create is a no-op). A refusal (no RBAC grant,
        admission, an unknown kind) raises ClusterRefused in the API server's words."""
        meta = body["metadata"]
        kind = self.kind_of(body["apiVersion"], body["kind"])
        try:
            self._call("POST", kind.collection(meta["namespace"]), body)
        except ApiException as e:
            if e.status == 409:
                return False
            if e.status is not None and 400 <= e.status < 500:
                raise ClusterRefused(f"creating {body['kind']} {meta['name']} was refused: {_api_message(e)}") from None
            raise
        return True

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as it is now; None when it does not exist."""
        found = self.kind_of(api_version, kind)
        try:
            obj: dict[str, Any] = self._call("GET", f"{found.collection(namespace)}/{name}")
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status is not None and 400 <= e.status < 500:
                raise ClusterRefused(f"reading {kind} {name} was refused: {_api_message(e)}") from None
            raise
        return obj

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete the object (what it owns follows in the background); already gone is fine. A refusal (no RBAC
        grant to delete, admission) raises ClusterRefused in the API server's words, as create and get do, so a
        cancel or timeout is not held up by it (the Run's deletion still takes the object: owner reference)."""
        try:
            found = self.kind_of(api_version, kind)
            self._call(
                "DELETE",
                f"{found.collection(namespace)}/{name}",
                {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except ClusterRefused:
            return  # its kind is gone, and the object with it
        except ApiException as e:
            if e.status == 404:
                return
            if e.status is not None and 400 <= e.status < 500:
                raise ClusterRefused(f"deleting {kind} {name} was refused: {_api_message(e)}") from None
            raise DeleteFailed(f"deleting {kind} {name} failed: {_api_message(e)}") from None
