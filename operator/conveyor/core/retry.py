"""Retry decisions: whether a failed attempt gets another, and after how long."""

from __future__ import annotations

from conveyor.api.pipeline import RetryPolicy


def may_retry(policy: RetryPolicy, attempts: int) -> bool:
    """`attempts` have been made; the policy allows `limit` retries after the first."""
    return attempts <= policy.limit


def backoff_seconds(policy: RetryPolicy, attempts: int) -> float:
    """Delay before attempt `attempts + 1`: initial * factor^(attempts-1), capped."""
    b = policy.backoff
    return float(min(b.max_seconds, b.initial_seconds * b.factor ** max(0, attempts - 1)))
