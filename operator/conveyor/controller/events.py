"""Events posted from a background thread, so a pass never waits for them (client-go's event broadcaster).

An Event is a record for people (`kubectl describe`), not state: the pass that decided it has already
written status. Posting it in line made every transition wait one more API round trip before the pass
could free its worker; at 200 concurrent Runs that was an eighth of a pass's time. The queue is bounded:
when the API server cannot keep up, Events are dropped and counted rather than held in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from conveyor.controller import metrics

log = logging.getLogger("conveyor.events")

Post = Callable[[dict[str, Any], str, str, str, str], None]
_STOP = object()


class EventRecorder:
    """Call it like `Cluster.event`; one daemon thread posts in order."""

    def __init__(self, post: Post, capacity: int = 2000) -> None:
        self._post = post
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._loop, name="events", daemon=True)
        self._thread.start()

    def __call__(self, obj: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        # Only what an Event names: the caller's body may be a shared, later-replaced cache entry.
        about = {"metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")}}
        try:
            self._queue.put_nowait((about, kind, type_, reason, message))
        except queue.Full:
            metrics.EVENTS_DROPPED.inc()
            log.warning(
                "dropped event %s on %s/%s: too many waiting to be posted", reason, meta["namespace"], meta["name"]
            )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every Event queued so far is posted (or failed); False on timeout."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Post what is queued, then end the thread."""
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return  # the poster is stuck on the API server; it is a daemon thread and dies with the process
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self._post(*item)
            except Exception:  # a Run's record must not stop others' from being posted
                log.exception("could not post event %s", item[3])
