"""`RunJournal`: the durable record of workflow runs, and the only code that touches the
`workflow_runs` and `workflow_steps` tables (migration ``0006_workflows``).

Reads use the store's per-thread read connection. Writes go through the store's writer.
A step's outcome is *pipelined*: `record_step` submits the write (step row, run cursor and
audit row in one transaction) and returns; the run's next write that must be durable first
(`begin_step`, before a side effect) or anyone reading the run (`sync`) waits for it. A run
that ends or pauses is synced before `record_step` returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from aivos.edge.store import AuditRecord, Store
from aivos.edge.store._codec import canonical_json, now_iso
from aivos.edge.workflows import audit
from aivos.edge.workflows.pipeline import WritePipeline
from aivos.edge.workflows.rows import TERMINAL, RunRow, StepResult, StepRow, run_row, step_row
from aivos.shared.errors import NotFound

__all__ = ["RunJournal", "purge_finished_runs"]

_RUN_COLS = (
    "id, workflow, digest, trigger, state, inputs, cursor, seq, response, error, trace_id, "
    "dedup_key, active_s, deadline_missed, created_at, updated_at, finished_at"
)
_STEP_COLS = (
    "run_id, seq, step_id, kind, state, attempts, input, output, error, idem_key, attempt_log, "
    "started_at, finished_at, duration_ms, wait_until, decision, decided_by, note"
)


class RunJournal:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pipeline = WritePipeline()  # step writes submitted, not yet awaited

    def get_run(self, run_id: str) -> RunRow:
        return _get_run(self._store.readers.get(), run_id)

    def list_runs(
        self,
        *,
        state: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        before: str | None = None,
        owner: str | None = None,
    ) -> list[RunRow]:
        where, args = [], []  # type: ignore[var-annotated]
        if owner is not None:  # the `owner` column: see owners.py
            where.append("owner = ?")
            args.append(owner)
        if state:
            where.append("state = ?")
            args.append(state)
        if workflow:
            where.append("workflow = ?")
            args.append(workflow)
        if before:
            where.append("id < ?")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {_RUN_COLS} FROM workflow_runs {clause} ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [run_row(r) for r in rows]

    def active_runs(self) -> list[RunRow]:
        """Runs left `running` or `waiting_approval` (to resume), oldest first."""
        rows = self._read(
            f"SELECT {_RUN_COLS} FROM workflow_runs WHERE state IN ('running', 'waiting_approval') "
            "ORDER BY created_at"
        )
        return [run_row(r) for r in rows]

    def count_waiting(self) -> int:
        (row,) = self._read(
            "SELECT count(*) AS n FROM workflow_runs WHERE state = 'waiting_approval'"
        )
        return int(row["n"])

    def steps_of(self, run_id: str) -> list[StepRow]:
        rows = self._read(
            f"SELECT {_STEP_COLS} FROM workflow_steps WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [step_row(r) for r in rows]

    def in_flight(self, run_id: str, seq: int) -> StepRow | None:
        """The step row `seq` of the run (the one in flight when `seq = run.seq + 1`)."""
        rows = self._read(
            f"SELECT {_STEP_COLS} FROM workflow_steps WHERE run_id = ? AND seq = ?", (run_id, seq)
        )
        return step_row(rows[0]) if rows else None

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._store.readers.get().execute(sql, args).fetchall()

    async def create_run(
        self,
        *,
        run_id: str,
        workflow: str,
        digest: str,
        trigger: str,
        inputs: dict[str, Any],
        cursor: str,
        trace_id: str,
        dedup_key: str | None,
    ) -> RunRow:
        """A new `running` run. With `dedup_key` the insert is awaited and a redelivery
        returns the existing run (another id); without, the insert is pipelined like the
        step writes (durable before any side effect, pause or answer)."""

        def insert(c: sqlite3.Connection) -> RunRow:
            if dedup_key is not None:
                row = c.execute(
                    f"SELECT {_RUN_COLS} FROM workflow_runs WHERE dedup_key = ?", (dedup_key,)
                ).fetchone()
                if row is not None:
                    return run_row(row)
            now = now_iso()
            c.execute(
                f"INSERT INTO workflow_runs ({_RUN_COLS}) VALUES "
                "(?, ?, ?, ?, 'running', ?, ?, 0, NULL, NULL, ?, ?, 0, 0, ?, ?, NULL)",
                (
                    run_id,
                    workflow,
                    digest,
                    trigger,
                    canonical_json(inputs),
                    cursor,
                    trace_id,
                    dedup_key,
                    now,
                    now,
                ),
            )
            return _get_run(c, run_id)

        if dedup_key is not None:  # the caller must know now whether this is a redelivery
            return await self._store.transact(insert)
        self._submit(run_id, insert)
        now = now_iso()
        return RunRow(
            id=run_id,
            workflow=workflow,
            digest=digest,
            trigger=trigger,
            state="running",
            inputs=inputs,
            cursor=cursor,
            seq=0,
            response=None,
            error=None,
            trace_id=trace_id,
            dedup_key=None,
            active_s=0.0,
            deadline_missed=False,
            created_at=now,
            updated_at=now,
            finished_at=None,
        )

    async def begin_step(
        self,
        run_id: str,
        *,
        seq: int,
        step_id: str,
        kind: str,
        state: str,
        input: Any = None,
        idem_key: str | None = None,
        wait_until: float | None = None,
        run_state: str | None = None,
    ) -> None:
        """Record a step as started, durably (before a side effect: with its idempotency
        key; a restarted step keeps the key and the deadline it was first given)."""

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                f"INSERT INTO workflow_steps ({_STEP_COLS}) VALUES "
                "(?, ?, ?, ?, ?, 0, ?, NULL, NULL, ?, '[]', ?, NULL, NULL, ?, NULL, NULL, NULL) "
                "ON CONFLICT(run_id, seq) DO UPDATE SET state = excluded.state, "
                "input = excluded.input, step_id = excluded.step_id, kind = excluded.kind, "
                "idem_key = COALESCE(workflow_steps.idem_key, excluded.idem_key), "
                "wait_until = COALESCE(workflow_steps.wait_until, excluded.wait_until), "
                "error = NULL",
                (
                    run_id,
                    seq,
                    step_id,
                    kind,
                    state,
                    canonical_json(input),
                    idem_key,
                    now_iso(),
                    wait_until,
                ),
            )
            if run_state is not None:
                c.execute(
                    "UPDATE workflow_runs SET state = ?, updated_at = ? WHERE id = ?",
                    (run_state, now_iso(), run_id),
                )

        await self.ordered(run_id)
        await self._store.transact(write)

    async def record_step(self, run: RunRow, result: StepResult) -> None:
        """Record a step's outcome (with its attempt log and audit row) and move the run on,
        in one pipelined transaction; synced here when the run ends or pauses, so that
        everything it wrote is on disk before anyone hears about it."""
        record = audit.step_finished(run, result)

        def write(c: sqlite3.Connection) -> None:
            _finish_step(c, run.id, result)
            audit.append_in(self._store, c, record)

        self._submit(run.id, write)
        if result.run_state != "running":
            await self.sync(run.id)

    async def end_run(self, run_id: str, *, state: str, cursor: str | None, error: str) -> None:
        """Stop a run without a step outcome (cancelled, or its workflow or step is gone)."""
        await self._store.transact(
            lambda c: _update_run(c, run_id, state=state, cursor=cursor, error=error)
        )

    async def reopen(self, run_id: str) -> None:
        """A stopped run runs again from its cursor (`retry`)."""
        await self._store.transact(
            lambda c: c.execute(
                "UPDATE workflow_runs SET state = 'running', error = NULL, response = NULL, "
                "active_s = 0, finished_at = NULL WHERE id = ?",
                (run_id,),
            )
        )

    async def mark_waiting(self, run_id: str) -> None:
        """A resumed run that was waiting for an operator is waiting again."""
        await self._store.transact(
            lambda c: c.execute(
                "UPDATE workflow_runs SET state = 'waiting_approval' WHERE id = ?", (run_id,)
            )
        )

    async def decide(self, run_id: str, seq: int, decision: str, by: str, note: str | None) -> bool:
        """Record an approval decision once; False if the step was already decided."""

        def write(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE workflow_steps SET decision = ?, decided_by = ?, note = ? "
                "WHERE run_id = ? AND seq = ? AND state = 'waiting' AND decision IS NULL",
                (decision, by, note, run_id, seq),
            )
            return cur.rowcount == 1

        return await self._store.transact(write)

    async def audit(self, record: AuditRecord) -> None:
        await audit.append(self._store, record)

    async def claim_delivery(self, source: str, delivery_id: str, expires_at: float) -> bool:
        """Record a webhook delivery in the store's replay cache; False if already there."""
        return await self._store.claim_delivery(source, delivery_id, expires_at)

    async def release_delivery(self, source: str, delivery_id: str) -> None:
        await self._store.release_delivery(source, delivery_id)

    def _submit(self, run_id: str, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self._pipeline.submit(run_id, self._store.transact(fn))

    async def ordered(self, run_id: str) -> None:
        await self._pipeline.ordered(run_id)

    async def sync(self, run_id: str) -> None:
        """Wait until this run's pipelined writes are committed (raising their error)."""
        await self._pipeline.sync(run_id)

    async def settle(self, run_id: str) -> None:
        """Let this run's pipelined writes land, ignoring their errors (before `cancelled`
        is written, so that it is the last word)."""
        await self._pipeline.settle(run_id)

    async def settle_all(self) -> None:
        await self._pipeline.settle_all()


def _get_run(conn: sqlite3.Connection, run_id: str) -> RunRow:
    row = conn.execute(f"SELECT {_RUN_COLS} FROM workflow_runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"no workflow run {run_id}")
    return run_row(row)


def _finish_step(conn: sqlite3.Connection, run_id: str, r: StepResult) -> None:
    now = now_iso()
    conn.execute(
        f"INSERT INTO workflow_steps ({_STEP_COLS}) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, NULL, NULL, NULL, NULL) "
        "ON CONFLICT(run_id, seq) DO UPDATE SET state = excluded.state, "
        "attempts = excluded.attempts, input = excluded.input, "
        "output = excluded.output, error = excluded.error, attempt_log = excluded.attempt_log, "
        "finished_at = excluded.finished_at, duration_ms = excluded.duration_ms",
        (
            run_id,
            r.seq,
            r.step_id,
            r.kind,
            r.state,
            r.attempts,
            canonical_json(r.input),
            canonical_json(r.output),
            r.error,
            canonical_json(r.attempt_log),
            now,
            now,
            r.duration_ms,
        ),
    )
    _update_run(
        conn,
        run_id,
        state=r.run_state,
        cursor=r.cursor,
        seq=r.seq if r.advance else r.seq - 1,  # a failed step stays in flight (for /retry)
        active_s=r.active_s,
        response=r.response,
        error=r.run_error,
        deadline_missed=r.deadline_missed,
    )


def _update_run(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    state: str,
    cursor: str | None = None,
    seq: int | None = None,
    active_s: float | None = None,
    response: str | None = None,
    error: str | None = None,
    deadline_missed: bool = False,
) -> None:
    now = now_iso()
    finished = now if state in TERMINAL else None
    conn.execute(
        "UPDATE workflow_runs SET state = ?, cursor = ?, seq = COALESCE(?, seq), "
        "active_s = COALESCE(?, active_s), response = COALESCE(?, response), error = ?, "
        "deadline_missed = max(deadline_missed, ?), updated_at = ?, finished_at = ? WHERE id = ?",
        (
            state,
            cursor,
            seq,
            active_s,
            response,
            error,
            int(deadline_missed),
            now,
            finished,
            run_id,
        ),
    )


def purge_finished_runs(conn: sqlite3.Connection, before: str) -> int:
    """Delete runs that finished before the ISO timestamp `before`, with their steps
    (retention); returns the number of runs deleted."""
    marks = ", ".join("?" * len(TERMINAL))
    old = f"SELECT id FROM workflow_runs WHERE finished_at < ? AND state IN ({marks})"
    args = (before, *TERMINAL)
    conn.execute(f"DELETE FROM workflow_steps WHERE run_id IN ({old})", args)
    return conn.execute(f"DELETE FROM workflow_runs WHERE id IN ({old})", args).rowcount
