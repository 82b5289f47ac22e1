"""The micro-batcher: results go back to the right callers, batches form only under load, bounds hold."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from conveyor.serving.batcher import MicroBatcher
from conveyor.serving.errors import BadRequest, Overloaded

Item = tuple[str, int]  # (caller, rows)


class Recorder:
    """A batch function that records each batch and answers every item with its caller's name."""

    def __init__(self, gate: threading.Event | None = None, fail: set[str] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = gate
        self.fail = fail or set()

    def __call__(self, items: Sequence[Item]) -> list[str | BaseException]:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append([name for name, _ in items])
        return [BadRequest(f"bad {name}") if name in self.fail else f"result-{name}" for name, _ in items]


def rows_of(item: Item) -> int:
    return item[1]


async def _submit_all(batcher: MicroBatcher[Item, str], items: list[Item]) -> list[str | BaseException]:
    results = await asyncio.gather(*(batcher.submit(item) for item in items), return_exceptions=True)
    return list(results)


def test_a_lone_request_runs_at_once_in_a_batch_of_its_own() -> None:
    recorder = Recorder()
    batcher: MicroBatcher[Item, str] = MicroBatcher(recorder, rows_of, max_batch_size=64)
    try:
        assert asyncio.run(batcher.submit(("a", 1))) == "result-a"
        assert asyncio.run(batcher.submit(("b", 1))) == "result-b"
    finally:
        batcher.close()
    assert recorder.batches == [["a"], ["b"]]


@pytest.mark.parametrize(
    ("sizes", "max_batch", "expected_batches"),
    [
        # The first request starts alone; everything that queued behind it goes together, up to the limit.
        ([1] * 6, 64, [["r0"], ["r1", "r2", "r3", "r4", "r5"]]),
        ([1] * 6, 2, [["r0"], ["r1", "r2"], ["r3", "r4"], ["r5"]]),
        ([3, 3, 3, 1], 4, [["r0"], ["r1"], ["r2", "r3"]]),
        ([1, 100, 1, 1], 8, [["r0"], ["r1"], ["r2", "r3"]]),  # a request bigger than the limit runs alone
    ],
)
def test_requests_queued_during_a_batch_form_the_next_one(
    sizes: list[int], max_batch: int, expected_batches: list[list[str]]
) -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher: MicroBatcher[Item, str] = MicroBatcher(recorder, rows_of, max_batch_size=max_batch)

    async def scenario() -> list[str | BaseException]:
        task = asyncio.gather(*(batcher.submit((f"r{i}", n)) for i, n in enumerate(sizes)), return_exceptions=True)
        await asyncio.sleep(0.05)  # every request is queued behind the first, still-running batch
        gate.set()
        return list(await task)

    try:
        results = asyncio.run(scenario())
    finally:
        batcher.close()
    assert results == [f"result-r{i}" for i in range(len(sizes))]
    assert recorder.batches == expected_batches


def test_each_caller_gets_its_own_error() -> None:
    gate = threading.Event()
    recorder = Recorder(gate, fail={"r2"})
    batcher: MicroBatcher[Item, str] = MicroBatcher(recorder, rows_of)

    async def scenario() -> list[str | BaseException]:
        task = asyncio.gather(*(batcher.submit((f"r{i}", 1)) for i in range(4)), return_exceptions=True)
        await asyncio.sleep(0.05)
        gate.set()
        return list(await task)

    try:
        results = asyncio.run(scenario())
    finally:
        batcher.close()
    assert results[:2] == ["result-r0", "result-r1"] and results[3] == "result-r3"
    assert isinstance(results[2], BadRequest) and results[2].message == "bad r2"


def test_a_crashing_batch_function_fails_only_that_batch() -> None:
    calls = []

    def crash_first(items: Sequence[Item]) -> list[str | BaseException]:
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [f"ok-{name}" for name, _ in items]

    batcher: MicroBatcher[Item, str] = MicroBatcher(crash_first, rows_of)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            asyncio.run(batcher.submit(("a", 1)))
        assert asyncio.run(batcher.submit(("b", 1))) == "ok-b"
    finally:
        batcher.close()


def test_a_full_queue_refuses_with_overloaded() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher: MicroBatcher[Item, str] = MicroBatcher(recorder, rows_of, max_queue=3)

    async def scenario() -> list[str | BaseException]:
        # r0 runs (not queued), r1..r3 fill the queue, r4 and r5 are refused at once.
        tasks = [asyncio.ensure_future(batcher.submit((f"r{i}", 1))) for i in range(6)]
        await asyncio.sleep(0.05)
        refused = [t for t in tasks if t.done()]
        assert len(refused) == 2
        gate.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    try:
        results = asyncio.run(scenario())
    finally:
        batcher.close()
    assert results[:4] == ["result-r0", "result-r1", "result-r2", "result-r3"]
    assert all(isinstance(r, Overloaded) for r in results[4:])


def test_a_cancelled_caller_is_skipped() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher: MicroBatcher[Item, str] = MicroBatcher(recorder, rows_of)

    async def scenario() -> list[str | BaseException]:
        tasks = [asyncio.ensure_future(batcher.submit((f"r{i}", 1))) for i in range(3)]
        await asyncio.sleep(0.05)
        tasks[1].cancel()
        gate.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    try:
        results = asyncio.run(scenario())
    finally:
        batcher.close()
    assert results[0] == "result-r0" and results[2] == "result-r2"
    assert isinstance(results[1], asyncio.CancelledError)
    assert recorder.batches == [["r0"], ["r2"]]
