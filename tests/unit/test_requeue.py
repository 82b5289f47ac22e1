"""Requeue: each object's next pass at the time its last pass asked for, the latest wish winning."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from conveyor.controller.requeue import Requeue


class Recorder:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[tuple[str, str, float]] = []
        self.fail = fail or set()
        self.event = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, namespace: str, name: str) -> None:
        with self.lock:
            self.calls.append((namespace, name, time.monotonic()))
        self.event.set()
        if name in self.fail:
            raise RuntimeError("the API server is restarting")

    def names(self) -> list[str]:
        with self.lock:
            return [n for _, n, _ in self.calls]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


@contextlib.contextmanager
def running(act: Callable[[str, str], object], **options: int) -> Iterator[Requeue]:
    queue = Requeue(act, **options).start()
    try:
        yield queue
    finally:
        queue.stop()


def test_passes_run_when_due_in_due_order() -> None:
    act = Recorder()
    with running(act, workers=1) as queue:
        began = time.monotonic()
        queue.after("ns", "late", 0.3)
        queue.after("ns", "soon", 0.05)
        queue.after("ns", "now", 0)
        wait_for(lambda: len(act.names()) == 3)
        assert act.names() == ["now", "soon", "late"]
        late_at = act.calls[2][2]
        assert late_at - began >= 0.29
        assert queue.pending() == 0


def test_a_later_wish_replaces_an_earlier_one() -> None:
    act = Recorder()
    with running(act) as queue:
        queue.after("ns", "run", 0.05)
        queue.after("ns", "run", 0.4)  # the pass that just ran asked for its next one later
        time.sleep(0.2)
        assert act.names() == []
        wait_for(lambda: act.names() == ["run"])
        time.sleep(0.1)
        assert act.names() == ["run"]  # once, not once per wish


def test_none_and_forget_cancel_the_pass_and_the_knowing() -> None:
    act = Recorder()
    with running(act) as queue:
        queue.after("ns", "done", 0.05)
        queue.after("ns", "deleted", 0.05)
        assert queue.knows("ns", "done") and queue.knows("ns", "deleted")
        queue.after("ns", "done", None)
        queue.forget("ns", "deleted")
        assert not queue.knows("ns", "done") and not queue.knows("ns", "deleted")
        time.sleep(0.2)
        assert act.names() == []


def test_an_object_stays_known_while_its_pass_runs() -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(namespace: str, name: str) -> None:
        started.set()
        release.wait(5)

    with running(slow) as queue:
        try:
            queue.after("ns", "run", 0)
            assert started.wait(5)
            assert queue.knows("ns", "run")  # an event arriving now must not start a second pass for it
            assert queue.pending() == 0
        finally:
            release.set()


def test_a_failing_pass_does_not_stop_the_others() -> None:
    act = Recorder(fail={"broken"})
    with running(act, workers=1) as queue:
        queue.after("ns", "broken", 0)
        queue.after("ns", "fine", 0.05)
        wait_for(lambda: act.names() == ["broken", "fine"])


def test_keys_are_namespaced() -> None:
    act = Recorder()
    with running(act) as queue:
        queue.after("a", "run", 0.02)
        queue.after("b", "run", 0.02)
        queue.forget("a", "run")
        wait_for(lambda: len(act.calls) == 1)
        time.sleep(0.1)
        assert [(ns, n) for ns, n, _ in act.calls] == [("b", "run")]


def test_an_event_during_a_pass_owes_exactly_one_more_pass_and_never_a_concurrent_one() -> None:
    release = threading.Event()
    first = threading.Event()
    inside = 0
    most_inside = 0
    calls: list[float] = []
    guard = threading.Lock()

    def slow(namespace: str, name: str) -> None:
        nonlocal inside, most_inside
        with guard:
            inside += 1
            most_inside = max(most_inside, inside)
            calls.append(time.monotonic())
        first.set()
        release.wait(5)
        with guard:
            inside -= 1

    with running(slow, workers=4) as queue:
        queue.now("ns", "run")
        assert first.wait(5)
        for _ in range(5):
            queue.now("ns", "run")  # a burst of events while the pass runs
        assert queue.pending() == 1
        time.sleep(0.1)
        assert len(calls) == 1  # not started beside the running pass, though workers are free
        release.set()
        wait_for(lambda: len(calls) == 2)
        time.sleep(0.1)
        assert len(calls) == 2 and most_inside == 1 and queue.pending() == 0


def test_an_event_brings_a_later_wish_forward_and_the_pass_then_sets_the_next() -> None:
    act = Recorder()
    with running(act) as queue:
        queue.after("ns", "run", 30)  # the resync the last pass asked for
        queue.now("ns", "run")
        wait_for(lambda: act.names() == ["run"])
        assert queue.pending() == 0  # the 30 s wish is consumed; the pass (here a recorder) asks for no more
        queue.after("ns", "run", 30)
        queue.now("ns", "run")
        queue.now("ns", "run")  # two events before a worker takes it: one pass
        wait_for(lambda: act.names() == ["run", "run"])
        time.sleep(0.1)
        assert act.names() == ["run", "run"]
        assert queue.knows("ns", "run")


def test_a_wish_due_while_its_pass_still_runs_waits_for_that_pass() -> None:
    release = threading.Event()
    calls: list[str] = []

    def act(namespace: str, name: str) -> None:
        calls.append(name)
        if len(calls) == 1:
            release.wait(5)

    with running(act, workers=4) as queue:
        queue.now("ns", "run")
        wait_for(lambda: len(calls) == 1)
        queue.after("ns", "run", 0.01)  # the running pass asks for a quick next one, then takes a while
        time.sleep(0.2)
        assert calls == ["run"]
        release.set()
        wait_for(lambda: calls == ["run", "run"])


def test_an_event_for_a_pass_waiting_for_a_worker_adds_nothing() -> None:
    release = threading.Event()
    calls: list[str] = []

    def act(namespace: str, name: str) -> None:
        calls.append(name)
        if name == "busy":
            release.wait(5)

    with running(act, workers=1) as queue:
        queue.now("ns", "busy")
        wait_for(lambda: calls == ["busy"])
        queue.now("ns", "waiting")  # handed to the pool, behind "busy"
        time.sleep(0.05)
        queue.now("ns", "waiting")  # it has not read anything yet: this event needs no pass of its own
        queue.now("ns", "waiting")
        release.set()
        wait_for(lambda: calls == ["busy", "waiting"])
        time.sleep(0.1)
        assert calls == ["busy", "waiting"]


def test_a_pass_of_an_object_forgotten_meanwhile_leaves_no_wish_behind_unless_it_came_back() -> None:
    release = threading.Event()
    calls: list[str] = []
    holder: list[Requeue] = []

    def act(namespace: str, name: str) -> None:
        calls.append(name)
        if len(calls) == 1:
            release.wait(5)
        holder[0].after(namespace, name, 0.05)  # a pass that did not notice the deletion asks for a resync

    with running(act) as queue:
        holder.append(queue)
        queue.now("ns", "gone")
        wait_for(lambda: len(calls) == 1)
        queue.forget("ns", "gone")  # deleted while its pass ran
        release.set()
        time.sleep(0.3)
        assert calls == ["gone"] and not queue.knows("ns", "gone") and queue.pending() == 0

    calls.clear()
    release.clear()
    holder.clear()
    with running(act) as queue:
        holder.append(queue)
        queue.now("ns", "again")
        wait_for(lambda: len(calls) == 1)
        queue.forget("ns", "again")
        queue.now("ns", "again")  # re-created under the same name before the old pass ended
        release.set()
        wait_for(lambda: len(calls) >= 2)
        assert queue.knows("ns", "again")
