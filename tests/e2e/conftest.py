"""End-to-end tests reuse the integration fixtures (test harness code).

Importing them here registers them for tests/e2e; testenv.stack makes both directories share
one control plane, MinIO and node agent when they run in the same pytest session.
"""

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
