"""Run state in the agent's SQLite (tables `workflow_runs`, `workflow_steps`, migration
``0006_workflows``). Writers take a connection inside a store writer transaction;
readers take a read connection.

A run's `seq` is the number of steps it has finished; the step in flight (if any) is the
row with `seq = run.seq + 1`. `cursor` is the id of the next step to run (NULL: no more).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from aivos.edge.store._codec import canonical_json, loads, now_iso
from aivos.shared.errors import NotFound

__all__ = [
    "RunRow",
    "StepRow",
    "TERMINAL",
    "ACTIVE",
    "insert_run",
    "get_run",
    "find_dedup",
    "list_runs",
    "active_runs",
    "steps_of",
    "in_flight",
    "begin_step",
    "finish_step",
    "update_run",
    "decide",
    "count_waiting",
]

TERMINAL = ("succeeded", "failed", "rejected", "cancelled", "timed_out")
ACTIVE = ("running", "waiting_approval")


class RunRow(msgspec.Struct, kw_only=True):
    id: str
    workflow: str
    digest: str
    trigger: str
    state: str
    inputs: dict[str, Any]
    cursor: str | None
    seq: int
    response: str | None
    error: str | None
    trace_id: str
    dedup_key: str | None
    active_s: float
    deadline_missed: bool
    created_at: str
    updated_at: str
    finished_at: str | None


class StepRow(msgspec.Struct, kw_only=True):
    run_id: str
    seq: int
    step_id: str
    kind: str
    state: str  # running | waiting | done | failed
    attempts: int
    input: Any
    output: Any
    error: str | None
    idem_key: str | None
    attempt_log: list[dict[str, Any]]
    started_at: str
    finished_at: str | None
    duration_ms: float | None
    wait_until: float | None
    decision: str | None
    decided_by: str | None
    note: str | None


_RUN_COLS = (
    "id, workflow, digest, trigger, state, inputs, cursor, seq, response, error, trace_id, "
    "dedup_key, active_s, deadline_missed, created_at, updated_at, finished_at"
)
_STEP_COLS = (
    "run_id, seq, step_id, kind, state, attempts, input, output, error, idem_key, attempt_log, "
    "started_at, finished_at, duration_ms, wait_until, decision, decided_by, note"
)


def _run(row: tuple[Any, ...]) -> RunRow:
    (rid, wf, digest, trig, state, inputs, cursor, seq, resp, err, trace, dedup, active, missed) = (
        row[:14]
    )
    return RunRow(
        id=rid,
        workflow=wf,
        digest=digest,
        trigger=trig,
        state=state,
        inputs=loads(inputs),
        cursor=cursor,
        seq=seq,
        response=resp,
        error=err,
        trace_id=trace,
        dedup_key=dedup,
        active_s=active,
        deadline_missed=bool(missed),
        created_at=row[14],
        updated_at=row[15],
        finished_at=row[16],
    )


def _step(row: tuple[Any, ...]) -> StepRow:
    return StepRow(
        run_id=row[0],
        seq=row[1],
        step_id=row[2],
        kind=row[3],
        state=row[4],
        attempts=row[5],
        input=loads(row[6]),
        output=loads(row[7]),
        error=row[8],
        idem_key=row[9],
        attempt_log=loads(row[10]) or [],
        started_at=row[11],
        finished_at=row[12],
        duration_ms=row[13],
        wait_until=row[14],
        decision=row[15],
        decided_by=row[16],
        note=row[17],
    )


def insert_run(
    conn: sqlite3.Connection,
    *,
    run_id: str,
    workflow: str,
    digest: str,
    trigger: str,
    inputs: dict[str, Any],
    cursor: str | None,
    trace_id: str,
    dedup_key: str | None,
) -> RunRow:
    """Insert a new run, or return the existing one with the same `dedup_key`."""
    if dedup_key is not None:
        existing = find_dedup(conn, dedup_key)
        if existing is not None:
            return existing
    now = now_iso()
    conn.execute(
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
    return get_run(conn, run_id)


def get_run(conn: sqlite3.Connection, run_id: str) -> RunRow:
    row = conn.execute(f"SELECT {_RUN_COLS} FROM workflow_runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"no workflow run {run_id}")
    return _run(row)


def find_dedup(conn: sqlite3.Connection, dedup_key: str) -> RunRow | None:
    row = conn.execute(
        f"SELECT {_RUN_COLS} FROM workflow_runs WHERE dedup_key = ?", (dedup_key,)
    ).fetchone()
    return None if row is None else _run(row)


def list_runs(
    conn: sqlite3.Connection,
    *,
    state: str | None = None,
    workflow: str | None = None,
    limit: int = 100,
    before: str | None = None,
) -> list[RunRow]:
    where, args = [], []  # type: ignore[var-annotated]
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
    rows = conn.execute(
        f"SELECT {_RUN_COLS} FROM workflow_runs {clause} ORDER BY id DESC LIMIT ?", (*args, limit)
    ).fetchall()
    return [_run(r) for r in rows]


def active_runs(conn: sqlite3.Connection) -> list[RunRow]:
    rows = conn.execute(
        f"SELECT {_RUN_COLS} FROM workflow_runs WHERE state IN ('running', 'waiting_approval') "
        "ORDER BY created_at"
    ).fetchall()
    return [_run(r) for r in rows]


def count_waiting(conn: sqlite3.Connection) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM workflow_runs WHERE state = 'waiting_approval'"
        ).fetchone()[0]
    )


def steps_of(conn: sqlite3.Connection, run_id: str) -> list[StepRow]:
    rows = conn.execute(
        f"SELECT {_STEP_COLS} FROM workflow_steps WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    return [_step(r) for r in rows]


def in_flight(conn: sqlite3.Connection, run_id: str, seq: int) -> StepRow | None:
    row = conn.execute(
        f"SELECT {_STEP_COLS} FROM workflow_steps WHERE run_id = ? AND seq = ?", (run_id, seq)
    ).fetchone()
    return None if row is None else _step(row)


def begin_step(
    conn: sqlite3.Connection,
    *,
    run_id: str,
    seq: int,
    step_id: str,
    kind: str,
    state: str,
    input: Any = None,
    idem_key: str | None = None,
    wait_until: float | None = None,
    run_state: str | None = None,
) -> None:
    """Record a step as started (before a side effect: with its idempotency key)."""
    conn.execute(
        f"INSERT INTO workflow_steps ({_STEP_COLS}) VALUES "
        "(?, ?, ?, ?, ?, 0, ?, NULL, NULL, ?, '[]', ?, NULL, NULL, ?, NULL, NULL, NULL) "
        "ON CONFLICT(run_id, seq) DO UPDATE SET state = excluded.state, "
        "input = excluded.input, step_id = excluded.step_id, kind = excluded.kind, "
        "idem_key = COALESCE(workflow_steps.idem_key, excluded.idem_key), "
        "wait_until = COALESCE(workflow_steps.wait_until, excluded.wait_until), "
        "error = NULL",
        (run_id, seq, step_id, kind, state, canonical_json(input), idem_key, now_iso(), wait_until),
    )
    if run_state is not None:
        conn.execute(
            "UPDATE workflow_runs SET state = ?, updated_at = ? WHERE id = ?",
            (run_state, now_iso(), run_id),
        )


def finish_step(
    conn: sqlite3.Connection,
    *,
    run_id: str,
    seq: int,
    step_id: str,
    kind: str,
    state: str,
    input: Any,
    output: Any,
    error: str | None,
    attempts: int,
    attempt_log: list[dict[str, Any]],
    duration_ms: float,
    cursor: str | None,
    active_s: float,
    advance: bool,
    run_state: str = "running",
    response: str | None = None,
    run_error: str | None = None,
    deadline_missed: bool = False,
) -> None:
    """Record a step's outcome (with its full attempt log) and move the run on, in one
    transaction. `advance`: the step counts as finished (else it stays in flight)."""
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
            seq,
            step_id,
            kind,
            state,
            attempts,
            canonical_json(input),
            canonical_json(output),
            error,
            canonical_json(attempt_log),
            now,
            now,
            duration_ms,
        ),
    )
    update_run(
        conn,
        run_id,
        state=run_state,
        cursor=cursor,
        seq=seq if advance else seq - 1,  # a failed step stays in flight (for /retry)
        active_s=active_s,
        response=response,
        error=run_error,
        deadline_missed=deadline_missed,
    )


def update_run(
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


def decide(
    conn: sqlite3.Connection, run_id: str, seq: int, decision: str, by: str, note: str | None
) -> bool:
    """Record an approval decision once; False if the step was already decided."""
    cur = conn.execute(
        "UPDATE workflow_steps SET decision = ?, decided_by = ?, note = ? "
        "WHERE run_id = ? AND seq = ? AND state = 'waiting' AND decision IS NULL",
        (decision, by, note, run_id, seq),
    )
    return cur.rowcount == 1
