"""Security tests reuse the integration fixtures (test harness code), as tests/e2e does.

testenv.stack makes every directory share one control plane, MinIO and node agent per pytest session.
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
