"""A real Kubernetes node for tests: the kubelet with its own containerd, runc and CNI (test harness code).

Everything is built or installed by hack/install-testenv.sh: the kubelet at the pinned Kubernetes
version and the CNI plugins from Go modules, containerd and runc from Debian, a pause image
packed without Docker. Nothing is pulled: images reach the node by `import_image` (``docker save``
into this node's containerd), and pods use them with ``imagePullPolicy: IfNotPresent``.

The pieces, in start order:

- `NodeNetwork`: a Linux bridge holding the gateway address of a private /24 that exists only on
  this machine. It comes first, because the API server and MinIO listen on its gateway so pods
  reach them, and the kubelet's node IP is that gateway (the kubelet refuses a loopback one).
- containerd: its OWN instance (config, root, state and socket under the work dir; never the one
  a Docker engine runs), CRI on, runc with cgroupfs, overlayfs snapshots, and
  ``restrict_oom_score_adj`` (this VM lacks CAP_SYS_RESOURCE, so runc could not give the pause
  container a negative oom_score_adj and every sandbox would fail).
- the kubelet: cgroup v1 allowed (``failCgroupV1: false``), no iptables chains, its own root and
  pod-log directories, a client certificate from the test CA for the API server, a serving
  certificate from the same CA for ``kubectl logs`` and ``exec``.

What keeps pod traffic on this machine: pods get an address in the bridge's /24 and a route to
that /24 only (no default route, ``isGateway: false``, no masquerading), so a packet to anything
but another pod or the gateway fails in the pod with "network unreachable". A Service ClusterIP
would need kube-proxy, which these tests do not run; the host also gets a blackhole route for the
Service range while the node runs, so even the host cannot send such a packet off the machine.

`stop()` leaves nothing behind: pods are deleted through the API server (so the kubelet tears
their sandboxes and CNI down), leftovers are killed through containerd, then the kubelet and
containerd stop, mounts under the work dir are unmounted, the ``kubepods`` cgroups removed, and
the bridge and its blackhole route deleted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import yaml
from kubernetes import client as k8s_client

from testenv.binaries import Binaries
from testenv.controlplane import SERVICE_CIDR, ControlPlane
from testenv.podnetwork import ip
from testenv.processes import ServerProcess, free_port, wait_until

# Candidate pod subnets, tried in order: /24s outside the 10.244-254 /16s of podnetwork.py.
_CANDIDATE_SUBNETS = ("10.243.0.0/24", "10.243.1.0/24", "10.242.0.0/24", "10.242.1.0/24")
_OWNER_DIR = Path("/run/conveyor-testenv")
CGROUP_ROOT = Path("/sys/fs/cgroup")
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")


def _routes_overlap(cidr: str) -> bool:
    net = ipaddress.ip_network(cidr)
    listing = ip("-4", "route", "show", check=False).stdout + ip("-4", "addr", "show", check=False).stdout
    for word in listing.split():
        with contextlib.suppress(ValueError):
            other = ipaddress.ip_network(word, strict=False)
            if other.prefixlen > 0 and other.overlaps(net):
                return True
    return False


class NodeNetwork:
    """The node's pod bridge: name, /24 subnet and gateway (the host's address on it)."""

    def __init__(self) -> None:
        self.name = ""
        self.cidr = ""
        self.gateway = ""

    def create(self) -> NodeNetwork:
        """Take the first candidate /24 no route or address on this machine overlaps."""
        _OWNER_DIR.mkdir(parents=True, exist_ok=True)
        for index, cidr in enumerate(_CANDIDATE_SUBNETS):
            name = f"cvknode{index}"
            owner = _OWNER_DIR / f"{name}.pid"
            if ip("link", "show", name, check=False).returncode == 0:
                with contextlib.suppress(OSError, ValueError):
                    pid = int(owner.read_text())
                    if Path(f"/proc/{pid}").exists():
                        continue
                ip("link", "del", name, check=False)  # a dead session's bridge
            if _routes_overlap(cidr):
                continue
            net = ipaddress.ip_network(cidr)
            self.name, self.cidr, self.gateway = name, cidr, str(net.network_address + 1)
            owner.write_text(str(os.getpid()))
            ip("link", "add", "name", name, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/{net.prefixlen}", "dev", name)
            ip("link", "set", name, "up")
            return self
        raise RuntimeError(f"every candidate node subnet {', '.join(_CANDIDATE_SUBNETS)} is in use")

    def destroy(self) -> None:
        """Delete the bridge (and with it every pod's veth end) and its owner file."""
        if self.name:
            ip("link", "del", self.name, check=False)
            with contextlib.suppress(OSError):
                (_OWNER_DIR / f"{self.name}.pid").unlink()
            self.name = ""


def _containerd_config(root: Path, socket_path: Path, binaries: Binaries, cni_conf: Path) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket_path}"

[ttrpc]
  address = "{socket_path}.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[{cri}]
  sandbox_image = "{binaries.pause_image_reference}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{binaries.runc}"
  [{cri}.cni]
    bin_dir = "{binaries.cni_bin_dir}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"""


class KubeletNode:
    """A Ready Node of the given control plane whose pods run in real containers."""

    def __init__(self, cp: ControlPlane, bridge: NodeNetwork, name: str = "conveyor-node") -> None:
        self.cp = cp
        self.binaries = cp.binaries
        self.binaries.require_node()
        self.bridge = bridge
        self.node_name = name
        self.work_dir = cp.work_dir / "node"
        self.log_dir = cp.log_dir
        self.containerd_dir = self.work_dir / "containerd"
        self.socket = self.containerd_dir / "containerd.sock"
        self.cni_conf = self.work_dir / "cni" / "net.d"
        self.kubelet_root = self.work_dir / "kubelet"
        self.containerd: ServerProcess | None = None
        self.kubelet: ServerProcess | None = None
        self.ready_seconds: float | None = None
        self._blackhole = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> KubeletNode:
        began = time.monotonic()
        try:
            self._guard_service_range()
            self._write_cni()
            self._start_containerd()
            self.import_tar(self.binaries.pause_image)
            self._start_kubelet()
            wait_until(self._ready, timeout=timeout, what=f"node {self.node_name} Ready", process=self.kubelet,
                       interval=0.5)  # fmt: skip
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Tear everything down; safe to call twice and after a failed start."""
        if self.kubelet is not None and self.kubelet.exit_code() is None:
            with contextlib.suppress(Exception):
                self._delete_pods()
        if self.kubelet is not None:
            self.kubelet.stop(grace=10)
            self.kubelet = None
        if self.containerd is not None:
            with contextlib.suppress(Exception):
                self._kill_leftovers()
            self.containerd.stop(grace=10)
            self.containerd = None
        self._unmount_all()
        self._remove_cgroups()
        if self._blackhole:
            ip("route", "del", "blackhole", SERVICE_CIDR, check=False)
            self._blackhole = False

    # -- images ------------------------------------------------------------------------------

    def ctr(self, *args: str, stdin: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binaries.ctr), "--address", str(self.socket), "-n", "k8s.io", *args],
            stdin=stdin, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def import_tar(self, path: Path) -> None:
        """Import an image archive (docker-archive or OCI layout tar) into the node's containerd."""
        with path.open("rb") as f:
            self.ctr("images", "import", "--no-unpack=false", "-", stdin=f.fileno(), timeout=600)

    def import_image(self, ref: str) -> None:
        """Copy ``ref`` from the local Docker engine into the node (``docker save | ctr images import``)."""
        save = subprocess.Popen([DOCKER, "save", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert save.stdout is not None
        try:
            self.ctr("images", "import", "-", stdin=save.stdout.fileno(), timeout=900)
        finally:
            save.stdout.close()
            _, err = save.communicate(timeout=60)
        if save.returncode != 0:
            raise RuntimeError(f"docker save {ref} failed ({save.returncode}): {err.decode(errors='replace')}")

    def images(self) -> list[str]:
        return self.ctr("images", "ls", "-q").stdout.split()

    # -- pieces ------------------------------------------------------------------------------

    def _guard_service_range(self) -> None:
        if ip("route", "add", "blackhole", SERVICE_CIDR, check=False).returncode == 0:
            self._blackhole = True

    def _write_cni(self) -> None:
        self.cni_conf.mkdir(parents=True, exist_ok=True)
        net = ipaddress.ip_network(self.bridge.cidr)
        conf = {
            "cniVersion": "1.0.0",
            "name": "conveyor-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge.name,
                    # The bridge and its gateway address exist already; pods get no default route.
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.bridge.cidr, "gateway": self.bridge.gateway,
                                     "rangeStart": str(net.network_address + 2)}]],
                        "dataDir": str(self.work_dir / "cni" / "ipam"),
                    },
                },
            ],
        }  # fmt: skip
        (self.cni_conf / "10-conveyor.conflist").write_text(json.dumps(conf, indent=1))

    def _start_containerd(self) -> None:
        self.containerd_dir.mkdir(parents=True, exist_ok=True)
        config = self.containerd_dir / "config.toml"
        config.write_text(_containerd_config(self.containerd_dir, self.socket, self.binaries, self.cni_conf))
        env = {"PATH": f"{self.binaries.containerd_shim.parent}:{self.binaries.runc.parent}:/usr/sbin:/usr/bin:/sbin:/bin"}
        self.containerd = ServerProcess(
            "containerd", [str(self.binaries.containerd), "--config", str(config)], self.log_dir / "containerd.log",
            env=env, parent_death_signal=signal.SIGTERM,
        ).start()  # fmt: skip

        def serving() -> bool:
            if not self.socket.exists():
                return False
            return subprocess.run(
                [str(self.binaries.ctr), "--address", str(self.socket), "version"],
                capture_output=True, timeout=10, check=False,
            ).returncode == 0  # fmt: skip

        wait_until(serving, timeout=60, what="containerd's socket", process=self.containerd, interval=0.2)

    def _start_kubelet(self) -> None:
        assert self.cp.ca is not None
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.cp.node_kubeconfig(self.node_name)
        serving = self.cp.ca.issue(
            f"kubelet-{self.node_name}", f"system:node:{self.node_name}", organization="system:nodes",
            ip_sans=(self.bridge.gateway,), dns_sans=(self.node_name,), server=True,
        )  # fmt: skip
        port, healthz = free_port(self.bridge.gateway), free_port()
        self.kubelet_port = port
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "address": self.bridge.gateway,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "x509": {"clientCAFile": str(self.cp.ca.cert)},
                "webhook": {"enabled": False},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.work_dir / "pod-logs"),
            "makeIPTablesUtilChains": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "serializeImagePulls": False,
            "registerNode": True,
            "maxPods": 60,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
            "shutdownGracePeriod": "0s",
            "resolvConf": "",
        }  # fmt: skip
        config_path = self.work_dir / "kubelet-config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self.kubelet = ServerProcess(
            "kubelet",
            [
                str(self.binaries.kubelet),
                f"--config={config_path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.kubelet_root}",
                f"--cert-dir={self.work_dir / 'kubelet-pki'}",
                f"--hostname-override={self.node_name}",
                f"--node-ip={self.bridge.gateway}",
                "--v=1",
            ],
            self.log_dir / "kubelet.log",
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        ).start()

    def _ready(self) -> bool:
        with self.cp.api_client() as api:
            try:
                node = k8s_client.CoreV1Api(api).read_node_status(self.node_name)
            except k8s_client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    # -- teardown ----------------------------------------------------------------------------

    def _delete_pods(self) -> None:
        with self.cp.api_client() as api:
            core = k8s_client.CoreV1Api(api)
            selector = f"spec.nodeName={self.node_name}"
            for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:
                with contextlib.suppress(k8s_client.ApiException):
                    core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)

            def gone() -> bool:
                return not core.list_pod_for_all_namespaces(field_selector=selector).items

            with contextlib.suppress(Exception):
                wait_until(gone, timeout=60, what="the node's pods to be deleted", interval=0.5)

    def _kill_leftovers(self) -> None:
        for task_line in self.ctr("tasks", "ls", "-q", timeout=30).stdout.split():
            with contextlib.suppress(RuntimeError):
                self.ctr("tasks", "kill", "-s", "SIGKILL", task_line, timeout=30)
        time.sleep(0.5)
        for task_line in self.ctr("tasks", "ls", "-q", timeout=30).stdout.split():
            with contextlib.suppress(RuntimeError):
                self.ctr("tasks", "delete", "-f", task_line, timeout=30)
        for container in self.ctr("containers", "ls", "-q", timeout=30).stdout.split():
            with contextlib.suppress(RuntimeError):
                self.ctr("containers", "delete", container, timeout=30)

    def _unmount_all(self) -> None:
        prefix = str(self.work_dir)
        for _ in range(3):
            mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                      if line.split()[1].startswith(prefix)]  # fmt: skip
            if not mounts:
                return
            for target in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", target], capture_output=True, check=False, timeout=30)

    def _remove_cgroups(self) -> None:
        if not CGROUP_ROOT.is_dir():
            return
        for controller in CGROUP_ROOT.iterdir():
            top = controller / "kubepods"
            if not top.is_dir():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()

