"""One lock per object, so an event handler and a timer never reconcile the same object at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ObjectLocks:
    """Locks keyed by (namespace, name); different objects reconcile concurrently."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def of(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop the lock of a deleted object (bounded memory however many objects come and go)."""
        with self._guard:
            self._locks.pop((namespace, name), None)


class Coalescer:
    """Collapses a burst of triggers for one object into at most one further pass.

    A trigger that finds a pass of the same object in progress only marks it pending and returns,
    instead of queueing a whole pass of its own behind the lock; the pass in progress then runs once
    more. A trigger landing in the instant between that last check and the lock's release is picked
    up by the periodic resync, so nothing is lost, only delayed.
    """

    def __init__(self) -> None:
        self._locks = ObjectLocks()
        self._pending: set[tuple[str, str]] = set()
        self._guard = threading.Lock()

    def run(self, namespace: str, name: str, one_pass: Callable[[], T]) -> T | None:
        key = (namespace, name)
        lock = self._locks.of(namespace, name)
        if not lock.acquire(blocking=False):
            with self._guard:
                self._pending.add(key)
            return None
        try:
            while True:
                with self._guard:
                    self._pending.discard(key)
                result = one_pass()
                with self._guard:
                    if key not in self._pending:
                        return result
        finally:
            lock.release()

    def forget(self, namespace: str, name: str) -> None:
        self._locks.forget(namespace, name)
        with self._guard:
            self._pending.discard((namespace, name))
