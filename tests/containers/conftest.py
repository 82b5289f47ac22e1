"""Fixtures for tests in real containers on a kubelet node (test harness code).

The container stack (its own control plane serving on the node bridge's gateway, a kubelet with
containerd, MinIO on the gateway) starts once per pytest process. A missing binary, engine or image
fails the session loudly with the command that builds it: these tests never skip.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from testenv import containerstack
from testenv.containerstack import ContainerStack
from testenv.metricsserver import MetricsServer


@pytest.fixture(scope="session")
def container_stack() -> Iterator[ContainerStack]:
    with containerstack.container_stack() as stack:
        yield stack


@pytest.fixture(scope="session")
def metrics_server(container_stack: ContainerStack) -> Iterator[MetricsServer]:
    """metrics-server on the host, registered as metrics.k8s.io on the stack's API server, reading the kubelet."""
    with MetricsServer(container_stack) as server:
        print(f"[testenv] metrics-server Available with node metrics in {server.startup_seconds:.1f}s")
        yield server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of the container stack's logs (kubelet, containerd, control plane) to a failure."""
    report = yield
    stack = containerstack.running()
    if report.failed and stack is not None:
        report.sections.append(("container stack logs (tails)", stack.control_plane.log_tails()))
    return report
