"""Kubernetes timestamps: what the API server writes parses; anything else is None, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from conveyor.kube.timestamps import format_timestamp, parse_timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T12:00:05Z", datetime(2026, 11, 22, 12, 0, 5, tzinfo=UTC)),
        ("2026-11-22T12:00:05.250000Z", datetime(2026, 11, 22, 12, 0, 5, 250000, tzinfo=UTC)),
        ("2026-11-22T13:00:05+01:00", datetime(2026, 11, 22, 12, 0, 5, tzinfo=UTC)),
        ("2026-11-22T12:00:05", datetime(2026, 11, 22, 12, 0, 5, tzinfo=UTC)),  # naive: taken as UTC
        ("", None),
        (None, None),
        (1732276805, None),
        ("yesterday", None),
    ],
)
def test_parse_timestamp(text: object, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_format_timestamp_writes_utc_whole_seconds_and_round_trips() -> None:
    t = datetime(2026, 11, 22, 13, 0, 5, 999999, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(t) == "2026-11-22T12:00:05Z"
    assert parse_timestamp(format_timestamp(t)) == t.replace(microsecond=0)
