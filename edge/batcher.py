"""Micro-batching of concurrent classification requests into one onnxruntime call.

Requests queue up while a batch runs; the next batch takes everything queued (up to
`max_batch`), optionally waiting `max_wait_ms` for more. At concurrency 1 nothing waits,
so single-request latency is the model's own. Inference runs in `concurrency` worker
threads, never on the event loop.

A request costs the event loop one future and one queue put; a worker thread takes the
batch straight from that (thread-safe) queue and hands the whole batch's results back with
one `call_soon_threadsafe`, so the loop wakes once per batch, not once per hop (no asyncio
queue, batch task or executor future in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["MicroBatcher", "BatchStats", "limit_blas_threads"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_STOP = object()
_NOTHING = object()  # `_collect`: the queue had nothing to take


def limit_blas_threads() -> None:
    """numpy's BLAS runs on the calling thread alone, in every thread of the process.

    The batch workers already give each core one model call. numpy's OpenBLAS split a
    batch's out-of-scope matmul (`shared/ood.py`) across every core and then kept its helper
    thread spinning for more work: on a 2-core box at 16 concurrent requests that idle
    helper burnt most of a core. One BLAS thread: server CPU per request 5.6 -> 2.7 ms at
    c=64, 242 -> 419 req/s (benchmarks/edge_load.py, docs/performance.md, Dec 3).
    Call it from the main thread (`aivos edge serve` does, before the agent starts): OpenBLAS
    0.3.31 applies a limit set in another thread to that thread only, if at all."""
    threadpool_limits(limits=1, user_api="blas")


class BatchStats:
    """Plain counters read by /metrics (updated on the event loop)."""

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


_Item = tuple[str, "asyncio.Future[Any]", asyncio.AbstractEventLoop]


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
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.stats = BatchStats()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._work, name=f"infer_{i}", daemon=True)
            for i in range(self._concurrency)
        ]
        for thread in self._threads:
            thread.start()

    async def close(self) -> None:
        """Stop the workers (a batch in flight finishes first); cancel what still waits."""
        for _ in self._threads:
            self._queue.put(_STOP)
        threads, self._threads = self._threads, []

        def join() -> None:
            for thread in threads:
                thread.join()

        await asyncio.to_thread(join)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and not item[1].done():
                item[1].cancel()

    async def submit(self, text: str) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((text, fut, loop))
        return await fut

    # -- worker threads -------------------------------------------------------------------
    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        """`first` plus what is queued (waiting up to `max_wait` for more); (batch, stop)."""
        batch = [first]
        waiting, wait = self._queue, self._max_wait
        deadline = time.monotonic() + wait if wait > 0 else 0.0
        while len(batch) < self._max_batch:
            # an empty queue is the common case at low load: ask it rather than pay for a
            # raised queue.Empty (another worker may still take the item in between)
            item: Any = _NOTHING
            if not waiting.empty():
                with contextlib.suppress(queue.Empty):
                    item = waiting.get_nowait()
            if item is _NOTHING:
                remaining = deadline - time.monotonic() if wait > 0 else 0.0
                if remaining <= 0:
                    break
                try:
                    item = waiting.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _work(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._collect(first)
            # a caller cancelled before its batch ran takes no room in it
            live = [item for item in batch if not item[1].cancelled()]
            if not live:
                continue
            started = time.perf_counter()
            outcome: Sequence[Any]
            try:
                outcome = self._run_batch([t for t, _, _ in live])
                if len(outcome) != len(live):
                    raise RuntimeError(f"{len(outcome)} results for a batch of {len(live)}")
                ok = True
            except Exception as exc:  # delivered to every caller of this batch
                outcome, ok = [exc] * len(live), False
            seconds = time.perf_counter() - started
            # one wake-up per event loop (every caller's loop is the same one in the agent)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            for (_, fut, loop), value in zip(live, outcome, strict=True):
                by_loop.setdefault(loop, []).append((fut, value))
            size = len(live) if ok else 0  # counted once, by the first loop's callback
            for loop, results in by_loop.items():
                try:
                    loop.call_soon_threadsafe(self._settle, results, ok, size, seconds)
                except RuntimeError:  # the caller's loop is closed; nobody is waiting
                    log.debug("dropping %d results for a closed event loop", len(results))
                size = 0

    def _settle(
        self,
        results: list[tuple[asyncio.Future[Any], Any]],
        ok: bool,
        size: int,
        seconds: float,
    ) -> None:
        """On the callers' loop: count the batch (`size` > 0) and resolve its futures with
        their results (`ok`) or the batch's exception."""
        if size:
            self.stats.record(size, seconds)
        for fut, value in results:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
