"""The web console's browser tests: fixtures from console/harness.py (test harness code).

A missing Chromium or Playwright fails these tests loudly (hack/install-chromium.sh installs Chromium;
the dev extra installs Playwright); they are never skipped.
"""

from console.harness import browser, console, page, state

__all__ = ["browser", "console", "page", "state"]
