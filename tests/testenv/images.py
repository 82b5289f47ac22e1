"""The project's container images, built by hack/images.sh, for tests on the real node (test harness code).

`build_project_images()` runs the same script `make images` runs (it installs and starts a Docker
engine when there is none, builds the stand-in base when no registry has the official one, and
takes seconds when nothing changed) and returns the three image references it printed. A build
that fails fails the test session with the script's output: container tests never skip.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testenv.binaries import REPO_ROOT

IMAGES_SCRIPT = REPO_ROOT / "hack" / "images.sh"
# Debian's own client: the one on PATH may lack the buildx plugin BuildKit builds need.
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")


class ImageBuildError(RuntimeError):
    """hack/images.sh or a docker build failed; the message carries the tail of its output."""


def _run(argv: list[str], what: str, timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise ImageBuildError(f"{what} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return done.stdout


@dataclass(frozen=True)
class ProjectImages:
    """References of the operator, step and server images in the local Docker engine."""

    operator: str
    step: str
    server: str

    def all(self) -> tuple[str, str, str]:
        return (self.operator, self.step, self.server)

    def build_context(self, context: Path, tag: str) -> None:
        """Build a test image (e.g. FROM the step image) from ``context``; nothing is pulled."""
        _run(
            [DOCKER, "build", "--pull=false", "-t", tag, str(context)],
            f"docker build of {tag}",
            timeout=600,
        )


def build_project_images(timeout: float = 3000) -> ProjectImages:
    """Build (or find up to date) the three images and return their references."""
    _run(["bash", str(IMAGES_SCRIPT)], "hack/images.sh", timeout=timeout)
    refs = [line.strip() for line in _run(["bash", str(IMAGES_SCRIPT), "--print"], "hack/images.sh --print", 60)
            .splitlines() if line.strip()]  # fmt: skip
    if len(refs) != 3:
        raise ImageBuildError(f"hack/images.sh --print printed {len(refs)} references, expected 3: {refs}")
    operator, step, server = refs
    return ProjectImages(operator=operator, step=step, server=server)
