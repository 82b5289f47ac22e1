"""The web console's read-only view of a cluster: Runs, Pipelines, ModelDeployments, a Run's pods, a pod's
log and an object's Events.

Only reads (get and list; the chart's console ServiceAccount is granted nothing else), never a Secret,
with a client configuration of its own: a kubeconfig file and context given on the command line, or
the pod's in-cluster credentials. Bodies come back as plain JSON, like kube/cluster.py's lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from conveyor.api.base import GROUP, VERSION
from conveyor.kube.cluster import CONNECTIONS
from conveyor.manifests.names import LABEL_RUN, label_value

REQUEST_SECONDS = 10
"""Every request's timeout: a console page waits at most this long for the API server."""


class ReadRefused(Exception):
    """The API server refused a read (forbidden, unknown kind): the message says which and why."""


def reader_config(kubeconfig: Path | None, context: str | None, in_cluster: bool) -> client.Configuration:
    """A client configuration of the console's own (the process-wide default is left alone)."""
    settings = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=settings)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None, context=context, client_configuration=settings
        )
    settings.connection_pool_maxsize = max(settings.connection_pool_maxsize or 0, CONNECTIONS)
    return settings


def writer_client(settings: client.Configuration) -> client.ApiClient:
    """An API client over the console's own configuration for its actions (`conveyor ui --actions`), which
    kube.cluster.Cluster wraps as the CLI's commands do: the reader itself never writes."""
    return client.ApiClient(settings)


class ClusterReader:
    """get/list on Conveyor's kinds, list on a Run's pods and an object's Events, get on a pod's log. Nothing else."""

    def __init__(self, settings: client.Configuration) -> None:
        self.host = str(settings.host)
        self.api = client.ApiClient(settings)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def _items(self, resp: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    def list_custom(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every object of a Conveyor kind in one namespace, or in all of them (None)."""
        try:
            if namespace is None:
                resp: Any = self.custom.list_cluster_custom_object(
                    GROUP, VERSION, plural, _preload_content=False, _request_timeout=REQUEST_SECONDS
                )
            else:
                resp = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, _preload_content=False, _request_timeout=REQUEST_SECONDS
                )
        except ApiException as e:
            raise ReadRefused(_refusal(e, f"list {plural}" + (f" in {namespace}" if namespace else ""))) from None
        return self._items(resp)

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp: Any = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _preload_content=False, _request_timeout=REQUEST_SECONDS
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise ReadRefused(_refusal(e, f"get {plural} {namespace}/{name}")) from None
        body: dict[str, Any] = json.loads(resp.data)
        return body

    def run_pods(self, namespace: str, run: str) -> list[dict[str, Any]]:
        """The step pods of a Run (by the label every step Job's pod carries)."""
        try:
            resp: Any = self.core.list_namespaced_pod(
                namespace,
                label_selector=f"{LABEL_RUN}={label_value(run)}",
                _preload_content=False,
                _request_timeout=REQUEST_SECONDS,
            )
        except ApiException as e:
            raise ReadRefused(_refusal(e, f"list pods in {namespace}")) from None
        return self._items(resp)

    def events_of(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """The Events posted about one object (by its kind and name), as the API server keeps them."""
        try:
            resp: Any = self.core.list_namespaced_event(
                namespace,
                field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
                _preload_content=False,
                _request_timeout=REQUEST_SECONDS,
            )
        except ApiException as e:
            raise ReadRefused(_refusal(e, f"list events in {namespace}")) from None
        return self._items(resp)

    def pod_log(self, namespace: str, pod: str, container: str, limit_bytes: int) -> str | None:
        """A container's log (its last `limit_bytes`), or None when the pod is gone or has not started."""
        try:
            resp: Any = self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                limit_bytes=limit_bytes,
                _preload_content=False,
                _request_timeout=REQUEST_SECONDS,
            )
        except ApiException as e:
            if e.status in (400, 404):  # gone, or the container is still being created
                return None
            raise ReadRefused(_refusal(e, f"read the log of pod {namespace}/{pod}")) from None
        return bytes(resp.data).decode(errors="replace")

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]


def _refusal(e: ApiException, what: str) -> str:
    try:
        message = json.loads(e.body or "{}").get("message", "")
    except ValueError:
        message = ""
    return f"the API server refused to {what}: {e.status} {e.reason} {message}".strip()
