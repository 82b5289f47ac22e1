"""Chaos tests reuse the integration fixtures (test harness code).

Importing them here registers them for tests/chaos; testenv.stack makes every directory share one
control plane, MinIO and node agent when they run in the same pytest session. The chaos test
restarts the kube-apiserver and stops MinIO for a while, then leaves both running as it found them.
"""

import pytest

from integration.conftest import (
    api,
    control_plane,
    install_crds,
    minio,
    minio_server,
    namespace,
    node_agent,
    pod_bridge,
    pytest_runtest_makereport,
)

__all__ = [
    "api",
    "control_plane",
    "install_crds",
    "minio",
    "minio_server",
    "namespace",
    "node_agent",
    "pod_bridge",
    "pytest_runtest_makereport",
]


def pytest_configure(config: pytest.Config) -> None:
    """`-m chaos` selects this tier (it also runs in every plain `pytest tests`)."""
    config.addinivalue_line("markers", "chaos: faults injected while Runs execute on the real control plane")
