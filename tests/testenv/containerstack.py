"""The container stack: a control plane, a real kubelet node and MinIO, for tests in real containers.

Test harness code. Separate from stack.py's shared control plane (whose pods are host processes
under the node agent): this one's API server serves on the node bridge's gateway, so pods reach
it, and so does its MinIO. One instance per pytest process, shared by every fixture that asks
(reference counted like stack.py), torn down when the last user lets go. KUBECONFIG is left
alone: tests use ``control_plane.kubeconfig``, ``kubectl()`` or ``api_client()``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from testenv.binaries import Binaries
from testenv.controlplane import ControlPlane
from testenv.kubeletnode import KubeletNode, NodeNetwork
from testenv.minio import MinioServer
from testenv.stack import _shared_resource, keep_work_dir


@dataclass(frozen=True)
class ContainerStack:
    """What a container test needs; pods reach ``api_host:api_port`` and ``minio.endpoint``."""

    control_plane: ControlPlane
    node: KubeletNode
    minio: MinioServer
    network: NodeNetwork

    @property
    def gateway(self) -> str:
        """The bridge gateway: the node's InternalIP and the host address pods can reach."""
        return self.network.gateway

    @property
    def api_host(self) -> str:
        """The API server's address as pods must use it (there is no kube-proxy for the ClusterIP)."""
        return self.control_plane.api_host

    @property
    def api_port(self) -> int:
        return self.control_plane.apiserver_port


def _start() -> ContainerStack:
    binaries = Binaries.locate()
    binaries.require_node()
    undo: list[Callable[[], None]] = []
    try:
        network = NodeNetwork().create()
        undo.append(network.destroy)
        cp = ControlPlane(binaries, keep=keep_work_dir(), serve_address=network.gateway).start()
        undo.append(cp.stop)
        print(f"\n[testenv] container stack: control plane up in {cp.startup_seconds:.1f}s on {cp.server_url}")
        minio = MinioServer(binaries, cp.log_dir, host=network.gateway).start()
        undo.append(minio.stop)
        node = KubeletNode(cp, network)
        undo.append(node.stop)
        began = time.monotonic()
        node.start()
        print(
            f"[testenv] kubelet node {node.node_name} Ready in {time.monotonic() - began:.1f}s "
            f"(pods in {network.cidr}, gateway {network.gateway}), logs in {cp.log_dir}"
        )
    except BaseException:
        for action in reversed(undo):
            with contextlib.suppress(Exception):
                action()
        raise
    return ContainerStack(control_plane=cp, node=node, minio=minio, network=network)


def _stop(stack: ContainerStack) -> None:
    """Stop in reverse order; every step runs even when one fails, then the first failure is raised."""
    failures: list[BaseException] = []
    for action in (stack.node.stop, stack.minio.stop, stack.control_plane.stop, stack.network.destroy):
        try:
            action()
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


@contextlib.contextmanager
def container_stack() -> Iterator[ContainerStack]:
    """The session's container stack (started on first use, stopped when the last user is done)."""
    with _shared_resource("container_stack", _start, _stop) as stack:
        yield stack


def running() -> ContainerStack | None:
    """The container stack if one is up (for failure reports)."""
    from testenv.stack import _lock, _shared

    with _lock:
        entry = _shared.get("container_stack")
    return entry[0] if entry is not None else None
