"""A real Kubernetes node for the test environment: kubelet, its own containerd, CNI (test harness code).

Everything comes from hack/install-testenv.sh: the kubelet at the pinned Kubernetes version and the
CNI plugins built from Go modules, containerd and runc from the distribution, a pause image and a
node-test image packed without Docker. Nothing is pulled: images reach the node through
``import_image(ref)`` (``docker save REF | ctr images import -``) or ``import_tar(path)``, and pods
use them with ``imagePullPolicy: IfNotPresent`` (or ``Never``).

In start order:

- ``NodeNetwork``: a bridge holding the .1 address of a private /24 that exists only on this
  machine (10.243.N.0/24, never the 10.244-254 /16s of podnetwork.py). It comes first: the API
  server and MinIO serve pods on its gateway, and the gateway is the kubelet's ``--node-ip``
  (the kubelet refuses a loopback one).
- containerd: its OWN instance (config, root, state and socket under the node's work dir; never
  the one a Docker engine uses), CRI on, runc with cgroupfs, overlayfs, and
  ``restrict_oom_score_adj`` (the VM lacks CAP_SYS_RESOURCE, so runc could not give the pause
  container a negative oom_score_adj and every sandbox would fail).
- the kubelet: cgroup v1 allowed, no iptables chains, its own root and pod-log directories, a
  node client certificate and a serving certificate from the test CA (the API server verifies the
  latter for ``kubectl logs`` and ``exec``; the kubelet lets in only test-CA client certificates
  and asks the API server, by SubjectAccessReview, what each may do).

What keeps pod traffic on this machine (nothing is masqueraded, no NAT rule is added):

- pods get an address in the /24 and no other route (host-local with no routes), so anything but
  the bridge subnet and its gateway is "network unreachable" inside the pod;
- the bridge plugin runs with ``isGateway: false`` (the bridge already holds the gateway), so it
  never switches on the host's ``net.ipv4.ip_forward``;
- a policy rule, ``ip rule add iif BRIDGE prohibit``, refuses to route anything that arrives from
  the bridge and is not addressed to this host, should a pod add a route of its own or forwarding
  be on for another reason (a Docker engine switches it on);
- the Service CIDR has a host ``blackhole`` route while the node runs (no kube-proxy here, so a
  ClusterIP never answers): not even the host sends such a packet towards its default gateway.

The one iptables rule the node adds (when the host has iptables) accepts frames that enter and leave
its own bridge in the FORWARD chain, which bridge netfilter makes them pass: a Docker engine loads
it and sets that chain's policy to DROP, which would drop pod-to-pod traffic.

hostNetwork pods are the host and are not covered; portmap acts only for hostPort pods (and then
needs iptables, which the test environment does not install).

``stop()`` leaves nothing behind: it cordons the Node and deletes its pods through the API server
(so the kubelet stops their sandboxes and tears down their network), stops the kubelet, kills and
removes leftover containers with ``ctr``, stops containerd, kills stray shims and pod processes,
unmounts everything under the work dir, removes the node's cgroups, the CNI results libcni caches
in /var/lib/cni, the bridge, rule and route, and restores the six kernel sysctls the kubelet sets
at start (vm.overcommit_memory, kernel.panic, ...; with protectKernelDefaults it would refuse to
start instead). A session killed before it could stop leaves a record in /run/conveyor-testenv;
the next node start sweeps what it names.

Each node's pods live under a cgroup root of its own (``/conveyor-BRIDGE/kubepods`` in every
hierarchy, the kubelet's ``cgroupRoot``), not the usual ``/kubepods``: a kubelet kills the pods of
pod cgroups it does not know, so two kubelets sharing ``/kubepods`` would kill each other's pods.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client

from testenv.binaries import Binaries
from testenv.controlplane import SERVICE_CIDR, ControlPlane
from testenv.podnetwork import ip
from testenv.processes import ServerProcess, free_port, pid_alive, wait_until

_OWNER_DIR = Path("/run/conveyor-testenv")
# One record per running node (kubelet-BRIDGE.json): what to sweep should its session die.
_RECORD_GLOB = "kubelet-*.json"
# Third octets tried for 10.243.N.0/24 (10.243.0.0/16 lies outside podnetwork.py's 10.244-254).
_CANDIDATE_INDEXES = range(32)
_CNI_RESULTS = Path("/var/lib/cni/results")
# containerd 1.6 puts every shim's socket here, whatever its own state dir.
_SHIM_SOCKET_DIR = Path("/run/containerd/s")
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the kubelet writes at start (pkg/kubelet/cm: setupKernelTunables).
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
CRI_NAMESPACE = "k8s.io"
# Debian's own client (the one on PATH may be another build); only `docker save` is used.
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# ---------------------------------------------------------------------------------- network


@dataclass(frozen=True)
class NodeSubnet:
    """One candidate node network: 10.243.``index``.0/24, its bridge name, gateway and guards."""

    index: int

    @property
    def bridge(self) -> str:
        return f"cvnode{self.index}"

    @property
    def cidr(self) -> str:
        return f"10.243.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        return f"10.243.{self.index}.1"

    @property
    def rule_priority(self) -> int:
        """Priority of the rule refusing to route pod traffic (before the main table's 32766)."""
        return 30000 + self.index

    @property
    def blackhole_metric(self) -> int:
        """Metric of this network's Service CIDR blackhole: each network removes only its own."""
        return 4000 + self.index

    @property
    def owner_file(self) -> Path:
        return _OWNER_DIR / f"{self.bridge}.pid"


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network on an interface or in any routing table, default routes aside."""
    found: list[ipaddress.IPv4Network] = []
    for line in ip("-4", "-o", "addr", "show").stdout.splitlines():
        words = line.split()
        if "inet" in words:
            found.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    types = {"unicast", "local", "broadcast", "multicast", "blackhole", "unreachable", "prohibit", "throw", "nat"}
    for line in ip("-4", "-o", "route", "show", "table", "all").stdout.splitlines():
        words = line.split()
        if not words:
            continue
        dest = words[1] if words[0] in types and len(words) > 1 else words[0]
        if dest != "default":
            with contextlib.suppress(ValueError):
                found.append(ipaddress.IPv4Network(dest, strict=False))
    return found


def _remove_network(subnet: NodeSubnet) -> None:
    """Delete the bridge, the pod-routing rule and the Service CIDR blackhole of ``subnet``."""
    ip("link", "del", subnet.bridge, check=False)
    while ip("rule", "del", "priority", str(subnet.rule_priority), check=False).returncode == 0:
        pass
    ip("route", "del", "blackhole", SERVICE_CIDR, "metric", str(subnet.blackhole_metric), check=False)
    _bridge_forwarding(subnet.bridge, allow=False)
    subnet.owner_file.unlink(missing_ok=True)


def _bridge_forwarding(bridge: str, *, allow: bool) -> None:
    """Accept frames that enter and leave ``bridge`` in the host's iptables FORWARD chain, or drop that rule.

    With bridge netfilter loaded (a Docker engine loads it) bridged frames pass the FORWARD chain, whose
    policy Docker sets to DROP: pod-to-pod packets (the operator scraping a model server, a canary's
    analysis) would vanish. The rule matches only traffic in and out of this bridge, so it forwards
    nothing anywhere else. Without iptables there is no such chain to pass.
    """
    iptables = shutil.which("iptables")
    if iptables is None:
        return
    rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
    present = subprocess.run([iptables, "-C", *rule], capture_output=True, check=False, timeout=30).returncode == 0
    if allow and not present:
        subprocess.run([iptables, "-I", *rule], capture_output=True, check=True, timeout=30)
    while (
        not allow
        and subprocess.run([iptables, "-D", *rule], capture_output=True, check=False, timeout=30).returncode == 0
    ):
        pass


class NodeNetwork:
    """The node's bridge and guards: ``create()`` before the API server starts, ``destroy()`` last."""

    def __init__(self) -> None:
        self.subnet: NodeSubnet | None = None

    def _taken(self) -> NodeSubnet:
        assert self.subnet is not None, "NodeNetwork.create() was not called"
        return self.subnet

    @property
    def gateway(self) -> str:
        """The bridge's address: the node IP, and where pods reach the API server and MinIO."""
        return self._taken().gateway

    @property
    def cidr(self) -> str:
        """The /24 pods get their addresses from."""
        return self._taken().cidr

    @property
    def bridge(self) -> str:
        """The bridge's interface name."""
        return self._taken().bridge

    def create(self) -> NodeNetwork:
        """Take the first 10.243.N.0/24 nothing on this machine uses (reclaiming dead sessions' ones)."""
        if os.geteuid() != 0:
            raise RuntimeError("the kubelet node needs root (bridge, mounts, cgroups)")
        if shutil.which("ip") is None:
            raise RuntimeError("iproute2 (`ip`) is not installed; hack/install-testenv.sh installs it")
        _OWNER_DIR.mkdir(parents=True, exist_ok=True)
        for index in _CANDIDATE_INDEXES:
            subnet = NodeSubnet(index)
            if subnet.owner_file.exists():
                with contextlib.suppress(OSError, ValueError):
                    if pid_alive(int(subnet.owner_file.read_text())):
                        continue
                _remove_network(subnet)  # a dead session's
            elif ip("link", "show", subnet.bridge, check=False).returncode == 0:
                continue  # an interface of that name nobody recorded: not ours to touch
            wanted = ipaddress.IPv4Network(subnet.cidr)
            if any(net.overlaps(wanted) for net in _networks_in_use()):
                continue
            subnet.owner_file.write_text(str(os.getpid()))
            self.subnet = subnet
            try:
                ip("link", "add", "name", subnet.bridge, "type", "bridge")
                ip("addr", "add", f"{subnet.gateway}/24", "dev", subnet.bridge)
                ip("link", "set", subnet.bridge, "up")
                ip("rule", "add", "iif", subnet.bridge, "priority", str(subnet.rule_priority), "prohibit")
                ip("route", "add", "blackhole", SERVICE_CIDR, "metric", str(subnet.blackhole_metric))
                _bridge_forwarding(subnet.bridge, allow=True)
            except subprocess.CalledProcessError as exc:
                self.destroy()
                raise RuntimeError(f"creating the node network {subnet.cidr} failed: {exc.stderr}") from exc
            return self
        raise RuntimeError("no free subnet for the kubelet node among 10.243.0-31.0/24")

    def destroy(self) -> None:
        """Remove the bridge, rule, blackhole route and owner file (idempotent)."""
        if self.subnet is not None:
            _remove_network(self.subnet)
            self.subnet = None


# ---------------------------------------------------------------------------------- host cleanup


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    prefix = str(root).rstrip("/") + "/"
    points = set()
    with Path("/proc/self/mountinfo").open() as fh:
        for line in fh:
            point = _unescape(line.split()[4])
            if point == str(root) or point.startswith(prefix):
                points.add(point)
    return sorted(points, key=lambda p: (p.count("/"), p), reverse=True)


def unmount_under(root: Path) -> list[str]:
    """Unmount everything at or below ``root`` (lazily if it must); returns what stayed mounted."""
    for _ in range(5):
        points = mounts_under(root)
        if not points:
            return []
        for point in points:
            if subprocess.run(["umount", point], capture_output=True, check=False, timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)
    return mounts_under(root)


def _cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup v1 hierarchy and of cgroup2."""
    found = []
    with Path("/proc/self/mountinfo").open() as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if right.split()[0] in ("cgroup", "cgroup2"):
                found.append(Path(_unescape(left.split()[4])))
    return found


def node_cgroups(root: str) -> list[Path]:
    """The cgroup ``root`` (a top-level name) in every hierarchy where it exists."""
    return [mount / root for mount in _cgroup_mounts() if (mount / root).is_dir()]


def _cgroup_pids(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def make_node_cgroups(root: str) -> None:
    """Create the cgroup ``root`` in every v1 hierarchy (the kubelet wants its cgroupRoot to exist)."""
    with Path("/proc/self/mountinfo").open() as fh:
        mounts = [line.partition(" - ") for line in fh]
    for left, _, right in mounts:
        if right.split()[0] != "cgroup":
            continue
        path = Path(_unescape(left.split()[4])) / root
        path.mkdir(exist_ok=True)
        # A new cpuset cgroup has no CPUs or memory nodes until given its parent's.
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((path.parent / name).read_text())


def remove_node_cgroups(root: str, timeout: float = 20) -> list[Path]:
    """Kill what still runs under cgroup ``root``, remove its cgroups bottom-up; returns those that stayed."""
    deadline = time.monotonic() + timeout
    while True:
        for cgroup in node_cgroups(root):
            for pid in _cgroup_pids(cgroup):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            children = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for path in [*children, cgroup]:
                with contextlib.suppress(OSError):
                    path.rmdir()
        left = node_cgroups(root)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _processes(match: Callable[[list[bytes]], bool]) -> list[int]:
    """Pids whose argv satisfies ``match``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
                if argv and match(argv):
                    pids.append(int(proc.name))
    return pids


def _shims_of(containerd_socket: Path) -> list[int]:
    """Pids of the containerd shims serving the containerd at ``containerd_socket``."""
    wanted = str(containerd_socket).encode()
    return _processes(lambda argv: argv[0].endswith(b"containerd-shim-runc-v2") and wanted in argv)


def _shim_socket(containerd_socket: Path, container_id: str) -> Path:
    """Where containerd 1.6 puts a shim's socket (runtime/v2/shim.SocketAddress)."""
    key = str(containerd_socket / CRI_NAMESPACE / container_id)
    return _SHIM_SOCKET_DIR / hashlib.sha256(key.encode()).hexdigest()


def read_sysctls() -> dict[str, str]:
    """Current values of the sysctls the kubelet changes."""
    return {name: (Path("/proc/sys") / name).read_text().strip() for name in KUBELET_SYSCTLS}


def restore_sysctls(values: dict[str, str]) -> None:
    """Write back the recorded values that differ now."""
    for name, value in values.items():
        path = Path("/proc/sys") / name
        if path.read_text().strip() != value:
            path.write_text(value)


def _records() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(_OWNER_DIR.glob(_RECORD_GLOB)):
        record = _read_json(path)
        if record is not None:
            found.append((path, record))
    return found


def _live_records() -> list[dict[str, Any]]:
    """Records of nodes whose session is alive."""
    return [record for _, record in _records() if pid_alive(int(record.get("pid", 0)))]


def sweep_dead_nodes() -> None:
    """Sweep what nodes of sessions that died (SIGKILL, OOM) left behind."""
    for path, record in _records():
        if not pid_alive(int(record.get("pid", 0))):
            sweep_node(record)
            path.unlink(missing_ok=True)


def sweep_node(record: dict[str, Any]) -> None:
    """Undo what the node described by ``record`` left on the machine (a dead session's, or ours)."""
    socket = Path(record.get("socket", "/nonexistent"))
    for pid in _shims_of(socket):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    stayed_cgroups = remove_node_cgroups(record["cgroup_root"]) if record.get("cgroup_root") else []
    work_dir = record.get("work_dir")
    container_ids = set(record.get("containers", []))
    if work_dir:
        # A session that died never listed its containers; containerd's own directories name them.
        containerd_dir = Path(work_dir) / "containerd"
        for listing in (
            containerd_dir / "state" / "io.containerd.runtime.v2.task" / CRI_NAMESPACE,
            containerd_dir / "root" / "io.containerd.grpc.v1.cri" / "sandboxes",
            containerd_dir / "root" / "io.containerd.grpc.v1.cri" / "containers",
        ):
            if listing.is_dir():
                container_ids.update(entry.name for entry in listing.iterdir())
        stayed = unmount_under(Path(work_dir))
        if stayed:
            raise RuntimeError(f"could not unmount {stayed}; {work_dir} stays in place")
        shutil.rmtree(work_dir, ignore_errors=True)
    for container_id in container_ids:
        _shim_socket(socket, container_id).unlink(missing_ok=True)
        # containerd's own loopback network, cached by libcni like ours.
        (_CNI_RESULTS / f"cni-loopback-{container_id}-lo").unlink(missing_ok=True)
    if record.get("cni_network") and _CNI_RESULTS.is_dir():
        for path in _CNI_RESULTS.glob(f"{record['cni_network']}-*"):
            path.unlink(missing_ok=True)
    for created in record.get("created_dirs", []):
        with contextlib.suppress(OSError):
            Path(created).rmdir()  # only while empty: another runtime may use it by now
    others = [
        r for r in _live_records() if r.get("pid") != record.get("pid") or r.get("bridge") != record.get("bridge")
    ]
    if record.get("sysctls") and not others:
        restore_sysctls(record["sysctls"])  # the last node running puts them back
    if stayed_cgroups:
        raise RuntimeError(f"cgroups could not be removed: {[str(c) for c in stayed_cgroups]}")


# ---------------------------------------------------------------------------------- the node


class KubeletNode:
    """kubelet + containerd + CNI, registered with ``control_plane`` as the Node ``node_name``.

    ``start()`` returns once the Node is Ready (``ready_seconds`` says how long that took);
    ``stop()`` leaves nothing behind (see the module docstring).
    """

    def __init__(self, control_plane: ControlPlane, network: NodeNetwork, node_name: str = "conveyor-node") -> None:
        self.control_plane = control_plane
        self.binaries: Binaries = control_plane.binaries
        self.network = network
        self.node_name = node_name
        self.log_dir = control_plane.log_dir
        self.work_dir: Path | None = None
        self.containerd: ServerProcess | None = None
        self.kubelet: ServerProcess | None = None
        self.kubelet_port: int | None = None
        self.ready_seconds: float | None = None
        self.cni_network = f"conveyor-{network.bridge}"
        self._record: dict[str, Any] = {}

    # -- where things are ----------------------------------------------------------------------

    def _path(self, *parts: str) -> Path:
        assert self.work_dir is not None, "KubeletNode.start() was not called"
        return self.work_dir.joinpath(*parts)

    @property
    def containerd_socket(self) -> Path:
        """containerd's socket (``ctr --address``; the kubelet's CRI endpoint)."""
        return self._path("containerd", "containerd.sock")

    @property
    def gateway(self) -> str:
        """The node's InternalIP: the bridge gateway, the host address pods can reach."""
        return self.network.gateway

    @property
    def pod_cidr(self) -> str:
        """The /24 pod IPs come from."""
        return self.network.cidr

    @property
    def kubelet_root(self) -> Path:
        return self._path("kubelet")

    @property
    def pod_logs_dir(self) -> Path:
        return self._path("pod-logs")

    @property
    def test_image(self) -> str:
        """The node tests' image (a static test program; its steps are in hack/install-testenv.sh)."""
        return self.binaries.nodetest_image_reference

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> KubeletNode:
        """Claim the machine, start containerd, import the pause and test images, start the kubelet, wait for Ready."""
        self.binaries.require_node()
        began = time.monotonic()
        try:
            self._claim_machine()
            self._write_cni_config()
            self._start_containerd()
            self.import_tar(self.binaries.pause_image)
            self.import_tar(self.binaries.nodetest_image)
            self._start_kubelet()
            wait_until(
                self._ready, timeout=timeout, what=f"Node {self.node_name} Ready", process=self.kubelet, interval=0.2
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Delete the node's pods, stop kubelet and containerd, undo every change to the host.

        Every step runs even when one fails; then RuntimeError names what could not be done.
        """
        problems: list[str] = []

        def attempt(what: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as exc:
                problems.append(f"{what}: {exc}")

        kubelet, containerd = self.kubelet, self.containerd
        if kubelet is not None:
            if kubelet.exit_code() is None:
                attempt("deleting the node's pods", self._delete_pods)
            attempt("stopping the kubelet", lambda: kubelet.stop(grace=15))
        if containerd is not None:
            if containerd.exit_code() is None:
                attempt("removing leftover containers", self._remove_containers)
            attempt("stopping containerd", lambda: containerd.stop(grace=15))
        if self._record:
            attempt("cleaning the host", lambda: sweep_node(self._record))
            self._record_file.unlink(missing_ok=True)
            self._record = {}
        self.kubelet = self.containerd = None
        if problems:
            raise RuntimeError("the kubelet node's teardown was incomplete:\n  " + "\n  ".join(problems))

    # -- images --------------------------------------------------------------------------------

    def _ctr_argv(self) -> list[str]:
        return [str(self.binaries.ctr), "--address", str(self.containerd_socket), "--namespace", CRI_NAMESPACE]

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this node's containerd (CRI namespace); a failure carries its stderr."""
        done = subprocess.run([*self._ctr_argv(), *args], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def import_tar(self, archive: Path) -> None:
        """Import an image archive (``docker save`` or OCI layout) into the node, unpacked for overlayfs."""
        self.ctr("images", "import", str(archive), timeout=900)

    def import_image(self, ref: str) -> None:
        """Copy ``ref`` from the local Docker engine into the node: ``docker save REF | ctr images import -``."""
        with subprocess.Popen([DOCKER, "save", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as save:
            assert save.stdout is not None and save.stderr is not None
            imported = subprocess.run(
                [*self._ctr_argv(), "images", "import", "-"],
                stdin=save.stdout,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            save.stdout.close()
            save_error = save.stderr.read().decode(errors="replace")
            save_code = save.wait(60)
        if save_code != 0:
            raise RuntimeError(f"docker save {ref} failed ({save_code}): {save_error.strip()}")
        if imported.returncode != 0:
            raise RuntimeError(f"ctr images import of {ref} failed ({imported.returncode}): {imported.stderr.strip()}")

    def images(self) -> list[str]:
        """References of the images the node holds."""
        return self.ctr("images", "ls", "-q").stdout.split()

    # -- start -----------------------------------------------------------------------------------

    @property
    def _record_file(self) -> Path:
        return _OWNER_DIR / f"kubelet-{self.network.bridge}.json"

    @property
    def cgroup_root(self) -> str:
        """The top-level cgroup the kubelet puts its pods under (``ROOT/kubepods/...``)."""
        return f"conveyor-{self.network.bridge}"

    def _claim_machine(self) -> None:
        sweep_dead_nodes()
        # The network is ours alone (NodeNetwork), so any cgroup of its name is a dead node's.
        remove_node_cgroups(self.cgroup_root)
        self.work_dir = Path(tempfile.mkdtemp(prefix="conveyor-kubelet-"))
        created = [str(p) for p in (_SHIM_SOCKET_DIR, _SHIM_SOCKET_DIR.parent, _CNI_RESULTS, _CNI_RESULTS.parent)]
        live = _live_records()
        self._record = {
            "pid": os.getpid(),
            "bridge": self.network.bridge,
            "work_dir": str(self.work_dir),
            "socket": str(self.containerd_socket),
            "cni_network": self.cni_network,
            "cgroup_root": self.cgroup_root,
            # A node already running has the values from before any kubelet changed them.
            "sysctls": live[0]["sysctls"] if live and live[0].get("sysctls") else read_sysctls(),
            "created_dirs": [p for p in created if not Path(p).exists()],
            "containers": [],
        }
        _write_json(self._record_file, self._record)
        make_node_cgroups(self.cgroup_root)

    def _write_cni_config(self) -> None:
        conf_dir = self._path("cni", "net.d")
        conf_dir.mkdir(parents=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": self.cni_network,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.network.bridge,
                    # The bridge holds the gateway already; isGateway would also switch on the host's
                    # ip_forward, which nothing here needs (see the module docstring).
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self._path("cni", "ipam")),
                        "ranges": [[{"subnet": self.network.cidr, "gateway": self.network.gateway}]],
                        "routes": [],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (conf_dir / "10-conveyor.conflist").write_text(json.dumps(conflist, indent=2))

    def _containerd_config(self) -> str:
        root = self._path("containerd")
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
temp = "{root / "tmp"}"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[{cri}]
  sandbox_image = "{self.binaries.pause_image_reference}"
  # The VM lacks CAP_SYS_RESOURCE: runc cannot give the pause container a negative oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
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
  BinaryName = "{self.binaries.runc}"
  Root = "{root / "state" / "runc"}"

[{cri}.cni]
  bin_dir = "{self.binaries.cni_bin_dir}"
  conf_dir = "{self._path("cni", "net.d")}"
  max_conf_num = 1

[{cri}.registry]
  config_path = ""
"""

    def _start_containerd(self) -> None:
        root = self._path("containerd")
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.toml"
        config.write_text(self._containerd_config())
        env = {"PATH": f"{self.binaries.containerd_shim.parent}:{_SYSTEM_PATH}"}
        self.containerd = ServerProcess(
            "containerd",
            [str(self.binaries.containerd), "--config", str(config)],
            self.log_dir / "containerd.log",
            env=env,
        ).start()

        def serving() -> bool:
            # The CRI plugin must have loaded too, or the kubelet refuses the endpoint.
            listing = self.ctr("plugins", "ls", "id==cri", timeout=10).stdout.split()
            if "error" in listing:
                raise AssertionError(f"containerd's CRI plugin failed to load; see {self.log_dir / 'containerd.log'}")
            return "ok" in listing

        wait_until(serving, timeout=60, what="containerd with its CRI plugin", process=self.containerd, interval=0.2)

    def _kubelet_config(self, serving_cert: Path, serving_key: Path) -> dict[str, Any]:
        assert self.control_plane.ca is not None
        self.kubelet_port = free_port(self.network.gateway)
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.network.gateway,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(serving_cert),
            "tlsPrivateKeyFile": str(serving_key),
            # Test-CA client certificates only; what each may do, the API server decides (the API
            # server's own kubelet client is in system:masters).
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.control_plane.ca.cert)},
            },
            "authorization": {
                "mode": "Webhook",
                "webhook": {"cacheAuthorizedTTL": "30s", "cacheUnauthorizedTTL": "1s"},
            },
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "imageServiceEndpoint": f"unix://{self.containerd_socket}",
            # kubelet 1.35+ refuses a cgroup v1 host unless told; containerd uses cgroupfs as well.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_root}",
            "failSwapOn": False,
            # Nothing can be pulled again: never collect images; evict only on a nearly full machine.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
                "imagefs.inodesFree": "1%",
            },
            "makeIPTablesUtilChains": False,
            # Lowering its own oom_score_adj needs CAP_SYS_RESOURCE, which the VM lacks.
            "oomScoreAdj": 0,
            "podLogsDir": str(self.pod_logs_dir),
            "serializeImagePulls": False,
            "registerNode": True,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
            "shutdownGracePeriod": "0s",
        }

    def _start_kubelet(self) -> None:
        cp = self.control_plane
        assert cp.ca is not None
        serving = cp.ca.issue(
            f"kubelet-{self.node_name}-serving",
            f"system:node:{self.node_name}",
            organization="system:nodes",
            ip_sans=(self.network.gateway,),
            dns_sans=(self.node_name,),
            server=True,
        )
        kubeconfig = cp.node_kubeconfig(self.node_name)
        self.kubelet_root.mkdir(parents=True)
        self.pod_logs_dir.mkdir(parents=True)
        config = self._path("kubelet-config.yaml")
        config.write_text(yaml.safe_dump(self._kubelet_config(serving.cert, serving.key)))
        self.kubelet = ServerProcess(
            "kubelet",
            [
                str(self.binaries.kubelet),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.kubelet_root}",
                f"--cert-dir={self._path('kubelet-pki')}",
                f"--hostname-override={self.node_name}",
                f"--node-ip={self.network.gateway}",
                "--v=1",
            ],
            self.log_dir / "kubelet.log",
            env={"PATH": _SYSTEM_PATH, "HOME": str(self.work_dir)},
        ).start()

    def _ready(self) -> bool:
        if self.containerd is not None:
            self.containerd.check_running()
        with self.control_plane.api_client() as api:
            try:
                node = k8s_client.CoreV1Api(api).read_node_status(self.node_name)
            except k8s_client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    # -- stop ------------------------------------------------------------------------------------

    def _delete_pods(self, timeout: float = 90) -> None:
        """Cordon the Node, delete its pods, wait until the kubelet has let them go, delete the Node."""
        with self.control_plane.api_client() as api:
            core = k8s_client.CoreV1Api(api)
            try:
                core.patch_node(self.node_name, {"spec": {"unschedulable": True}})
            except k8s_client.ApiException as exc:
                if exc.status == 404:
                    return
                raise
            selector = f"spec.nodeName={self.node_name}"

            def remaining() -> list[Any]:
                pods = core.list_pod_for_all_namespaces(field_selector=selector).items
                for pod in pods:
                    if pod.metadata.deletion_timestamp is None:
                        with contextlib.suppress(k8s_client.ApiException):
                            core.delete_namespaced_pod(
                                pod.metadata.name, pod.metadata.namespace, grace_period_seconds=2
                            )
                return list(pods)

            wait_until(lambda: not remaining(), timeout=timeout, what=f"the pods on {self.node_name} to be gone",
                       process=self.kubelet, interval=0.5)  # fmt: skip
            core.delete_node(self.node_name)

    def _remove_containers(self) -> None:
        """Kill and delete what containers are left: the kubelet stops sandboxes but removes them only later."""
        ids = self.ctr("containers", "ls", "-q", timeout=30).stdout.split()
        self._record["containers"] = ids
        _write_json(self._record_file, self._record)
        for task in self.ctr("tasks", "ls", "-q", timeout=30).stdout.split():
            with contextlib.suppress(RuntimeError):
                self.ctr("tasks", "rm", "-f", task, timeout=30)
        for container in ids:
            with contextlib.suppress(RuntimeError):
                self.ctr("containers", "rm", container, timeout=30)
