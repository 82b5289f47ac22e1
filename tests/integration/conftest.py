"""Fixtures for tests against the real control plane, MinIO and the test node agent.

Test harness code. Session fixtures start each server once per pytest process (shared with
tests/e2e through testenv.stack); a missing binary fails the session with the command that
builds it. When a test that used the environment fails, the tail of every log is attached
to its report.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Generator, Iterator

import pytest
from kubernetes import client as k8s_client

from testenv import stack
from testenv.controlplane import ControlPlane
from testenv.crds import apply_crds, crd_files
from testenv.minio import MinioServer, S3Endpoint
from testenv.nodeagent import NodeAgentProcess
from testenv.podnetwork import BridgeSpec
from testenv.processes import wait_until


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler; KUBECONFIG points at it."""
    with stack.control_plane() as cp:
        yield cp


@pytest.fixture(scope="session")
def pod_bridge() -> Iterator[BridgeSpec | None]:
    """The bridge pod network namespaces attach to (None where namespaces are impossible)."""
    with stack.pod_bridge() as bridge:
        yield bridge


@pytest.fixture(scope="session")
def minio_server(control_plane: ControlPlane, pod_bridge: BridgeSpec | None) -> Iterator[MinioServer]:
    """The MinIO process itself (for tests that need its log or port)."""
    with stack.minio(control_plane, pod_bridge) as server:
        yield server


@pytest.fixture(scope="session")
def minio(minio_server: MinioServer) -> S3Endpoint:
    """Endpoint, per-session credentials and the test bucket of a real MinIO."""
    return minio_server.endpoint


@pytest.fixture(scope="session")
def node_agent(control_plane: ControlPlane, pod_bridge: BridgeSpec | None) -> Iterator[NodeAgentProcess]:
    """A Ready Node whose pods run as local processes."""
    with stack.node_agent(control_plane, pod_bridge) as agent:
        yield agent


@pytest.fixture(scope="session")
def install_crds(control_plane: ControlPlane) -> list[str]:
    """Apply every crds/*.yaml and wait until each CRD is Established; returns their names."""
    return apply_crds(control_plane, crd_files())


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[k8s_client.ApiClient]:
    """An admin ApiClient for one test, closed afterwards."""
    with control_plane.api_client() as client:
        yield client


@pytest.fixture
def namespace(request: pytest.FixtureRequest, control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace (its default ServiceAccount exists), deleted after the test."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{base}-{secrets.token_hex(3)}"
    with control_plane.api_client() as client:
        core = k8s_client.CoreV1Api(client)
        core.create_namespace({"metadata": {"name": name, "labels": {"conveyor.dev/test": "true"}}})

        def has_default_sa() -> bool:
            return any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items)

        wait_until(has_default_sa, timeout=30, what=f"default ServiceAccount in {name}")
        try:
            yield name
        finally:
            try:
                core.delete_namespace(name)
            except k8s_client.ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every test-environment log to a failing test's report."""
    report = yield
    cp = stack.running_control_plane()
    if report.failed and cp is not None:
        report.sections.append(("test environment logs (tails)", cp.log_tails()))
    return report
