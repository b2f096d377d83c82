"""Micro-batching of concurrent classification requests into one onnxruntime call.

Requests queue up while a batch runs; the next batch takes everything queued (up to
`max_batch`), optionally waiting `max_wait_ms` for more. At concurrency 1 nothing waits,
so single-request latency is the model's own. Inference runs in a small thread pool,
never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["MicroBatcher", "BatchStats"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchStats:
    """Plain counters read by /metrics."""

    def __init__(self) -> None:
        self.batches = 0
        self.items = 0
        self.last_batch_size = 0
        self.model_seconds = 0.0
        self.size_hist: dict[int, int] = {}
        self.observer: Callable[[int, float], None] | None = None

    def record(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.items += size
        self.last_batch_size = size
        self.model_seconds += seconds
        if self.observer is not None:
            self.observer(size, seconds)


class MicroBatcher(Generic[T]):
    def __init__(
        self,
        run_batch: Callable[[list[str]], Sequence[T]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        concurrency: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000.0
        self._concurrency = concurrency
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[T]]] = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="infer")
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = BatchStats()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self._concurrency)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.cancel()
        self._pool.shutdown(wait=True)

    async def submit(self, text: str) -> T:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((text, fut))
        return await fut

    async def _collect(self) -> list[tuple[str, asyncio.Future[T]]]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self._max_wait
        while len(batch) < self._max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(text, fut) for text, fut in batch if not fut.cancelled()]
            if not live:
                continue
            texts = [text for text, _ in live]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._pool, self._run_batch, texts)
            except Exception as exc:  # delivered to every caller of this batch
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.record(len(live), time.perf_counter() - started)
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
