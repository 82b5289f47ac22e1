"""The chart installed by helm into the container stack, with the project's images (test harness code).

`install(stack, images)` imports the three images into the node's containerd, runs `helm install
charts/conveyor --wait` (two peering operator replicas from the operator image, the chart's RBAC
only, MinIO on the bridge gateway, the API server by address since the test node has no
kube-proxy) and returns a `Release`; `Release.uninstall()` undoes it. The container tier and
bench/node_bench.py share it, so both run the operator exactly as a platform team would.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client

from testenv.binaries import REPO_ROOT
from testenv.containerstack import ContainerStack
from testenv.images import ProjectImages
from testenv.processes import wait_until

CHART = REPO_ROOT / "charts" / "conveyor"
RELEASE, RELEASE_NS = "conveyor", "conveyor-system"
PEERING = "conveyor"


@dataclass
class Release:
    """The chart installed into the container stack, and where to look."""

    stack: ContainerStack
    images: ProjectImages
    run_ns: str
    """A namespace enforcing PodSecurity `restricted`, with the artifact Secret step pods read."""

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.stack.control_plane.kubectl(*args, check=check, timeout=timeout)

    def api(self) -> k8s_client.ApiClient:
        return self.stack.control_plane.api_client()

    def operator_pods(self) -> list[Any]:
        with self.api() as api:
            pods = (
                k8s_client.CoreV1Api(api)
                .list_namespaced_pod(RELEASE_NS, label_selector="app.kubernetes.io/name=conveyor")
                .items
            )
        return [p for p in pods if p.metadata.deletion_timestamp is None]

    def operator_logs(self) -> str:
        done = self.kubectl(
            "logs", "-n", RELEASE_NS, "-l", "app.kubernetes.io/name=conveyor", "--tail=-1", "--prefix",
            check=False, timeout=60,
        )  # fmt: skip
        return done.stdout + done.stderr

    def uninstall(self) -> None:
        """The release and the Run namespace (its model servers would idle on the node for the rest of the session)."""
        helm(self.stack, "uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", "--timeout", "2m")
        self.kubectl("delete", "namespace", self.run_ns, "--wait=false", check=False)


def helm(stack: ContainerStack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The test env's helm against the stack, with a home of its own (no user config leaks in)."""
    home = Path(tempfile.mkdtemp(prefix="helm-", dir=stack.control_plane.work_dir))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(stack.control_plane.kubeconfig),
    }
    return subprocess.run(
        [str(stack.control_plane.binaries.helm), *args], capture_output=True, text=True, env=env,
        timeout=timeout, check=False,
    )  # fmt: skip


def restricted_namespace(stack: ContainerStack, prefix: str = "runs") -> str:
    """A namespace enforcing PodSecurity `restricted`, with the artifact Secret step pods read."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    minio = stack.minio.endpoint
    with stack.control_plane.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
        core.create_namespace(k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name, labels=labels)))
        wait_until(
            lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
            timeout=30,
            what="the default ServiceAccount",
        )
        core.create_namespaced_secret(
            name,
            k8s_client.V1Secret(
                metadata=k8s_client.V1ObjectMeta(name="conveyor-artifacts"),
                string_data={"accessKey": minio.access_key, "secretKey": minio.secret_key},
            ),
        )
    return name


def values(stack: ContainerStack, images: ProjectImages, **overrides: Any) -> dict[str, Any]:
    """The chart values of the test release; top-level keys in ``overrides`` replace the defaults'."""
    minio = stack.minio.endpoint
    repository, tag = images.operator.rsplit(":", 1)
    out: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "replicas": 2,
        "peering": {"name": PEERING, "lifetimeSeconds": 6},
        "operator": {"resyncSeconds": 2},
        "steps": {"image": images.step},
        "servers": {"image": images.server},
        "artifacts": {
            "endpoint": minio.endpoint,
            "bucket": minio.bucket,
            "region": minio.region,
            "credentials": {"create": True, "accessKey": minio.access_key, "secretKey": minio.secret_key},
        },
        # No kube-proxy on the test node: the kubernetes Service's ClusterIP does not route from pods.
        "apiServer": {"host": stack.api_host, "port": stack.api_port},
    }
    out.update(overrides)
    return out


def install(stack: ContainerStack, images: ProjectImages, **overrides: Any) -> Release:
    """Import the images into the node and `helm install --wait` the chart; fails with helm's words and the logs."""
    for ref in images.all():
        stack.node.import_image(ref)
    values_file = stack.control_plane.work_dir / "conveyor-values.yaml"
    values_file.write_text(yaml.safe_dump(values(stack, images, **overrides)))
    began = time.monotonic()
    done = helm(
        stack, "install", RELEASE, str(CHART), "--namespace", RELEASE_NS, "--create-namespace",
        "--values", str(values_file), "--wait", "--timeout", "5m",
    )  # fmt: skip
    release = Release(stack, images, restricted_namespace(stack))
    if done.returncode != 0:
        raise AssertionError(f"helm install failed:\n{done.stderr}\n{release.operator_logs()[-4000:]}")
    print(f"\n[containers] helm install --wait took {time.monotonic() - began:.1f}s")
    return release
