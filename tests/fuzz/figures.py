"""Named counters the fuzz tests increment (examples run, documents valid and invalid, passes simulated, ...).

Test harness code; tests/fuzz/conftest.py prints them at the end of the session. Import it as
`fuzz.figures` everywhere, so that every test adds to the same counter.
"""

from __future__ import annotations

from collections import Counter

FIGURES: Counter[str] = Counter()
