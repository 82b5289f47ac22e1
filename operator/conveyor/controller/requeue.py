"""The work queue of passes: every pass of every Run runs here, whether an event asked for it now or an
earlier pass asked for it later (controller-runtime's workqueue with RequeueAfter), in place of kopf
timers and of passes run inside kopf's handlers.

kopf's handlers only feed the watch cache and say which Run is owed a pass (`now`); they return at once,
so the watch streams never wait behind a pass and the cache is as fresh as the watches. Each pass says
when it next wants one (`after`: the earliest retry backoff or timeout, else the resync interval, None
when the object needs nothing more), and that wish replaces the one before it.

A kopf timer per Run kept a task and the Run's latest body for as long as its filter matched; when it
stopped (a Run finishing) kopf patched the Run with a dummy annotation to look at it again (at 1,000 Runs,
one PATCH of every Run, about half refused with 422); and retries' backoff and timeouts waited for the
next tick.

One object is never in two passes at once: an object owed a pass while its pass runs gets one more pass
right after (the workqueue's dirty set), so no trigger is lost and none runs twice concurrently.
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
    """Due times per (namespace, name); one thread hands what is due to a pool of workers."""

    def __init__(
        self,
        act: Callable[[str, str], object],
        *,
        workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._act = act
        self._clock = clock
        self._due: dict[Key, float] = {}
        self._known: set[Key] = set()
        self._queued: set[Key] = set()
        """Handed to the pool, not started: an event for it needs nothing more (the pass has yet to read)."""
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        """Objects owed a pass while theirs ran: one more pass as soon as it ends."""
        self._forgotten: set[Key] = set()
        """Forgotten (deleted) while their pass ran; cleared when that pass ends."""
        self._heap: list[tuple[float, int, Key]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pass")
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

    def now(self, namespace: str, name: str) -> None:
        """A pass owed at once (an event brought news): as soon as a worker is free, or, if the object's pass
        is running, once more right after it. An earlier wish for later is brought forward, not added to."""
        key = (namespace, name)
        with self._changed:
            self._known.add(key)
            self._forgotten.discard(key)  # re-created under the same name while the old one's pass ran
            if key in self._queued:
                return
            if key in self._running:
                self._dirty.add(key)
                return
            self._schedule(key, self._clock())

    def after(self, namespace: str, name: str, seconds: float | None) -> None:
        """The object's next pass in `seconds` (replacing any earlier wish); None: it needs none."""
        key = (namespace, name)
        with self._changed:
            if seconds is None:
                self._due.pop(key, None)
                self._known.discard(key)
                return
            self._known.add(key)
            self._due.pop(key, None)
            self._schedule(key, self._clock() + max(0.0, seconds))

    def knows(self, namespace: str, name: str) -> bool:
        """A pass of the object has run or is owed in this process, and it has not said it is done."""
        with self._changed:
            return (namespace, name) in self._known

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._changed:
            self._drop(key)
            if key in self._running:
                self._forgotten.add(key)

    def _drop(self, key: Key) -> None:
        """Caller holds the lock: no wish, no owed pass, not known."""
        self._due.pop(key, None)
        self._known.discard(key)
        self._dirty.discard(key)

    def pending(self) -> int:
        """Passes waiting for their time or for a worker (not the ones running)."""
        with self._changed:
            return len(self._due) + len(self._queued) + len(self._dirty)

    def _schedule(self, key: Key, due: float) -> None:
        """Caller holds the lock. Keeps the earlier of an existing wish and this one."""
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        if self._heap[0][2] == key:
            self._changed.notify()

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
                        if key in self._queued:
                            continue
                        if key in self._running:
                            self._dirty.add(key)
                            continue
                        self._queued.add(key)
                        break
                    self._changed.wait(timeout=(self._heap[0][0] - now) if self._heap else None)
                else:
                    return
            self._pool.submit(self._run, *key)

    def _run(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._changed:
            self._queued.discard(key)
            self._running.add(key)
        try:
            self._act(namespace, name)
        except Exception:  # the pass has already asked for its retry; a worker must not die of it
            log.exception("pass of %s/%s failed", namespace, name)
        finally:
            with self._changed:
                self._running.discard(key)
                if key in self._forgotten:
                    # Deleted while its pass ran: whatever that pass asked for is void.
                    self._forgotten.discard(key)
                    self._drop(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self._schedule(key, self._clock())
