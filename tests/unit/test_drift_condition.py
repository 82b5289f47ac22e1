"""The Drifting condition and its Event, decided in core.monitoring: (policy, drift status, condition before) →
(status, reason, message, Event)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.api.base import Condition, ConditionStatus
from conveyor.api.modeldeployment import DriftMonitor, DriftStatus
from conveyor.core.monitoring import drift_report
from conveyor.core.rollout import Event

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
POLICY = DriftMonitor(threshold=0.2, window_seconds=600)
TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


def drift(score: float, above_for: float | None, rows: int = 120) -> DriftStatus:
    """A drift status whose score has been above the threshold for `above_for` seconds (None: it is below)."""
    since = NOW - timedelta(seconds=above_for) if above_for is not None else None
    return DriftStatus(score=score, rows=rows, above_since=since, at=NOW)


def was(status: ConditionStatus) -> Condition:
    return Condition(
        type="Drifting", status=status, reason="x", message="x", last_transition_time=NOW - timedelta(hours=1)
    )


MESSAGE = "drift score {:.2f} (threshold 0.20) over 120 rows"
WARNING = "Warning"
CASES = [
    # (case, drift, condition before, status, reason, message, event posted)
    ("no traffic measured yet", None, None, FALSE, "WithinThreshold", "not enough traffic measured yet", False),
    ("below the threshold", drift(0.1, None), None, FALSE, "WithinThreshold", MESSAGE.format(0.1), False),
    ("above, not for the window yet", drift(0.5, 599), was(FALSE), FALSE, "ShiftDetected", MESSAGE.format(0.5), False),
    ("above for the whole window: starts drifting", drift(0.5, 600), was(FALSE), TRUE, "Drifting",
     MESSAGE.format(0.5), True),
    ("first condition ever, already drifting", drift(0.5, 900), None, TRUE, "Drifting", MESSAGE.format(0.5), True),
    ("still drifting: no second Event", drift(0.6, 900), was(TRUE), TRUE, "Drifting", MESSAGE.format(0.6), False),
    ("back below after drifting", drift(0.1, None), was(TRUE), FALSE, "WithinThreshold", MESSAGE.format(0.1), False),
]


@pytest.mark.parametrize(
    ("measured", "before", "status", "reason", "message", "event"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_drift_report_table(
    measured: DriftStatus | None,
    before: Condition | None,
    status: ConditionStatus,
    reason: str,
    message: str,
    event: bool,
) -> None:
    report = drift_report(POLICY, measured, before, NOW, generation=3)
    c = report.condition
    assert (c.type, c.status, c.reason, c.message, c.observed_generation) == ("Drifting", status, reason, message, 3)
    assert report.event == (Event(WARNING, "Drifting", message) if event else None)
