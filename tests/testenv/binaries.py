"""Where the test environment's binaries live (test harness code).

hack/install-testenv.sh builds every tool into a cache directory keyed by tool, version and Go
version; ``--print`` names those directories without building. A missing binary is an error that
says how to build it: integration tests never skip because a prerequisite is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-testenv.sh"
VERSIONS_FILE = REPO_ROOT / "hack" / "testenv.env"


# The real node's runtime comes from the distribution (hack/install-testenv.sh installs it as root).
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _system_binary(name: str) -> Path:
    """``name`` on PATH or in the system directories; a path that does not exist when it is nowhere."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + _SYSTEM_PATH)
    return Path(found) if found else Path("/usr/bin") / name


class MissingBinaryError(RuntimeError):
    """A test-environment binary is not built; the message names it and the build command."""


def pinned_versions() -> dict[str, str]:
    """The KEY=VALUE pins of hack/testenv.env, so reports can say what ran."""
    versions: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


# What only the real kubelet node needs; ``locate`` does not require these, KubeletNode does.
NODE_FIELDS = (
    "kubelet",
    "cni_bin_dir",
    "pause_image",
    "pause_image_ref",
    "nodetest_image",
    "nodetest_image_ref",
    "containerd",
    "containerd_shim",
    "ctr",
    "runc",
)
# Required only by what uses it (testenv.metricsserver), so the other tiers run without it.
OPTIONAL_FIELDS = ("metrics_server", "metrics_adapter")


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary the control plane, MinIO, the tools (helm, Prometheus,
    promtool, metrics-server) and the real node need.

    ``pause_image`` and ``nodetest_image`` are image archives for ``ctr images import``; their
    ``*_ref`` files hold the image reference each archive carries.
    """

    etcd: Path
    etcdctl: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path
    minio: Path
    helm: Path
    kubelet: Path
    cni_bin_dir: Path
    pause_image: Path
    pause_image_ref: Path
    nodetest_image: Path
    nodetest_image_ref: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path
    prometheus: Path
    promtool: Path
    metrics_server: Path
    metrics_adapter: Path

    @classmethod
    def locate(cls) -> Binaries:
        """Find the binaries through the install script; raise MissingBinaryError naming what is absent."""
        if not INSTALL_SCRIPT.exists():
            raise MissingBinaryError(f"{INSTALL_SCRIPT} is missing: the repository checkout is incomplete")
        try:
            out = subprocess.run(
                ["bash", str(INSTALL_SCRIPT), "--print"],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        except (subprocess.CalledProcessError, OSError) as exc:
            raise MissingBinaryError(f"cannot run `{INSTALL_SCRIPT} --print`: {exc}") from exc
        dirs = [Path(line) for line in out.splitlines() if line.strip()]
        if len(dirs) != 11:
            raise MissingBinaryError(f"`{INSTALL_SCRIPT} --print` printed {len(dirs)} lines, expected 11")
        k8s, etcd, kwok, minio, helm, kubelet, cni, node_images, prometheus, metrics_server, metrics_adapter = dirs
        found = cls(
            etcd=etcd / "bin" / "etcd",
            etcdctl=etcd / "bin" / "etcdctl",
            kube_apiserver=k8s / "bin" / "kube-apiserver",
            kube_controller_manager=k8s / "bin" / "kube-controller-manager",
            kube_scheduler=k8s / "bin" / "kube-scheduler",
            kubectl=k8s / "bin" / "kubectl",
            kwok=kwok / "bin" / "kwok",
            kwok_stages=kwok / "stages",
            minio=minio / "bin" / "minio",
            helm=helm / "bin" / "helm",
            kubelet=kubelet / "bin" / "kubelet",
            cni_bin_dir=cni / "bin",
            pause_image=node_images / "pause.tar",
            pause_image_ref=node_images / "pause.ref",
            nodetest_image=node_images / "nodetest.tar",
            nodetest_image_ref=node_images / "nodetest.ref",
            containerd=_system_binary("containerd"),
            containerd_shim=_system_binary("containerd-shim-runc-v2"),
            ctr=_system_binary("ctr"),
            runc=_system_binary("runc"),
            prometheus=prometheus / "bin" / "prometheus",
            promtool=prometheus / "bin" / "promtool",
            metrics_server=metrics_server / "bin" / "metrics-server",
            metrics_adapter=metrics_adapter / "bin" / "metrics-adapter",
        )
        found.require(*(name for name in found.__dataclass_fields__ if name not in NODE_FIELDS + OPTIONAL_FIELDS))
        return found

    def require_node(self) -> None:
        """Raise MissingBinaryError unless everything the real kubelet node needs is there."""
        self.require(*NODE_FIELDS)

    @property
    def pause_image_reference(self) -> str:
        """The reference the pause image archive carries (containerd's sandbox_image)."""
        return self.pause_image_ref.read_text().strip()

    @property
    def nodetest_image_reference(self) -> str:
        """The reference of the node tests' image (a static test program, see install-testenv.sh)."""
        return self.nodetest_image_ref.read_text().strip()

    def require(self, *names: str) -> None:
        """Raise MissingBinaryError listing every named binary that does not exist."""
        paths: list[Path] = [getattr(self, name) for name in names]
        missing = [f"{path.name} ({path})" for path in paths if not path.exists()]
        if missing:
            raise MissingBinaryError(
                "test environment binaries are missing: "
                + ", ".join(missing)
                + f"\nbuild them with: {INSTALL_SCRIPT.relative_to(REPO_ROOT)} "
                "(run from the repository root; it builds only what is missing)"
            )
