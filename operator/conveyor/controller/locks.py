"""One lock per object, so an event handler and a timer never reconcile the same object at once."""

from __future__ import annotations

import threading


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
