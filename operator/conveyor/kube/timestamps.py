"""Kubernetes timestamps: RFC 3339 in UTC with whole seconds, as the API server writes them."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(text: object) -> datetime | None:
    """An aware datetime, or None for anything that is not a timestamp (absent, empty, malformed)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def format_timestamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
