"""MicroBatcher: worker threads take batches straight from the queue and hand each batch's
results back to the event loop in one call."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aivos.edge.batcher import MicroBatcher


class _Gate:
    """A batch function whose first call blocks until released: requests queue behind it."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.entered.set()
            self.release.wait(10)
        if "boom" in texts:
            raise RuntimeError("model failed")
        return [t.upper() for t in texts]


async def _started(gate: _Gate, **kwargs: int) -> MicroBatcher[str]:
    batcher: MicroBatcher[str] = MicroBatcher(gate, **kwargs)
    await batcher.start()
    return batcher


def test_requests_queued_behind_a_batch_run_together_and_each_gets_its_own_result() -> None:
    async def main() -> None:
        gate = _Gate()
        batcher = await _started(gate, max_batch=32)
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.to_thread(gate.entered.wait, 10)
        rest = [asyncio.ensure_future(batcher.submit(t)) for t in ("b", "c", "d")]
        await asyncio.sleep(0.05)
        assert batcher.queue_depth == 3
        gate.release.set()
        assert await first == "A"
        assert await asyncio.gather(*rest) == ["B", "C", "D"]
        assert gate.calls == [["a"], ["b", "c", "d"]]
        assert (batcher.stats.batches, batcher.stats.items, batcher.stats.last_batch_size) == (
            2,
            4,
            3,
        )
        await batcher.close()

    asyncio.run(main())


def test_max_batch_splits_the_queue() -> None:
    async def main() -> None:
        gate = _Gate()
        batcher = await _started(gate, max_batch=2)
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.to_thread(gate.entered.wait, 10)
        rest = [asyncio.ensure_future(batcher.submit(t)) for t in ("b", "c", "d")]
        await asyncio.sleep(0.05)
        gate.release.set()
        assert [await first, *await asyncio.gather(*rest)] == ["A", "B", "C", "D"]
        assert gate.calls == [["a"], ["b", "c"], ["d"]]
        await batcher.close()

    asyncio.run(main())


def test_a_failing_batch_raises_in_each_of_its_callers_only() -> None:
    async def main() -> None:
        gate = _Gate()
        batcher = await _started(gate)
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.to_thread(gate.entered.wait, 10)
        failing = [asyncio.ensure_future(batcher.submit(t)) for t in ("b", "boom")]
        await asyncio.sleep(0.05)
        gate.release.set()
        assert await first == "A"
        for fut in failing:
            with pytest.raises(RuntimeError, match="model failed"):
                await fut
        assert await batcher.submit("e") == "E"  # the worker lives on
        assert batcher.stats.batches == 2  # the failed batch is not counted
        await batcher.close()

    asyncio.run(main())


def test_a_caller_cancelled_before_its_batch_takes_no_room_in_it() -> None:
    async def main() -> None:
        gate = _Gate()
        batcher = await _started(gate)
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.to_thread(gate.entered.wait, 10)
        gone = asyncio.ensure_future(batcher.submit("gone"))
        kept = asyncio.ensure_future(batcher.submit("kept"))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0)
        gate.release.set()
        assert await first == "A" and await kept == "KEPT"
        assert gone.cancelled()
        assert gate.calls == [["a"], ["kept"]]
        await batcher.close()

    asyncio.run(main())


def test_close_stops_the_worker_threads() -> None:
    async def main() -> None:
        gate = _Gate()
        gate.release.set()
        batcher = await _started(gate, concurrency=2)
        assert await asyncio.gather(batcher.submit("a"), batcher.submit("b")) == ["A", "B"]
        workers = [t for t in threading.enumerate() if t.name.startswith("infer_")]
        assert len(workers) >= 2
        await batcher.close()
        assert not any(t.is_alive() for t in workers)

    asyncio.run(main())


def test_a_batch_function_that_loses_results_fails_its_callers_not_the_worker() -> None:
    async def main() -> None:
        def short(texts: list[str]) -> list[str]:
            return [] if texts == ["lost"] else [t.upper() for t in texts]

        batcher: MicroBatcher[str] = MicroBatcher(short)
        await batcher.start()
        with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
            await batcher.submit("lost")
        assert await batcher.submit("next") == "NEXT"
        await batcher.close()

    asyncio.run(main())
