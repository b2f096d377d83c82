"""The batch workers' compute threads: numpy's BLAS on the worker's own thread, and one
batch worker per core by default.

numpy's OpenBLAS splits a matmul of a few rows (the out-of-scope score of a batch,
`shared/ood.py`) across every core and then keeps its helper thread spinning for more work:
on a 2-core box that idle helper burnt most of a core under load (docs/performance.md,
Dec 3). `aivos edge serve` limits BLAS to one thread in its main thread before the agent
starts, which covers the batch workers.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import psutil
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from aivos.edge.batcher import MicroBatcher, limit_blas_threads
from aivos.edge.settings import load_edge_settings


def _cpu_by_thread() -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


async def test_a_batch_workers_numpy_matmuls_leave_no_blas_thread_spinning() -> None:
    rng = np.random.default_rng(0)
    rows = rng.random((16, 384), dtype=np.float32)  # a batch's embeddings
    projection = rng.random((384, 534), dtype=np.float32)  # the out-of-scope projection
    worker_ids: set[int] = set()

    def run_batch(texts: list[str]) -> list[float]:
        worker_ids.add(threading.get_native_id())
        for _ in range(200):
            rows @ projection
        return [0.0] * len(texts)

    # two BLAS threads, as a fresh process gets on a 2-core box (restored after the test)
    with threadpool_limits(limits=2, user_api="blas"):
        blas = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
        if blas != {2}:
            pytest.skip(f"numpy's BLAS runs {blas} threads here: there is no helper to spin")
        limit_blas_threads()  # as `aivos edge serve` does in its main thread
        batcher: MicroBatcher[float] = MicroBatcher(run_batch, concurrency=1)
        await batcher.start()
        try:
            await batcher.submit("warm-up")  # the BLAS pool starts
            before = _cpu_by_thread()
            for i in range(30):
                await batcher.submit(f"q{i}")
            after = _cpu_by_thread()
        finally:
            await batcher.close()
    python_threads = {t.native_id for t in threading.enumerate()} | worker_ids
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    worker = sum(cpu for tid, cpu in spent.items() if tid in worker_ids)
    others = sum(cpu for tid, cpu in spent.items() if tid not in python_threads)
    # without the limit the BLAS helper spins about as long as the worker computes
    assert worker > 0
    assert others < 0.25 * worker, (others, worker)


def test_one_batch_worker_per_core_by_default() -> None:
    assert load_edge_settings(None).model.batch_workers == (os.cpu_count() or 1)
    assert load_edge_settings(None, **{"model.concurrent_batches": 1}).model.batch_workers == 1
