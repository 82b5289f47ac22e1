"""The control model every kind's reconciler follows, so Runs and ModelDeployments share one, not a copy each.

A pass reads its object from the watch cache (by GET when the cache has not seen it lately, or when the pass is
redone), writes status only over the version it read (`resourceVersion` as a precondition) and folds what the
API server returned back into the cache, so the next pass never plans from the version before its own write.
A write refused as stale (the object changed after the read: a spec edit, or our own write whose watch event is
late) writes nothing; the pass is redone at once on a fresh GET. Whatever started it, a pass ends by telling
its work queue (`controller.requeue.Requeue.after`) when it next wants one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from conveyor.controller import metrics
from conveyor.kube.cluster import Cluster, StaleObject
from conveyor.kube.watchcache import WatchCache
from conveyor.storage.store import StoreUnavailable

log = logging.getLogger("conveyor.passes")

Body = dict[str, Any]
Requeue = Callable[[str, str, float | None], None]
"""`Requeue.after`: the object's next pass in so many seconds (None: it needs none)."""


class Held(Protocol):
    """What the watch cache holds of one kind."""

    def held(self, namespace: str, name: str, max_age: float) -> Body | None: ...

    def written(self, body: Body) -> None: ...

    def gone(self, namespace: str, name: str) -> None: ...


class HeldRuns:
    """Unfinished Runs in the watch cache (a Run found gone takes its Jobs and pods with it)."""

    def __init__(self, cache: WatchCache) -> None:
        self.cache = cache

    def held(self, namespace: str, name: str, max_age: float) -> Body | None:
        return self.cache.run(namespace, name, max_age=max_age)

    def written(self, body: Body) -> None:
        self.cache.run_written(body)

    def gone(self, namespace: str, name: str) -> None:
        self.cache.forget_run(namespace, name)


class HeldObjects:
    """Objects of one plural the watch cache holds whole."""

    def __init__(self, cache: WatchCache, plural: str) -> None:
        self.cache, self.plural = cache, plural

    def held(self, namespace: str, name: str, max_age: float) -> Body | None:
        return self.cache.object(self.plural, namespace, name, max_age=max_age)

    def written(self, body: Body) -> None:
        self.cache.object_written(self.plural, body)

    def gone(self, namespace: str, name: str) -> None:
        self.cache.forget_object(self.plural, namespace, name)


class StatusObjects:
    """One kind's objects as its passes read them and write their status."""

    def __init__(self, cluster: Cluster, plural: str, kind: str, held: Held | None, max_age: float) -> None:
        self.cluster, self.plural, self.kind, self.held, self.max_age = cluster, plural, kind, held, max_age

    def read(self, namespace: str, name: str, fresh: bool = False) -> Body | None:
        """The object from the watch cache, else by GET: when the pass is redone after a stale write, and when the
        cached copy is older than `max_age` (a watch that missed an event, a deletion among them, is not trusted
        for longer than that)."""
        if not fresh and self.held is not None:
            body = self.held.held(namespace, name, self.max_age)
            if body is not None:
                metrics.count_read(self.kind, "watch")
                return body
        metrics.count_read(self.kind, "get")
        body = self.cluster.get_custom(self.plural, namespace, name)
        if self.held is not None:
            if body is None:
                self.held.gone(namespace, name)  # deleted, whether or not its watch event has come
            else:
                self.held.written(body)
        return body

    def write_status(self, body: Body, status: Body) -> Body:
        """Merge `status` in only over the version the pass read (StaleObject otherwise), and fold the written
        object into the watch cache at once."""
        meta = body["metadata"]
        written = self.cluster.patch_status(
            self.plural, meta["namespace"], meta["name"], status, resource_version=meta.get("resourceVersion")
        )
        if self.held is not None:
            self.held.written(written)
        return written


def timed_pass(
    kind: str,
    namespace: str,
    name: str,
    one_pass: Callable[[bool], float | None],
    *,
    resync: float,
    requeue: Requeue | None,
    waiting: Callable[[str], None] | None = None,
) -> float | None:
    """Run `one_pass(fresh)` and tell `requeue` when the object next wants a pass: what the pass said, the resync
    when it raised (an API server restarting), one second when the object kept changing under its redo. A stale
    write redoes the pass once on a fresh read. A store that does not answer is a wait, not a failure: `waiting`
    says so on the object, and the object is looked at again at the usual pace."""
    wait: float | None = resync
    try:
        with metrics.RECONCILE.labels(kind).time():
            try:
                try:
                    wait = one_pass(False)
                except StaleObject:
                    metrics.STALE_WRITES.labels(kind).inc()
                    wait = one_pass(True)
            except StoreUnavailable as e:
                metrics.RECONCILE_ERRORS.labels(kind).inc()
                log.warning("%s %s/%s waits for the artifact store: %s", kind.lower(), namespace, name, e)
                if waiting is not None:
                    waiting(str(e))
            except StaleObject as e:
                # Changed again while the redone pass ran (someone editing it in a loop): soon, not at once.
                log.info("%s %s/%s keeps changing under its pass, will retry: %s", kind.lower(), namespace, name, e)
                wait = 1.0
            except Exception:
                metrics.RECONCILE_ERRORS.labels(kind).inc()
                raise
    finally:
        if requeue is not None:
            requeue(namespace, name, wait)
    return wait
