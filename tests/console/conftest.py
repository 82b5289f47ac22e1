"""The web console's browser tests: fixtures from console/harness.py (test harness code).

A missing Chromium or Playwright fails these tests loudly (hack/install-chromium.sh installs Chromium;
the dev extra installs Playwright); they are never skipped.
"""

from typing import Any

import pytest

from console.harness import browser, console, page, state

__all__ = ["browser", "console", "page", "state"]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say where the screenshots went (pytest's temporary directory, never the repository)."""
    factory = getattr(config, "_tmp_path_factory", None)
    shots = factory.getbasetemp() / "screenshots" if factory is not None else None
    if shots is not None and shots.is_dir():
        terminalreporter.write_line(f"console screenshots: {shots}")
