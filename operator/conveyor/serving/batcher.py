"""Adaptive micro-batching: concurrent requests share one model call, with no added wait when idle.

While one batch computes in the worker thread, requests that arrive queue up; when it finishes,
everything queued (up to `max_batch_size` rows) becomes the next batch at once. A lone request
therefore starts immediately, and under load the batch grows to whatever arrived during one model
call, which is what amortises scikit-learn's per-call overhead. The queue is bounded (in requests):
past it a request is refused with `Overloaded` (503) instead of joining an ever-longer tail.

The batch function receives the items in arrival order and returns one result per item, or an
exception for an item it could not serve; each caller gets its own result or exception back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Generic, TypeVar

from conveyor.serving.errors import Overloaded

T = TypeVar("T")
R = TypeVar("R")

BatchFunction = Callable[[Sequence[T]], Sequence[R | BaseException]]


class MicroBatcher(Generic[T, R]):
    """Runs `run_batch` on one worker thread over batches of queued items."""

    def __init__(
        self,
        run_batch: BatchFunction[T, R],
        size_of: Callable[[T], int],
        *,
        max_batch_size: int = 64,
        max_queue: int = 1024,
        executor: Executor | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        self._run_batch = run_batch
        self._size_of = size_of
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._busy = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        return self._busy

    async def submit(self, item: T) -> R:
        """Queue `item`, wait for its batch, return its result (or raise its exception)."""
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"server overloaded: {len(self._queue)} requests already queued")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if not self._busy:
            self._start(loop)
        return await future

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        rows = 0
        while self._queue:
            item, future = self._queue[0]
            if future.done():  # the caller went away (cancelled): skip its work
                self._queue.popleft()
                continue
            size = self._size_of(item)
            if batch and rows + size > self.max_batch_size:
                break
            self._queue.popleft()
            batch.append((item, future))
            rows += size
        return batch

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._take()
        if not batch:
            return
        self._busy = True
        items = [item for item, _ in batch]
        task = loop.run_in_executor(self._executor, self._run_batch, items)
        task.add_done_callback(lambda done: self._finish(loop, batch, done))

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[T, asyncio.Future[R]]],
        done: asyncio.Future[Sequence[R | BaseException]],
    ) -> None:
        self._busy = False
        error = done.exception() if not done.cancelled() else asyncio.CancelledError()
        results: Sequence[R | BaseException]
        if error is not None:
            results = [error] * len(batch)
        else:
            results = done.result()
            if len(results) != len(batch):
                mismatch = RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
                results = [mismatch] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._queue:
            self._start(loop)

    def close(self) -> None:
        """Stop the worker thread after the batch it is running."""
        self._executor.shutdown(wait=True)
