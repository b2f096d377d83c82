"""The one writer thread, with group commit.

Callers hand the writer a function of the write connection (`await writer.submit(fn)`, or
`writer.submit_sync(fn)` outside an event loop). The thread takes everything queued, runs
each function inside its own SAVEPOINT of one `BEGIN IMMEDIATE` transaction, commits once
(`synchronous=FULL`: on disk when COMMIT returns) and only then resolves each caller. A
function that raises is rolled back to its savepoint and its exception goes to its caller
alone; the others in the batch still commit. So N concurrent durable writes cost one fsync,
not N, and the audit write does not serialise the request path.

Rules for submitted functions: use plain `conn.execute`; never COMMIT, ROLLBACK or BEGIN;
keep them short (they hold the batch). Results are returned only after the commit, so a
returned value always describes committed data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from shared.errors import StoreClosed

__all__ = ["Writer", "WriterStats"]

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], T]

_STOP = object()


class _Op:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class WriterStats:
    """Counters read by /metrics: transactions committed, ops run, largest batch, queue depth."""

    def __init__(self) -> None:
        self.commits = 0
        self.ops = 0
        self.failed_ops = 0
        self.max_batch = 0


class Writer:
    def __init__(
        self, conn: sqlite3.Connection, *, max_batch: int = 2048, name: str = "aivos-store-writer"
    ) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self.stats = WriterStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- submitting -------------------------------------------------------------------
    def _enqueue(self, fn: Callable[[sqlite3.Connection], Any]) -> _Op:
        op = _Op(fn)
        with self._close_lock:
            if self._closed:
                raise StoreClosed("the store writer is closed")
            self._queue.put(op)
        return op

    async def submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in the next group transaction; returns its result once committed."""
        op = self._enqueue(fn)
        result: T = await asyncio.wrap_future(op.future)
        return result

    def submit_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking variant for the CLI and for threads; never call it on the event loop."""
        op = self._enqueue(fn)
        result: T = op.future.result()
        return result

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting work, flush everything already queued, stop the thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Op] = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Op]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Op, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                outcomes.append(self._run_op(conn, op))
            conn.execute("COMMIT")
        except BaseException as exc:  # the transaction as a whole failed: nobody committed
            log.error("store write transaction failed (%d ops): %s", len(batch), type(exc).__name__)
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed")
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(exc)
            self.stats.failed_ops += len(batch)
            return
        self.stats.commits += 1
        self.stats.ops += len(batch)
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        for op, ok, value in outcomes:
            if ok:
                op.future.set_result(value)
            else:
                self.stats.failed_ops += 1
                op.future.set_exception(value)

    @staticmethod
    def _run_op(conn: sqlite3.Connection, op: _Op) -> tuple[_Op, bool, Any]:
        conn.execute("SAVEPOINT op")
        try:
            value = op.fn(conn)
        except Exception as exc:
            # If the op's failure also aborted the transaction, ROLLBACK TO raises and the
            # whole batch fails (handled by the caller): that is the only honest outcome.
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return op, False, exc
        conn.execute("RELEASE op")
        return op, True, value
