"""One test environment per pytest process, shared by every conftest that asks (test harness code).

tests/integration and tests/e2e both declare session fixtures; pytest would give each directory
its own instance. Reference counting here makes them share one control plane, one MinIO and one
node agent, torn down when the last user lets go (at session end).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from kubernetes import client as k8s_client

from testenv.binaries import Binaries
from testenv.controlplane import ControlPlane
from testenv.minio import MinioServer
from testenv.nodeagent import NodeAgentProcess
from testenv.podnetwork import BridgeSpec, PodBridge, unavailable_reason

T = TypeVar("T")

_lock = threading.Lock()
_shared: dict[str, list[Any]] = {}  # name -> [resource, refcount, stop]


@contextlib.contextmanager
def _shared_resource(name: str, start: Callable[[], T], stop: Callable[[T], None]) -> Iterator[T]:
    with _lock:
        entry = _shared.get(name)
        if entry is None:
            entry = _shared[name] = [start(), 0, stop]
        entry[1] += 1
    try:
        yield entry[0]
    finally:
        with _lock:
            entry[1] -= 1
            if entry[1] == 0:
                del _shared[name]
                stop(entry[0])


def running_control_plane() -> ControlPlane | None:
    """The shared control plane if one is up (for failure reports)."""
    with _lock:
        entry = _shared.get("control_plane")
    return entry[0] if entry is not None else None


def keep_work_dir() -> bool:
    """CONVEYOR_TESTENV_KEEP=1 keeps logs, certs and pod dirs after the session for debugging."""
    return os.environ.get("CONVEYOR_TESTENV_KEEP", "") not in ("", "0")


@contextlib.contextmanager
def control_plane() -> Iterator[ControlPlane]:
    """The session's control plane; KUBECONFIG points at it while it runs."""

    def start() -> ControlPlane:
        cp = ControlPlane(Binaries.locate(), keep=keep_work_dir()).start()
        print(f"\n[testenv] control plane up in {cp.startup_seconds:.1f}s, logs in {cp.log_dir}")
        return cp

    with _shared_resource("control_plane", start, lambda cp: cp.stop()) as cp:
        previous = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        try:
            yield cp
        finally:
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous


@contextlib.contextmanager
def pod_bridge() -> Iterator[BridgeSpec | None]:
    """The pod-network bridge, or None (with the reason printed) where namespaces cannot be made."""

    def start() -> tuple[PodBridge, BridgeSpec | None]:
        reason = unavailable_reason()
        if reason is not None:
            print(f"\n[testenv] pods share the host network: {reason}")
            return PodBridge(), None
        bridge = PodBridge()
        return bridge, bridge.create()

    with _shared_resource("pod_bridge", start, lambda pair: pair[0].destroy()) as (_, spec):
        yield spec


@contextlib.contextmanager
def minio(cp: ControlPlane, bridge: BridgeSpec | None) -> Iterator[MinioServer]:
    """MinIO on the bridge gateway (reachable from pods and tests alike) or on loopback."""
    host = bridge.gateway if bridge is not None else "127.0.0.1"

    def start() -> MinioServer:
        server = MinioServer(cp.binaries, cp.log_dir, host=host).start()
        print(f"\n[testenv] MinIO up in {server.startup_seconds:.1f}s at {server.endpoint.endpoint}")
        return server

    with _shared_resource("minio", start, lambda m: m.stop()) as server:
        yield server


def node_is_ready(cp: ControlPlane, name: str) -> bool:
    """The Node exists and its Ready condition is True."""
    with cp.api_client() as api:
        try:
            node = k8s_client.CoreV1Api(api).read_node_status(name)
        except k8s_client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


@contextlib.contextmanager
def node_agent(cp: ControlPlane, bridge: BridgeSpec | None) -> Iterator[NodeAgentProcess]:
    """The test kubelet, running pods as local processes on its Node."""

    def start() -> NodeAgentProcess:
        began = time.monotonic()
        agent = NodeAgentProcess(cp.node_agent_kubeconfig, cp.work_dir / "node-agent", cp.log_dir, bridge)
        agent.start(lambda: node_is_ready(cp, agent.node_name))
        print(f"\n[testenv] node {agent.node_name} Ready in {time.monotonic() - began:.1f}s")
        return agent

    with _shared_resource("node_agent", start, lambda a: a.stop()) as agent:
        yield agent
