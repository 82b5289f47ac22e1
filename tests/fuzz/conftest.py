"""Prints what the fuzz tests generated at the end of the session (figures for the README's table).

Test harness code. Hypothesis keeps its example database in .hypothesis/ (ignored by git).
"""

from __future__ import annotations

import pytest

from fuzz.figures import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fuzz figures")
        for name, count in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{name}: {count}")
