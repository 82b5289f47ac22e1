"""Passes owed later: each object's next pass at the time its last pass asked for (controller-runtime's
RequeueAfter), in place of a kopf timer per object.

A kopf timer keeps a task and the object's latest body per object for as long as its filter matches,
and when it stops (a Run finishing) kopf patches the object with a dummy annotation to look at it again:
at 1,000 Runs that was one PATCH of every Run (about half of them refused with 422), a pass every
resync interval for every unfinished Run whether or not anything was due, and retries' backoff and
timeouts waiting for the next tick. Here a pass says when it next wants one (`RunReconciler` returns
it: the earliest backoff or timeout, else the resync interval, None when the object needs nothing
more), and the next pass, whatever triggered it, replaces that wish.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("conveyor.requeue")

Key = tuple[str, str]


class Requeue:
    """Due times per (namespace, name); one thread hands what is due to a small pool of workers."""

    def __init__(
        self,
        act: Callable[[str, str], object],
        *,
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._act = act
        self._clock = clock
        self._due: dict[Key, float] = {}
        self._known: set[Key] = set()
        self._heap: list[tuple[float, int, Key]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="requeue")
        self._thread = threading.Thread(target=self._loop, name="requeue", daemon=True)

    def start(self) -> Requeue:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def after(self, namespace: str, name: str, seconds: float | None) -> None:
        """The object's next pass in `seconds` (replacing any earlier wish); None: it needs none."""
        key = (namespace, name)
        with self._changed:
            if seconds is None:
                self._due.pop(key, None)
                self._known.discard(key)
                return
            due = self._clock() + max(0.0, seconds)
            self._due[key] = due
            self._known.add(key)
            heapq.heappush(self._heap, (due, next(self._order), key))
            if self._heap[0][2] == key:
                self._changed.notify()

    def knows(self, namespace: str, name: str) -> bool:
        """A pass of the object has run or is owed in this process, and it has not said it is done."""
        with self._changed:
            return (namespace, name) in self._known

    def forget(self, namespace: str, name: str) -> None:
        self.after(namespace, name, None)

    def pending(self) -> int:
        with self._changed:
            return len(self._due)

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._stopped:
                    now = self._clock()
                    while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                        heapq.heappop(self._heap)  # replaced or forgotten since it was pushed
                    if self._heap and self._heap[0][0] <= now:
                        _, _, key = heapq.heappop(self._heap)
                        del self._due[key]
                        break
                    self._changed.wait(timeout=(self._heap[0][0] - now) if self._heap else None)
                else:
                    return
            self._pool.submit(self._run, *key)

    def _run(self, namespace: str, name: str) -> None:
        try:
            self._act(namespace, name)
        except Exception:  # the pass has already asked for its retry; a worker must not die of it
            log.exception("requeued pass of %s/%s failed", namespace, name)
