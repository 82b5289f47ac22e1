"""EventRecorder: Events leave the pass at once and are posted in order from one thread; a full queue drops."""

from __future__ import annotations

import threading
import time
from typing import Any

from conveyor.controller import metrics
from conveyor.controller.events import EventRecorder


def body(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": "u-" + name, "resourceVersion": "7"}, "spec": {}}


def test_posting_does_not_wait_for_the_api_and_keeps_the_order() -> None:
    gate = threading.Event()
    posted: list[tuple[Any, ...]] = []

    def post(obj: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        gate.wait(5)
        posted.append((obj, kind, type_, reason, message))

    recorder = EventRecorder(post)
    began = time.monotonic()
    recorder(body("a"), "Run", "Normal", "Started", "the run started")
    recorder(body("a"), "Run", "Normal", "Succeeded", "done")
    assert time.monotonic() - began < 1.0  # the API "takes" up to 5 s; the caller does not wait for it
    assert posted == []
    gate.set()
    assert recorder.flush(5)
    assert [p[3] for p in posted] == ["Started", "Succeeded"]
    assert posted[0][0] == {"metadata": {"name": "a", "namespace": "ns", "uid": "u-a"}}  # nothing else of the body
    recorder.stop()


def test_a_full_queue_drops_and_counts_and_a_failing_post_does_not_stop_the_rest() -> None:
    gate = threading.Event()
    posted: list[str] = []

    def post(obj: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        gate.wait(5)
        if reason == "Broken":
            raise RuntimeError("the API server said no")
        posted.append(reason)

    dropped_before = metrics.EVENTS_DROPPED._value.get()
    recorder = EventRecorder(post, capacity=2)
    recorder(body("a"), "Run", "Warning", "Broken", "x")  # taken by the thread, which then waits at the gate
    time.sleep(0.2)
    recorder(body("a"), "Run", "Normal", "One", "x")
    recorder(body("a"), "Run", "Normal", "Two", "x")
    recorder(body("a"), "Run", "Normal", "Three", "x")  # the queue (2) is full
    assert metrics.EVENTS_DROPPED._value.get() == dropped_before + 1
    gate.set()
    assert recorder.flush(5)
    assert posted == ["One", "Two"]
    recorder.stop()
