"""A Run's resync backs off while its passes find nothing to do, and snaps back when one does something."""

from __future__ import annotations

import pytest

from conveyor.controller.runs import IDLE_RESYNC_FACTOR, idle_resync


@pytest.mark.parametrize(
    ("previous", "changed", "expected"),
    [
        (None, False, 10.0),  # the first pass of a Run in this process
        (None, True, 10.0),
        (10.0, False, 20.0),
        (20.0, False, 40.0),
        (40.0, False, 60.0),  # capped at IDLE_RESYNC_FACTOR x base
        (60.0, False, 60.0),
        (60.0, True, 10.0),  # something happened: back to the base interval
        (20.0, True, 10.0),
    ],
)
def test_idle_resync(previous: float | None, changed: bool, expected: float) -> None:
    assert IDLE_RESYNC_FACTOR == 6
    assert idle_resync(previous, changed, 10.0) == expected
