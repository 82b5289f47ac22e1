"""Where the test environment's binaries live (test harness code).

hack/install-testenv.sh builds every tool into a cache directory keyed by tool, version and Go
version; ``--print`` names those directories without building. A missing binary is an error that
says how to build it: integration tests never skip because a prerequisite is absent.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-testenv.sh"
VERSIONS_FILE = REPO_ROOT / "hack" / "testenv.env"


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


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary the control plane, MinIO and the tools need."""

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
        if len(dirs) != 5:
            raise MissingBinaryError(f"`{INSTALL_SCRIPT} --print` printed {len(dirs)} lines, expected 5")
        k8s, etcd, kwok, minio, helm = dirs
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
        )
        found.require(*found.__dataclass_fields__)
        return found

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
