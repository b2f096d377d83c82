"""The edge agent's SQLite store: audit hash-chain, outbox, durable jobs, memory, tokens.

One file, `DATA_DIR/aivos.db`, in WAL mode. One writer thread owns the write connection and
commits concurrent writes together (group commit, `synchronous=FULL`): an awaited write is
on disk when it returns. Reads use per-thread read connections and never touch the writer.

`Store` facade — open with `Store.open(data_dir, outbox_quota=..., ...)` (sync: runs
migrations, starts the writer), close with `store.close()` (flushes queued writes), or use
it as a context manager: `with Store.open(data_dir) as store: ...`. Connections and pragmas
come from `aivos.shared.sqlite`; rows are decoded by column name.

Writes: `async`, durable when they return (each runs in the next group transaction):
    append_audit(record: AuditRecord, *, sync=True, before=None) -> AuditRow
        also enqueues the row in the outbox (data class "audit") in the same transaction
        unless sync=False. A full outbox follows `outbox_when_full`: "refuse" raises
        QuotaExceeded (nothing written); "defer" writes the row and queues it deferred.
        `before(conn)`, when given, runs first in the same op (a fallback's job): both
        are written or neither. `after(conn)` runs last in it (a hard example, which
        keeps its own failures to itself: edge/candidates.py): not run when the row fails.
    create_job(kind, request, *, state="queued", callback_url=None, deadline=None) -> Job
    update_job(job_id, *, state=None, result=..., error=..., attempts_delta=0) -> Job
    claim_job(*, states=("queued", "waiting_for_uplink"), kind=None) -> Job | None
    add_turn(session_id, role, text, *, sync=None) -> Turn      (keeps the last N turns)
    put_fact(session_id, key, value, *, sync=None) -> Fact     (FactLimitReached past
                                                    `max_facts_per_session` keys)
    delete_fact(session_id, key) -> bool
    delete_session(session_id) -> int
    purge_memory(days=None) -> int                              (retention; default setting)
    enqueue(data_class, payload, *, subject="") -> str          (outbox record id)
    mark_sent(ids) -> int;  record_attempt(ids) -> None;  purge_sent(before_iso) -> int
    create_token(scope, name=None) -> (name, token);  revoke_token(name) -> None
    transact(fn) -> T       run fn(conn) in a writer transaction (compose the table modules'
                            functions atomically, e.g. an audit row + a job)
    check_writable() -> bool   a real row write through the writer plus a free-space check
                               (at least `min_free_bytes` left); for /readyz
    purge_jobs(before_iso) -> int;  purge_sent(before_iso) -> int  (retention)
    claim_delivery(source, delivery_id, expires_at) -> bool   webhook replay cache (False:
                               seen and not expired);  release_delivery(...);  purge_deliveries()
    free_bytes() -> int        free space on the data directory's file system
    *_sync variants for the CLI: create_token_sync, revoke_token_sync, transact_sync.

A full disk (SQLITE_FULL / ENOSPC) fails a write with `DiskFull` and writes nothing of it;
writes succeed again by themselves once space is freed.

Reads: synchronous and short (index lookups); fine on the event loop, except `verify_audit`
and `integrity_check`, which scan the file — call those via a thread:
    get_job(job_id) -> Job (NotFound);  list_jobs(states, limit=100) -> list[Job]
    turns(session_id, limit=None) -> list[Turn];  get_fact(...) -> Fact | None;
    list_facts(session_id) -> list[Fact]
    get_audit(record_id) -> AuditRow | None;  recent_audit(limit) -> list[AuditRow];
    audit_count() -> int
    outbox_pending(limit=500, after_seq=0) -> list[OutboxRecord];  outbox_depth() -> int
    outbox_refused_total, outbox_deferred_total, outbox_dropped_total (properties);
    outbox_full() -> bool;  writer_stats (WriterStats) ; queue_depth (property)
    authenticate(token) -> TokenInfo | None   (also `store.tokens.authenticate`, cached)
    verify_audit() -> VerifyResult;  integrity_check() -> str ("ok" when intact)
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aivos.edge.store import audit as _audit
from aivos.edge.store import deliveries as _deliveries
from aivos.edge.store import jobs as _jobs
from aivos.edge.store import memory as _memory
from aivos.edge.store import migrations as _migrations
from aivos.edge.store import tokens as _tokens
from aivos.edge.store._codec import iso_ago
from aivos.edge.store.audit import AuditRecord, AuditRow, VerifyResult
from aivos.edge.store.db import Readers, db_path, open_writer
from aivos.edge.store.jobs import Job
from aivos.edge.store.memory import Fact, Turn
from aivos.edge.store.outbox import Outbox, OutboxRecord, WhenFull
from aivos.edge.store.tokens import TokenInfo, TokenStore
from aivos.edge.store.writer import Writer, WriterStats
from aivos.shared.errors import AivosError
from aivos.shared.sqlite import Closing

__all__ = [
    "Store",
    "AuditRecord",
    "AuditRow",
    "VerifyResult",
    "Job",
    "Turn",
    "Fact",
    "OutboxRecord",
    "TokenInfo",
    "WriterStats",
]

T = TypeVar("T")
_UNSET: Any = object()


class Store(Closing):
    def __init__(
        self,
        data_dir: Path,
        writer_conn: sqlite3.Connection,
        *,
        outbox_quota: int,
        memory_retention_days: float,
        memory_turns_keep: int,
        sync_memory: bool,
        token_recheck_s: float = 1.0,
        max_facts_per_session: int | None = None,
        min_free_bytes: int = 0,
        outbox_when_full: WhenFull = "refuse",
        standalone: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.path = db_path(data_dir)
        self.memory_retention_days = memory_retention_days
        self.memory_turns_keep = memory_turns_keep
        self.sync_memory = sync_memory
        self.max_facts_per_session = max_facts_per_session
        self.min_free_bytes = min_free_bytes
        self._writer_conn = writer_conn
        self.writer = Writer(writer_conn, path=str(data_dir))
        self.readers = Readers(self.path)
        self.outbox = Outbox(outbox_quota, when_full=outbox_when_full, standalone=standalone)
        self.tokens = TokenStore(self.readers.get, recheck_s=token_recheck_s)

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        *,
        outbox_quota: int = 100_000,
        memory_retention_days: float = 30.0,
        memory_turns_keep: int = 20,
        sync_memory: bool = False,
        token_recheck_s: float = 1.0,
        max_facts_per_session: int | None = None,
        min_free_bytes: int = 0,
        outbox_when_full: WhenFull = "refuse",
        standalone: bool = False,
    ) -> Store:
        """Open (creating if needed) `data_dir/aivos.db`, apply migrations, start the writer.

        `outbox_quota`: most pending outbox records before syncing writes are refused.
        `memory_retention_days`: default age for `purge_memory()`.
        `memory_turns_keep`: short-term turns kept per session.
        `sync_memory`: whether memory writes enqueue outbox records (data class "memory").
        `token_recheck_s`: how long a cached token is trusted before its row is re-read.
        `max_facts_per_session`: most fact keys per session (None = unbounded).
        `min_free_bytes`: free space below which `check_writable()` reports not writable.
        `outbox_when_full`: "refuse" (a write that must sync fails with QuotaExceeded) or
        "defer" (audit rows are still written and queued deferred; other records dropped,
        counted); see `edge/store/outbox.py`.
        `standalone`: no uplink; nothing is queued for sync.
        """
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        conn = open_writer(db_path(data_dir))
        try:
            _migrations.apply(conn)
        except BaseException:
            conn.close()
            raise
        return cls(
            data_dir,
            conn,
            outbox_quota=outbox_quota,
            memory_retention_days=memory_retention_days,
            memory_turns_keep=memory_turns_keep,
            sync_memory=sync_memory,
            token_recheck_s=token_recheck_s,
            max_facts_per_session=max_facts_per_session,
            min_free_bytes=min_free_bytes,
            outbox_when_full=outbox_when_full,
            standalone=standalone,
        )

    def close(self) -> None:
        """Flush queued writes, stop the writer, close every connection. Idempotent."""
        self.writer.close()
        self.readers.close()
        self._writer_conn.close()

    def _r(self) -> sqlite3.Connection:
        return self.readers.get()

    # -- generic ------------------------------------------------------------------------
    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.submit(fn)

    def transact_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self.writer.submit_sync(fn)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.data_dir).free

    async def check_writable(self) -> bool:
        """A real write (a fresh row value, committed with fsync) and enough free space."""
        nonce = os.urandom(16)

        def probe(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO store_probe(one, at, nonce) VALUES (1, ?, ?)",
                (iso_ago(0), nonce),
            )

        try:
            if self.free_bytes() < self.min_free_bytes:
                return False
            await self.writer.submit(probe)
        except (sqlite3.Error, OSError, AivosError):
            return False
        return True

    @property
    def writer_stats(self) -> WriterStats:
        return self.writer.stats

    @property
    def queue_depth(self) -> int:
        return self.writer.queue_depth

    # -- audit --------------------------------------------------------------------------
    def _append_audit(self, conn: sqlite3.Connection, record: AuditRecord, sync: bool) -> AuditRow:
        row = _audit.append(conn, record)
        if sync:
            self.outbox.enqueue(conn, "audit", row, subject=row.kind, record_id=f"audit-{row.id}")
        return row

    async def append_audit(
        self,
        record: AuditRecord,
        *,
        sync: bool = True,
        before: Callable[[sqlite3.Connection], Any] | None = None,
        after: Callable[[sqlite3.Connection], Any] | None = None,
    ) -> AuditRow:
        if before is None and after is None:
            return await self.writer.submit(lambda c: self._append_audit(c, record, sync))

        def with_hooks(c: sqlite3.Connection) -> AuditRow:
            # one writer op: a failure of any part rolls all of it back (its savepoint, or
            # the transaction when it is alone); `after` runs only once the row is written
            if before is not None:
                before(c)
            row = self._append_audit(c, record, sync)
            if after is not None:
                after(c)
            return row

        return await self.writer.submit(with_hooks)

    def get_audit(self, record_id: str) -> AuditRow | None:
        return _audit.get(self._r(), record_id)

    def recent_audit(self, limit: int = 50) -> list[AuditRow]:
        return _audit.recent(self._r(), limit)

    def audit_count(self) -> int:
        return _audit.count(self._r())

    def verify_audit(self) -> VerifyResult:
        conn = self._r()
        conn.execute("BEGIN")  # one snapshot for the whole walk
        try:
            return _audit.verify(conn)
        finally:
            conn.execute("COMMIT")

    def integrity_check(self) -> str:
        rows = self._r().execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r["integrity_check"]) for r in rows)

    # -- outbox -------------------------------------------------------------------------
    async def enqueue(self, data_class: str, payload: Any, *, subject: str = "") -> str:
        return await self.writer.submit(
            lambda c: self.outbox.enqueue(c, data_class, payload, subject=subject)
        )

    async def mark_sent(self, ids: Iterable[str]) -> int:
        wanted = list(ids)
        return await self.writer.submit(lambda c: Outbox.mark_sent(c, wanted))

    async def record_attempt(self, ids: Iterable[str]) -> None:
        wanted = list(ids)
        await self.writer.submit(lambda c: Outbox.record_attempt(c, wanted))

    async def purge_sent(self, before: str) -> int:
        return await self.writer.submit(lambda c: Outbox.purge_sent(c, before))

    async def claim_delivery(self, source: str, delivery_id: str, expires_at: float) -> bool:
        now = time.time()
        return await self.writer.submit(
            lambda c: _deliveries.claim(c, source, delivery_id, expires_at=expires_at, now=now)
        )

    async def release_delivery(self, source: str, delivery_id: str) -> None:
        await self.writer.submit(lambda c: _deliveries.release(c, source, delivery_id))

    async def purge_deliveries(self) -> int:
        now = time.time()
        return await self.writer.submit(lambda c: _deliveries.purge_expired(c, now))

    def outbox_pending(self, limit: int = 500, after_seq: int = 0) -> list[OutboxRecord]:
        return Outbox.pending(self._r(), limit, after_seq)

    def outbox_depth(self) -> int:
        return Outbox.depth(self._r())

    def outbox_full(self) -> bool:
        """The outbox holds its quota of pending records (or more: deferred audit)."""
        return not self.outbox.standalone and self.outbox_depth() >= self.outbox.quota

    @property
    def outbox_refused_total(self) -> int:
        return self.outbox.refused_total

    @property
    def outbox_deferred_total(self) -> int:
        return self.outbox.deferred_total

    @property
    def outbox_dropped_total(self) -> dict[str, int]:
        return self.outbox.dropped_total

    # -- jobs ---------------------------------------------------------------------------
    async def create_job(
        self,
        kind: str,
        request: Any,
        *,
        state: str = "queued",
        callback_url: str | None = None,
        deadline: str | None = None,
    ) -> Job:
        return await self.writer.submit(
            lambda c: _jobs.create(
                c, kind, request, state=state, callback_url=callback_url, deadline=deadline
            )
        )

    async def update_job(
        self,
        job_id: str,
        *,
        state: str | None = None,
        result: Any = _UNSET,
        error: Any = _UNSET,
        attempts_delta: int = 0,
    ) -> Job:
        kwargs: dict[str, Any] = {"state": state, "attempts_delta": attempts_delta}
        if result is not _UNSET:
            kwargs["result"] = result
        if error is not _UNSET:
            kwargs["error"] = error
        return await self.writer.submit(lambda c: _jobs.update(c, job_id, **kwargs))

    async def claim_job(
        self, *, states: Sequence[str] = ("queued", "waiting_for_uplink"), kind: str | None = None
    ) -> Job | None:
        return await self.writer.submit(lambda c: _jobs.claim(c, states=states, kind=kind))

    async def purge_jobs(self, before: str) -> int:
        return await self.writer.submit(lambda c: _jobs.purge_finished(c, before))

    def get_job(self, job_id: str) -> Job:
        return _jobs.get(self._r(), job_id)

    def list_jobs(self, states: str | Sequence[str], limit: int = 100) -> list[Job]:
        return _jobs.list_by_state(self._r(), states, limit)

    # -- memory -------------------------------------------------------------------------
    def _sync_mem(self, sync: bool | None) -> bool:
        return self.sync_memory if sync is None else sync

    async def add_turn(
        self, session_id: str, role: str, text: str, *, sync: bool | None = None
    ) -> Turn:
        do_sync = self._sync_mem(sync)

        def op(c: sqlite3.Connection) -> Turn:
            turn = _memory.add_turn(c, session_id, role, text, keep=self.memory_turns_keep)
            if do_sync:
                self.outbox.enqueue(c, "memory", {"type": "turn", **_as_dict(turn)}, subject="turn")
            return turn

        return await self.writer.submit(op)

    async def put_fact(
        self, session_id: str, key: str, value: Any, *, sync: bool | None = None
    ) -> Fact:
        do_sync = self._sync_mem(sync)

        def op(c: sqlite3.Connection) -> Fact:
            fact = _memory.put_fact(c, session_id, key, value, max_facts=self.max_facts_per_session)
            if do_sync:
                self.outbox.enqueue(c, "memory", {"type": "fact", **_as_dict(fact)}, subject="fact")
            return fact

        return await self.writer.submit(op)

    async def delete_fact(self, session_id: str, key: str) -> bool:
        return await self.writer.submit(lambda c: _memory.delete_fact(c, session_id, key))

    async def delete_session(self, session_id: str) -> int:
        return await self.writer.submit(lambda c: _memory.delete_session(c, session_id))

    async def purge_memory(self, days: float | None = None) -> int:
        age = self.memory_retention_days if days is None else days
        return await self.writer.submit(lambda c: _memory.purge_older_than(c, age))

    def turns(self, session_id: str, limit: int | None = None) -> list[Turn]:
        return _memory.turns(self._r(), session_id, limit or self.memory_turns_keep)

    def get_fact(self, session_id: str, key: str) -> Fact | None:
        return _memory.get_fact(self._r(), session_id, key)

    def list_facts(self, session_id: str) -> list[Fact]:
        return _memory.list_facts(self._r(), session_id)

    # -- tokens -------------------------------------------------------------------------
    def authenticate(self, token: str) -> TokenInfo | None:
        return self.tokens.authenticate(token)

    async def create_token(self, scope: str, name: str | None = None) -> tuple[str, str]:
        return await self.writer.submit(lambda c: _tokens.create(c, name, scope))

    async def revoke_token(self, name: str) -> None:
        await self.writer.submit(lambda c: _tokens.revoke(c, name))
        self.tokens.forget(name)

    def create_token_sync(self, scope: str, name: str | None = None) -> tuple[str, str]:
        return self.writer.submit_sync(lambda c: _tokens.create(c, name, scope))

    def revoke_token_sync(self, name: str) -> None:
        self.writer.submit_sync(lambda c: _tokens.revoke(c, name))
        self.tokens.forget(name)


def _as_dict(value: Any) -> dict[str, Any]:
    import msgspec

    out: dict[str, Any] = msgspec.structs.asdict(value)
    return out
