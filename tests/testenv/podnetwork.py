"""Network namespaces that give each test pod a real, non-loopback IP (test harness code).

EndpointSlice validation rejects loopback addresses, and two replicas of one Deployment must
both be able to bind their containerPort. So each long-running pod gets a network namespace
with a veth into a bridge in the root namespace; the bridge holds the .1 address of a private
/16 that exists only on this machine, and pods get .0.2, .0.3, ... from it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from testenv.processes import pid_alive

# Second octets tried for 10.X.0.0/16; several sessions on one machine each take their own.
_CANDIDATE_OCTETS = range(244, 255)
_OWNER_DIR = Path("/run/conveyor-testenv")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run iproute2's ``ip`` with the given arguments."""
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "not running as root (ip netns needs CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed; hack/install-testenv.sh installs it"
    probe = ip("netns", "list", check=False)
    if probe.returncode != 0:
        return f"`ip netns list` failed: {probe.stderr.strip()}"
    return None


def _link_exists(name: str) -> bool:
    return ip("link", "show", name, check=False).returncode == 0


@dataclass(frozen=True)
class BridgeSpec:
    """What the node agent needs to attach pods: bridge name, subnet and gateway."""

    bridge: str
    cidr: str
    gateway: str

    @property
    def netns_prefix(self) -> str:
        """Every namespace of this session starts with it, so stale ones can be found."""
        return f"{self.bridge}-"


class PodBridge:
    """The root-namespace bridge for one test session; ``destroy`` removes it and its pod namespaces."""

    def __init__(self) -> None:
        self.spec: BridgeSpec | None = None

    def create(self) -> BridgeSpec:
        """Take the first free 10.X.0.0/16, reclaiming bridges whose owning process is gone."""
        _OWNER_DIR.mkdir(parents=True, exist_ok=True)
        for octet in _CANDIDATE_OCTETS:
            name = f"cvy{octet}"
            owner = _OWNER_DIR / f"{name}.pid"
            if _link_exists(name):
                with contextlib.suppress(OSError, ValueError):
                    if pid_alive(int(owner.read_text())):
                        continue
                delete_bridge(BridgeSpec(name, f"10.{octet}.0.0/16", f"10.{octet}.0.1"))
            spec = BridgeSpec(name, f"10.{octet}.0.0/16", f"10.{octet}.0.1")
            owner.write_text(str(os.getpid()))
            ip("link", "add", "name", name, "type", "bridge")
            ip("addr", "add", f"{spec.gateway}/16", "dev", name)
            ip("link", "set", name, "up")
            self.spec = spec
            return spec
        raise RuntimeError("every candidate pod subnet 10.244-254.0.0/16 is in use by another session")

    def destroy(self) -> None:
        """Remove the bridge, every pod namespace that still carries its prefix, and the owner file."""
        if self.spec is not None:
            delete_bridge(self.spec)
            self.spec = None


def delete_bridge(spec: BridgeSpec) -> None:
    """Delete pod namespaces with the bridge's prefix, the bridge itself and its owner file."""
    listing = ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(spec.netns_prefix):
            ip("netns", "del", name, check=False)
    ip("link", "del", spec.bridge, check=False)
    with contextlib.suppress(OSError):
        (_OWNER_DIR / f"{spec.bridge}.pid").unlink()


class AddressPool:
    """Hands out pod addresses from the bridge subnet (never the network, gateway or broadcast)."""

    def __init__(self, spec: BridgeSpec) -> None:
        self._network = ipaddress.ip_network(spec.cidr)
        self._gateway = ipaddress.ip_address(spec.gateway)
        self._used: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        self._lock = threading.Lock()

    def take(self) -> str:
        """Lowest free address."""
        with self._lock:
            for host in self._network.hosts():
                if host != self._gateway and host not in self._used:
                    self._used.add(host)
                    return str(host)
        raise RuntimeError(f"pod subnet {self._network} is exhausted")

    def give_back(self, address: str) -> None:
        """Release an address when its pod sandbox is gone."""
        with self._lock:
            self._used.discard(ipaddress.ip_address(address))


class PodSandbox:
    """One pod's network namespace: eth0 with a bridge address, lo up, default route via the gateway."""

    def __init__(self, spec: BridgeSpec, pod_uid: str, address: str) -> None:
        self.spec = spec
        short = pod_uid.replace("-", "")[:8]
        self.netns = f"{spec.netns_prefix}{short}"
        self.host_veth = f"cv{short}"  # interface names are limited to 15 characters
        self._peer = f"cp{short}"
        self.address = address

    def create(self) -> None:
        """Build the namespace and wire it to the bridge; undo everything if a step fails."""
        prefix_len = ipaddress.ip_network(self.spec.cidr).prefixlen
        try:
            ip("netns", "add", self.netns)
            ip("link", "add", self.host_veth, "type", "veth", "peer", "name", self._peer)
            ip("link", "set", self._peer, "netns", self.netns)
            ip("link", "set", self.host_veth, "master", self.spec.bridge)
            ip("link", "set", self.host_veth, "up")
            ip("-n", self.netns, "link", "set", self._peer, "name", "eth0")
            ip("-n", self.netns, "addr", "add", f"{self.address}/{prefix_len}", "dev", "eth0")
            ip("-n", self.netns, "link", "set", "eth0", "up")
            ip("-n", self.netns, "link", "set", "lo", "up")
            ip("-n", self.netns, "route", "add", "default", "via", self.spec.gateway)
        except subprocess.CalledProcessError as exc:
            self.destroy()
            raise RuntimeError(f"creating netns {self.netns} failed: {exc.stderr}") from exc

    def exec_prefix(self) -> list[str]:
        """Prepend to a command to run it inside this namespace."""
        return ["ip", "netns", "exec", self.netns]

    def destroy(self) -> None:
        """Delete the namespace (which removes eth0 and so its host-side peer) and the veth if left."""
        ip("netns", "del", self.netns, check=False)
        if _link_exists(self.host_veth):
            ip("link", "del", self.host_veth, check=False)
