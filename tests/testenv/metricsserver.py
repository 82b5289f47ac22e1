"""A real metrics-server for the container stack, serving metrics.k8s.io through the aggregation layer
(test harness code).

metrics-server is built from its Go module by hack/install-testenv.sh (``Binaries.locate()`` finds
it; a missing one is an error naming the build command, never a skip). It runs on the host as its
own process, as the API server does, with what a cluster would give it:

- a client certificate from the test CA for user ``conveyor-testenv:metrics-server`` and upstream's
  RBAC for it (``system:metrics-server``: nodes/metrics, pods and nodes; ``system:auth-delegator``;
  the ``extension-apiserver-authentication-reader`` Role), so it reads the kubelet and checks the
  aggregator's requests as a least-privileged user, not as an admin;
- a serving certificate from the test CA naming ``metrics-server.kube-system.svc`` (the name the
  aggregator checks) and the bridge gateway it listens on; the APIService carries the CA as its
  caBundle instead of upstream's ``insecureSkipTLSVerify``;
- a Service without a selector and its Endpoints (the gateway address), since the test node has no
  kube-proxy (the API server runs with ``--enable-aggregator-routing``, so it dials the endpoint).

It scrapes the real kubelet's ``/metrics/resource`` at the port in the node's status and verifies
the kubelet's serving certificate with the test CA (``--kubelet-certificate-authority``; the
kubelet's certificate is issued by the test CA for its InternalIP, so ``--kubelet-insecure-tls`` is
not needed). ``metric_resolution`` is metrics-server's floor of 10 s: CPU is a rate over two
scrapes, so a pod's first figure comes 10-20 s after it starts. Its log is ``metrics-server.log``
in the control plane's log dir. ``stop()`` deletes the APIService first (a registered but dead
APIService makes discovery incomplete for every client), then the rest::

    with MetricsServer(stack) as ms:
        ms.wait_for_pod_metrics(ns, pod)   # {"cpu": "12m"-like, "memory": ...} per container
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from kubernetes import client as k8s_client
from kubernetes.client.rest import ApiException

from testenv.binaries import Binaries
from testenv.containerstack import ContainerStack
from testenv.controlplane import write_kubeconfig
from testenv.processes import ServerProcess, free_port, owned_temp_dir, wait_until

NAMESPACE, NAME = "kube-system", "metrics-server"
GROUP, VERSION = "metrics.k8s.io", "v1beta1"
APISERVICE = f"{VERSION}.{GROUP}"
USER = "conveyor-testenv:metrics-server"


def _rbac_objects(user_name: str = USER, name: str = NAME) -> list[tuple[str, dict[str, Any]]]:
    """Upstream's RBAC (manifests/base/rbac.yaml of the release) bound to the test env's user; an aggregated API
    server's usual grants (read pods and nodes, delegate authentication, read the authentication config)."""
    user = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user_name}]
    ref = {"apiGroup": "rbac.authorization.k8s.io"}
    return [
        ("cluster_role", {
            "metadata": {"name": f"system:{name}"},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            ],
        }),
        ("cluster_role_binding", {
            "metadata": {"name": f"system:{name}"},
            "roleRef": {**ref, "kind": "ClusterRole", "name": f"system:{name}"},
            "subjects": user,
        }),
        ("cluster_role_binding", {
            "metadata": {"name": f"{name}:system:auth-delegator"},
            "roleRef": {**ref, "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": user,
        }),
        ("role_binding", {
            "metadata": {"name": f"{name}-auth-reader", "namespace": NAMESPACE},
            "roleRef": {**ref, "kind": "Role", "name": "extension-apiserver-authentication-reader"},
            "subjects": user,
        }),
    ]  # fmt: skip


class MetricsServer:
    """metrics-server on the bridge gateway, registered as the APIService v1beta1.metrics.k8s.io.

    testenv.custommetrics runs the custom-metrics adapter the same way: it overrides the names, the
    command line and what "ready" means."""

    name, group, version, user, binary_field = NAME, GROUP, VERSION, USER, "metrics_server"

    @property
    def apiservice(self) -> str:
        return f"{self.version}.{self.group}"

    def __init__(
        self,
        stack: ContainerStack,
        *,
        binary: Path | None = None,
        metric_resolution: str = "10s",
    ) -> None:
        self.stack = stack
        if binary is None:
            binaries = Binaries.locate()
            binaries.require(self.binary_field)
            binary = getattr(binaries, self.binary_field)
        self.binary = binary
        self.host = stack.gateway
        self.port = free_port(self.host)
        self.metric_resolution = metric_resolution
        self.work_dir = owned_temp_dir(f"conveyor-{self.name}-")
        self.log_path = stack.control_plane.log_dir / f"{self.name}.log"
        self.process: ServerProcess | None = None
        self.startup_seconds: float | None = None
        self.last_condition = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> MetricsServer:
        """Start it, register it, and wait until the APIService is Available and the node has metrics."""
        began = time.monotonic()
        cp = self.stack.control_plane
        assert cp.ca is not None
        ca = cp.ca
        name, ns = self.name, NAMESPACE
        client = ca.issue(f"{name}-client", self.user)
        serving = ca.issue(
            f"{name}-serving",
            f"{name}.{ns}.svc",
            ip_sans=(self.host,),
            dns_sans=(f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"),
            server=True,
        )
        kubeconfig = write_kubeconfig(self.work_dir / f"{name}.kubeconfig", cp.server_url, ca.cert, client)
        try:
            self._apply_rbac()
            self.process = ServerProcess(
                name,
                self._command(kubeconfig, serving.cert, serving.key, ca.cert),
                self.log_path,
                env={"PATH": "/usr/bin:/bin", "HOME": str(self.work_dir)},
                cwd=self.work_dir,
            ).start()
            self._register(ca.cert.read_bytes())
            try:
                wait_until(self._available, timeout=timeout, what=f"APIService {self.apiservice} Available",
                           process=self.process, interval=0.5)  # fmt: skip
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; its last condition: {self.last_condition or 'none'}") from None
            self._wait_serving(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _serving_args(self, kubeconfig: Path, cert: Path, key: Path) -> list[str]:
        """What every aggregated API server here is given: its delegated auth, address and serving certificate."""
        return [
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={self.host}",
            f"--secure-port={self.port}",
            f"--tls-cert-file={cert}",
            f"--tls-private-key-file={key}",
            f"--cert-dir={self.work_dir / 'certs'}",
        ]

    def _command(self, kubeconfig: Path, cert: Path, key: Path, ca: Path) -> list[str]:
        return [
            str(self.binary),
            f"--kubeconfig={kubeconfig}",
            *self._serving_args(kubeconfig, cert, key),
            # The kubelet's serving certificate comes from the test CA and names its InternalIP.
            f"--kubelet-certificate-authority={ca}",
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port",
            f"--metric-resolution={self.metric_resolution}",
            # metric-resolution must exceed the kubelet timeout (10 s by default) by a tenth.
            "--kubelet-request-timeout=5s",
            "--profiling=false",
            "--v=1",
        ]

    def _wait_serving(self, timeout: float) -> None:
        wait_until(self._node_has_metrics, timeout=timeout, what="the node's metrics from metrics.k8s.io",
                   process=self.process, interval=1.0)  # fmt: skip

    def stop(self) -> None:
        """Unregister (the APIService first), stop the process, remove its RBAC and files."""
        with contextlib.suppress(Exception), self.stack.control_plane.api_client() as api:
            with contextlib.suppress(ApiException):
                k8s_client.ApiregistrationV1Api(api).delete_api_service(self.apiservice)
            core = k8s_client.CoreV1Api(api)
            with contextlib.suppress(ApiException):
                core.delete_namespaced_service(self.name, NAMESPACE)
            with contextlib.suppress(ApiException):
                core.delete_namespaced_endpoints(self.name, NAMESPACE)
            rbac = k8s_client.RbacAuthorizationV1Api(api)
            for kind, body in _rbac_objects(self.user, self.name):
                meta = body["metadata"]
                with contextlib.suppress(ApiException):
                    if kind == "role_binding":
                        rbac.delete_namespaced_role_binding(meta["name"], meta["namespace"])
                    else:
                        getattr(rbac, f"delete_{kind}")(meta["name"])
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> MetricsServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the metrics API, as `kubectl top` reads it ------------------------------------------

    def pod_metrics(self, namespace: str, pod: str) -> dict[str, dict[str, str]] | None:
        """{container: {"cpu": ..., "memory": ...}} of one pod from metrics.k8s.io, None while it has none."""
        with self.stack.control_plane.api_client() as api:
            try:
                obj = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "pods", pod
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return {c["name"]: dict(c["usage"]) for c in cast(dict[str, Any], obj).get("containers", [])}

    def wait_for_pod_metrics(self, namespace: str, pod: str, timeout: float = 60) -> dict[str, dict[str, str]]:
        """Poll until metrics.k8s.io has the pod's usage (two kubelet scrapes after it started)."""
        return cast(
            dict[str, dict[str, str]],
            wait_until(lambda: self.pod_metrics(namespace, pod), timeout=timeout,
                       what=f"metrics of pod {namespace}/{pod}", process=self.process, interval=1.0),
        )  # fmt: skip

    def node_metrics(self) -> dict[str, dict[str, str]]:
        """{node: {"cpu": ..., "memory": ...}} from metrics.k8s.io."""
        with self.stack.control_plane.api_client() as api:
            obj = k8s_client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, "nodes")
        return {n["metadata"]["name"]: dict(n["usage"]) for n in cast(dict[str, Any], obj)["items"]}

    # -- internals ---------------------------------------------------------------------------

    def _apply_rbac(self) -> None:
        with self.stack.control_plane.api_client() as api:
            rbac = k8s_client.RbacAuthorizationV1Api(api)
            for kind, body in _rbac_objects(self.user, self.name):
                try:
                    if kind == "role_binding":
                        rbac.create_namespaced_role_binding(body["metadata"]["namespace"], body)
                    else:
                        getattr(rbac, f"create_{kind}")(body)
                except ApiException as exc:
                    if exc.status != 409:
                        raise

    def _register(self, ca_pem: bytes) -> None:
        with self.stack.control_plane.api_client() as api:
            core = k8s_client.CoreV1Api(api)
            core.create_namespaced_service(NAMESPACE, {
                "metadata": {"name": self.name},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": self.port, "protocol": "TCP"}]},
            })  # fmt: skip
            core.create_namespaced_endpoints(NAMESPACE, {
                "metadata": {"name": self.name},
                "subsets": [{"addresses": [{"ip": self.host}],
                             "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}]}],
            })  # fmt: skip
            k8s_client.ApiregistrationV1Api(api).create_api_service({
                "metadata": {"name": self.apiservice},
                "spec": {
                    "service": {"name": self.name, "namespace": NAMESPACE, "port": 443},
                    "group": self.group,
                    "version": self.version,
                    "caBundle": base64.b64encode(ca_pem).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            })  # fmt: skip

    def _available(self) -> bool:
        with self.stack.control_plane.api_client() as api:
            svc = k8s_client.ApiregistrationV1Api(api).read_api_service(self.apiservice)
        conds = {c.type: c for c in (svc.status.conditions or [])} if svc.status else {}
        available = conds.get("Available")
        if available is not None and available.status != "True":
            self.last_condition = f"{available.reason}: {available.message}"
        return available is not None and available.status == "True"

    def _node_has_metrics(self) -> bool:
        return self.stack.node.node_name in self.node_metrics()
