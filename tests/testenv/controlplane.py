"""A real Kubernetes control plane on loopback for integration tests (test harness code).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes built
by hack/install-testenv.sh, on free ports, with their certificates, kubeconfigs and logs in one
temporary directory; etcd's data lives on tmpfs. Nothing touches ~/.kube.

For a real kubelet (testenv.kubeletnode) the API server can serve on another local address
instead of loopback (the pod bridge's gateway, so pods reach it), and it always carries a
client certificate for talking to kubelets (``kubectl logs``/``exec``).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from testenv.binaries import Binaries
from testenv.pki import CertificateAuthority, KeyPair, service_account_keys
from testenv.processes import ServerProcess, free_port, http_ok, owned_temp_dir, tail, wait_until

SERVICE_CIDR = "10.96.0.0/16"
# The first address of the service range belongs to the `kubernetes` Service.
KUBERNETES_SERVICE_IP = "10.96.0.1"
# Without the Node authorizer, RBAC's system:node role is bound to nobody by default.
NODES_BINDING = "conveyor-testenv:system:nodes"

# The controllers tests and the operator rely on (Jobs, Deployments, Services, garbage collection,
# namespaces, service accounts, autoscaling, PodDisruptionBudgets, node health).
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "horizontal-pod-autoscaler-controller",
    "disruption-controller",
    "pod-garbage-collector-controller",
    "ttl-after-finished-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "resourcequota-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
)


def write_kubeconfig(path: Path, server: str, ca: Path, user: KeyPair, name: str = "conveyor-test") -> Path:
    """A kubeconfig that trusts ``ca`` and authenticates with the client certificate ``user``."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": name, "user": {"client-certificate": str(user.cert), "client-key": str(user.key)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1.

    ``start()`` returns once every component reports healthy; ``stop()`` kills all process
    groups and removes the temporary directories unless ``keep`` is set.

    ``serve_address`` binds the API server to that local address instead of 127.0.0.1 and
    advertises it (it is in the serving certificate too, and every kubeconfig names it), so
    pods on a bridge whose gateway it is can reach the API server. etcd, the controller manager
    and the scheduler stay on loopback.
    """

    def __init__(
        self,
        binaries: Binaries,
        work_dir: Path | None = None,
        keep: bool = False,
        serve_address: str | None = None,
    ) -> None:
        self.binaries = binaries
        self.api_host = serve_address or "127.0.0.1"
        self.work_dir = work_dir or owned_temp_dir("conveyor-testenv-")
        self.keep = keep
        self.log_dir = self.work_dir / "logs"
        self.pki_dir = self.work_dir / "pki"
        # etcd on tmpfs: the disk is slow and the data is worthless after the session.
        shm = Path("/dev/shm")
        self.etcd_dir = owned_temp_dir("conveyor-etcd-", shm if shm.is_dir() else None)
        self.etcd_data_dir = self.etcd_dir / "data"
        self.processes: list[ServerProcess] = []
        self.startup_seconds: float | None = None
        self.etcd_port = free_port()
        self.apiserver_port = free_port(self.api_host)
        self.server_url = f"https://{self.api_host}:{self.apiserver_port}"
        self.kubeconfig = self.work_dir / "admin.kubeconfig"
        self.ca: CertificateAuthority | None = None
        self.admin: KeyPair | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Bring up every component in dependency order and wait until each is healthy."""
        began = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._make_credentials()
            etcd = self._start_etcd()
            apiserver = self._start_apiserver()
            wait_until(
                lambda: self._http_get(f"http://127.0.0.1:{self.etcd_port}/readyz"),
                timeout=30,
                what="etcd /readyz",
                process=etcd,
            )
            wait_until(
                lambda: self._https_get(f"{self.server_url}/readyz"),
                timeout=90,
                what="kube-apiserver /readyz",
                process=apiserver,
                interval=0.25,
            )
            kcm, kcm_port = self._start_controller_manager()
            scheduler, scheduler_port = self._start_scheduler()
            wait_until(
                lambda: self._https_get(f"https://127.0.0.1:{kcm_port}/healthz"),
                timeout=60,
                what="kube-controller-manager /healthz",
                process=kcm,
                interval=0.25,
            )
            wait_until(
                lambda: self._https_get(f"https://127.0.0.1:{scheduler_port}/readyz"),
                timeout=60,
                what="kube-scheduler /readyz",
                process=scheduler,
                interval=0.25,
            )
            wait_until(
                self._default_service_account_exists,
                timeout=60,
                what="the default ServiceAccount (serviceaccount controller)",
                process=kcm,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop components in reverse start order, then remove the temp dirs (unless ``keep``)."""
        for proc in reversed(self.processes):
            proc.stop()
        shutil.rmtree(self.etcd_dir, ignore_errors=True)
        if self.keep:
            # Kept on purpose: later sessions must not sweep it as a dead session's leftovers.
            (self.work_dir / "conveyor-owner.pid").unlink(missing_ok=True)
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def restart_apiserver(self, down_seconds: float = 0.0) -> float:
        """Stop kube-apiserver (SIGTERM, SIGKILL after a grace), keep etcd and its data, start it again on the
        same port with the same flags and wait for /readyz. For fault tests: every client sees the API go away
        and come back. Returns how long the API was unreachable, in seconds."""
        index, old = next((i, p) for i, p in enumerate(self.processes) if p.name == "kube-apiserver")
        began = time.monotonic()
        old.stop(grace=5)
        if down_seconds:
            time.sleep(down_seconds)
        new = ServerProcess(old.name, old.argv, old.log_path, env=old.env, cwd=old.cwd).start()
        self.processes[index] = new
        wait_until(
            lambda: self._https_get(f"{self.server_url}/readyz"),
            timeout=120,
            what="kube-apiserver /readyz after a restart",
            process=new,
            interval=0.25,
        )
        return time.monotonic() - began

    # -- clients -----------------------------------------------------------------------------

    def api_client(self) -> k8s_client.ApiClient:
        """A fresh kubernetes ApiClient for the admin user; close it (or use ``with``) when done."""
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster; with ``check``, a failure carries its stderr."""
        done = subprocess.run(
            # --cache-dir: kubectl would otherwise write its discovery cache under ~/.kube.
            [
                str(self.binaries.kubectl),
                "--kubeconfig",
                str(self.kubeconfig),
                "--cache-dir",
                str(self.work_dir / "kubectl-cache"),
                *args,
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def node_kubeconfig(self, node_name: str) -> Path:
        """A kubeconfig for a kubelet registering ``node_name``: CN system:node:NAME, O system:nodes.

        Binds RBAC's system:node ClusterRole to the system:nodes group (this API server runs RBAC
        only, without the Node authorizer), so the kubelet may update its Node, Lease and pods.
        """
        assert self.ca is not None
        pair = self.ca.issue(f"node-{node_name}", f"system:node:{node_name}", organization="system:nodes")
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NODES_BINDING},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
        }
        with self.api_client() as api:
            rbac = k8s_client.RbacAuthorizationV1Api(api)
            try:
                rbac.create_cluster_role_binding(binding)
            except k8s_client.ApiException as exc:
                if exc.status != 409:
                    raise
        return write_kubeconfig(self.work_dir / f"node-{node_name}.kubeconfig", self.server_url, self.ca.cert, pair)

    def log_tails(self, lines: int = 30) -> str:
        """The tail of every log in the log dir (components, MinIO, node agent) for a failure report."""
        states = {proc.log_path: proc for proc in self.processes}
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            proc = states.get(path)
            status = "" if proc is None else (" running" if proc.exit_code() is None else f" exited {proc.exit_code()}")
            parts.append(f"----- {path.name}{status} ({path}) -----\n{tail(path, lines)}")
        return "\n".join(parts)

    # -- internals ---------------------------------------------------------------------------

    def _make_credentials(self) -> None:
        self.ca = ca = CertificateAuthority(self.pki_dir)
        self.serving = ca.issue(
            "serving",
            "kube-apiserver",
            ip_sans=tuple(dict.fromkeys(("127.0.0.1", self.api_host, KUBERNETES_SERVICE_IP))),
            dns_sans=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            server=True,
        )
        self.admin = ca.issue("admin", "conveyor-test-admin", organization="system:masters")
        # The aggregation layer's identity towards extension API servers (metrics-server): they trust
        # it through --requestheader-client-ca-file and --requestheader-allowed-names.
        self.front_proxy_client = ca.issue("front-proxy-client", "front-proxy-client")
        # The API server's identity towards kubelets (logs, exec, port-forward).
        self.kubelet_client = ca.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", organization="system:masters"
        )
        # The controller manager runs without per-controller service accounts, so it needs broad rights.
        kcm = ca.issue("kube-controller-manager", "system:kube-controller-manager", organization="system:masters")
        scheduler = ca.issue("kube-scheduler", "system:kube-scheduler")
        self.node_agent_credentials = ca.issue("node-agent", "conveyor-test-node-agent", organization="system:masters")
        self.sa_keys = service_account_keys(self.pki_dir)
        write_kubeconfig(self.kubeconfig, self.server_url, ca.cert, self.admin)
        self.kcm_kubeconfig = write_kubeconfig(self.work_dir / "kcm.kubeconfig", self.server_url, ca.cert, kcm)
        self.scheduler_kubeconfig = write_kubeconfig(
            self.work_dir / "scheduler.kubeconfig", self.server_url, ca.cert, scheduler
        )
        self.node_agent_kubeconfig = write_kubeconfig(
            self.work_dir / "node-agent.kubeconfig", self.server_url, ca.cert, self.node_agent_credentials
        )

    def _launch(self, name: str, argv: list[str]) -> ServerProcess:
        proc = ServerProcess(name, argv, self.log_dir / f"{name}.log").start()
        self.processes.append(proc)
        return proc

    def _start_etcd(self) -> ServerProcess:
        peer = f"http://127.0.0.1:{free_port()}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        return self._launch(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=conveyor-test",
                f"--data-dir={self.etcd_data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=conveyor-test={peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self) -> ServerProcess:
        assert self.ca is not None
        return self._launch(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.api_host}",
                f"--advertise-address={self.api_host}",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={self.work_dir / 'apiserver-certs'}",
                f"--tls-cert-file={self.serving.cert}",
                f"--tls-private-key-file={self.serving.key}",
                f"--client-ca-file={self.ca.cert}",
                # The aggregation layer (testenv.metricsserver registers metrics.k8s.io): extension API
                # servers trust requests proxied with the front-proxy-client certificate.
                f"--requestheader-client-ca-file={self.ca.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={self.front_proxy_client.cert}",
                f"--proxy-client-key-file={self.front_proxy_client.key}",
                # No kube-proxy: reach an APIService's Service through its endpoint, not its ClusterIP.
                "--enable-aggregator-routing=true",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.sa_keys.cert}",
                f"--service-account-signing-key-file={self.sa_keys.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # Only a real kubelet (testenv.kubeletnode) is ever called: its serving certificate comes
                # from the test CA and names its InternalIP.
                f"--kubelet-client-certificate={self.kubelet_client.cert}",
                f"--kubelet-client-key={self.kubelet_client.key}",
                f"--kubelet-certificate-authority={self.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP",
                # A loopback advertise address would be rejected in the `kubernetes` Endpoints.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
        )

    def _component_serving_args(self, port: int, kubeconfig: Path) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={self.serving.cert}",
            f"--tls-private-key-file={self.serving.key}",
            "--profiling=false",
        ]

    def _start_controller_manager(self) -> tuple[ServerProcess, int]:
        assert self.ca is not None
        port = free_port()
        proc = self._launch(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                *self._component_serving_args(port, self.kcm_kubeconfig),
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={self.sa_keys.key}",
                f"--root-ca-file={self.ca.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=false",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                # Tests create and delete many objects; keep controllers snappy.
                "--concurrent-gc-syncs=10",
                # HPAs act every 5 s instead of 15 s, so autoscaling tests see a decision soon.
                "--horizontal-pod-autoscaler-sync-period=5s",
            ],
        )
        return proc, port

    def _start_scheduler(self) -> tuple[ServerProcess, int]:
        port = free_port()
        proc = self._launch(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                *self._component_serving_args(port, self.scheduler_kubeconfig),
            ],
        )
        return proc, port

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context that trusts the test CA and presents the admin certificate."""
        assert self.ca is not None and self.admin is not None
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return ctx

    def _https_get(self, url: str) -> bool:
        return http_ok(url, self.ssl_context())

    @staticmethod
    def _http_get(url: str) -> bool:
        return http_ok(url)

    def _default_service_account_exists(self) -> bool:
        with self.api_client() as api:
            accounts: Any = k8s_client.CoreV1Api(api).list_namespaced_service_account("default")
            return any(sa.metadata.name == "default" for sa in accounts.items)
