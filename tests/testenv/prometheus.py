"""Prometheus and promtool from the distribution's `prometheus` package (test harness code).

hack/install-prometheus.sh installs them; a missing binary is an error naming that script, never
a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from testenv.binaries import REPO_ROOT, MissingBinaryError

INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-prometheus.sh"
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def package_binary(name: str) -> Path:
    """``prometheus`` or ``promtool`` from PATH or the system directories; MissingBinaryError if absent."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + _SYSTEM_PATH)
    if found is None:
        raise MissingBinaryError(
            f"{name} is not installed: run {INSTALL_SCRIPT.relative_to(REPO_ROOT)} "
            "(Debian's prometheus package; needs root or sudo)"
        )
    return Path(found)
