"""The one writer thread, with group commit.

Callers hand the writer a function of the write connection (`await writer.submit(fn)`, or
`writer.submit_sync(fn)` outside an event loop). The thread takes everything queued, runs
each function inside its own SAVEPOINT of one `BEGIN IMMEDIATE` transaction (a lone function
needs none: its failure rolls the whole transaction back), commits once
(`synchronous=FULL`: on disk when COMMIT returns) and only then resolves each caller. A
function that raises is rolled back to its savepoint and its exception goes to its caller
alone; the others in the batch still commit. So N concurrent durable writes cost one fsync,
not N, and the audit write does not serialise the request path.

A full file system (`SQLITE_FULL`, or an `OSError` with `ENOSPC`) reaches the callers as
`DiskFull`, whether one function hit it or the COMMIT did: SQLite rolls the transaction back,
so nothing of the batch is written, and the next batch simply tries again once space is back.

Rules for submitted functions: use plain `conn.execute`; never COMMIT, ROLLBACK or BEGIN;
keep them short (they hold the batch). Results are returned only after the commit, so a
returned value always describes committed data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from aivos.shared.errors import DiskFull, StoreClosed

__all__ = ["Writer", "WriterStats", "as_disk_full", "run_in_savepoint"]

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], T]

_STOP = object()
_SQLITE_FULL = 13


def as_disk_full(exc: BaseException, path: str) -> DiskFull | None:
    """`DiskFull` (chained to `exc`) when `exc` says the disk is full, else None."""
    full = False
    if isinstance(exc, sqlite3.Error):
        full = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_FULL
    elif isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full:
        return None
    err = DiskFull(path)
    err.__cause__ = exc
    return err


class _Op:
    """One submitted function and where its outcome goes: an asyncio future on its loop, or
    a concurrent future for blocking callers."""

    __slots__ = ("fn", "loop", "afuture", "cfuture")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.afuture: asyncio.Future[Any] | None = None if loop is None else loop.create_future()
        self.cfuture: concurrent.futures.Future[Any] | None = (
            concurrent.futures.Future() if loop is None else None
        )


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """Runs on the caller's loop: resolve a whole batch with one wake-up."""
    for fut, ok, value in outcomes:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class WriterStats:
    """Counters read by /metrics: transactions committed, ops run, largest batch, queue depth."""

    def __init__(self) -> None:
        self.commits = 0
        self.ops = 0
        self.failed_ops = 0
        self.max_batch = 0
        self.disk_full = 0  # ops refused because the disk was full


class Writer:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        max_batch: int = 2048,
        name: str = "aivos-store-writer",
        path: str = "",
    ) -> None:
        self._conn = conn
        self._path = path  # named by DiskFull
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self.stats = WriterStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- submitting -------------------------------------------------------------------
    def _enqueue(
        self, fn: Callable[[sqlite3.Connection], Any], loop: asyncio.AbstractEventLoop | None
    ) -> _Op:
        op = _Op(fn, loop)
        with self._close_lock:
            if self._closed:
                raise StoreClosed("the store writer is closed")
            self._queue.put(op)
        return op

    async def submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in the next group transaction; returns its result once committed."""
        op = self._enqueue(fn, asyncio.get_running_loop())
        assert op.afuture is not None
        # If the caller is cancelled, the write still happens (it may already be committed):
        # the thread never looks at the future, and `_settle` skips a cancelled one. (No
        # asyncio.shield: it would cost one more future and loop callback per write.)
        result: T = await op.afuture
        return result

    def submit_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking variant for the CLI and for threads; never call it on the event loop."""
        op = self._enqueue(fn, None)
        assert op.cfuture is not None
        result: T = op.cfuture.result()
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
            try:
                self._run_batch(batch)
            except Exception:  # never let the writer die: callers would wait forever
                log.exception("store writer: unexpected error delivering a batch")

    def _run_batch(self, batch: list[_Op]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Op, bool, Any]] = []
        # A lone op (every write at concurrency 1) needs no SAVEPOINT: if it fails, the whole
        # transaction is rolled back and its exception goes to it alone, as for a batch.
        run_op = self._run_op if len(batch) > 1 else self._run_alone
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                outcomes.append(run_op(conn, op))
            committed = len(batch) > 1 or outcomes[0][1]
            conn.execute("COMMIT" if committed else "ROLLBACK")
        except BaseException as exc:  # the transaction as a whole failed: nobody committed
            full = as_disk_full(exc, self._path)
            if full is not None:
                log.error("store write refused (%d ops): the disk is full", len(batch))
                self.stats.disk_full += len(batch)
                exc = full
            else:
                log.error(
                    "store write transaction failed (%d ops): %s", len(batch), type(exc).__name__
                )
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed")
            self.stats.failed_ops += len(batch)
            self._deliver([(op, False, exc) for op in batch])
            return
        self.stats.commits += committed
        self.stats.ops += len(batch)
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        self.stats.failed_ops += sum(1 for _, ok, _ in outcomes if not ok)
        self._deliver(outcomes)

    @staticmethod
    def _deliver(outcomes: list[tuple[_Op, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for op, ok, value in outcomes:
            if op.cfuture is not None:
                if ok:
                    op.cfuture.set_result(value)
                else:
                    op.cfuture.set_exception(value)
            elif op.loop is not None and op.afuture is not None:
                by_loop.setdefault(op.loop, []).append((op.afuture, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # the caller's loop is closed; nobody is waiting
                log.debug("dropping %d results for a closed event loop", len(items))

    @staticmethod
    def _run_alone(conn: sqlite3.Connection, op: _Op) -> tuple[_Op, bool, Any]:
        """`_run_op` for a batch of one: its failure rolls back the transaction (the caller)."""
        try:
            return op, True, op.fn(conn)
        except Exception as exc:
            if as_disk_full(exc, "") is not None:
                raise
            return op, False, exc

    @staticmethod
    def _run_op(conn: sqlite3.Connection, op: _Op) -> tuple[_Op, bool, Any]:
        ok, value = run_in_savepoint(conn, op.fn)
        return op, ok, value


def run_in_savepoint(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]
) -> tuple[bool, Any]:
    """`fn(conn)` in a savepoint of its own, as the writer runs each op of a batch: (True,
    its value), or (False, its exception) with only its own writes rolled back. A full disk
    propagates: the whole transaction could not commit either."""
    conn.execute("SAVEPOINT op")
    try:
        value = fn(conn)
    except Exception as exc:
        if as_disk_full(exc, "") is not None:
            raise
        # If the failure also aborted the transaction, ROLLBACK TO raises and the whole
        # transaction fails (handled by the caller): that is the only honest outcome.
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return False, exc
    conn.execute("RELEASE op")
    return True, value
