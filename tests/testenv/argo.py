"""Argo Workflows' workflow-controller as a benchmark peer (issue #21), never shipped.

Built from Go modules into the test environment's cache, keyed by Argo version and Go version like
hack/install-testenv.sh keys its tools, so a second run does not rebuild. v4.0.5 is the only version
the module proxy serves; it has reported security flaws, which is acceptable only because it runs as
a loopback-bound host process against the throwaway bench control plane.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ARGO_MODULE = "github.com/argoproj/argo-workflows/v4"
ARGO_VERSION = "v4.0.5"


def _go_env(name: str) -> str:
    """One ``go env`` value (GOVERSION, GOMODCACHE), so cache keys match the installed toolchain."""
    return subprocess.run(["go", "env", name], check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def cache_root() -> Path:
    """The same root hack/install-testenv.sh uses."""
    default = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "conveyor-testenv"
    return Path(os.environ.get("CONVEYOR_TESTENV_CACHE", str(default)))


@dataclass(frozen=True)
class ArgoBinaries:
    """The controller binary and the CRD manifests of the same module version."""

    workflow_controller: Path
    crds_dir: Path
    build_seconds: float | None  # None when the cached binary was used


def ensure_argo(version: str = ARGO_VERSION) -> ArgoBinaries:
    """Build the workflow-controller once per (version, Go version); return its path and the CRDs."""
    target = cache_root() / f"argo-workflows-{version}-{_go_env('GOVERSION')}"
    binary = target / "bin" / "workflow-controller"
    seconds: float | None = None
    if not binary.exists():
        (target / "bin").mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        subprocess.run(
            ["nice", "-n", "10", "go", "install", f"{ARGO_MODULE}/cmd/workflow-controller@{version}"],
            check=True,
            env={**os.environ, "GOBIN": str(target / "bin")},
            timeout=3600,
        )
        seconds = time.monotonic() - started
    crds = Path(_go_env("GOMODCACHE")) / f"{ARGO_MODULE}@{version}" / "manifests" / "base" / "crds" / "minimal"
    if not crds.is_dir():
        raise FileNotFoundError(
            f"Argo CRD manifests not found at {crds}; run `go mod download {ARGO_MODULE}@{version}`"
        )
    return ArgoBinaries(workflow_controller=binary, crds_dir=crds, build_seconds=seconds)
