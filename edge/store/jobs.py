"""Durable jobs (asynchronous escalations). A job row survives restarts; `claim` moves one
job to `running` atomically (it runs in a writer transaction).

`owner` is the id of the token whose request made the job (NULL: the site's own; operators
only); `/v1/jobs/{id}` answers 404 to any other client token."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from aivos.edge.store._codec import canonical_json, now_iso
from aivos.shared.errors import DataError, NotFound
from aivos.shared.ids import new_id
from aivos.shared.sqlite import decode_row

__all__ = [
    "JOB_STATES",
    "TERMINAL_STATES",
    "Job",
    "create",
    "get",
    "update",
    "list_by_state",
    "purge_finished",
    "claim",
    "set_owner",
]

JOB_STATES = ("queued", "waiting_for_uplink", "running", "done", "failed", "cancelled")
TERMINAL_STATES = ("done", "failed", "cancelled")

_UNSET: Any = object()
_COLUMNS = (
    "id, kind, state, request, result, error, callback_url, attempts, created_at, updated_at, "
    "deadline, owner"
)
_JSON_COLUMNS = ("request", "result")


class Job(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    state: str
    request: Any
    result: Any
    error: str | None
    callback_url: str | None
    attempts: int
    created_at: str
    updated_at: str
    deadline: str | None
    owner: str | None = None


def _check_state(state: str) -> None:
    if state not in JOB_STATES:
        raise DataError("job.state", f"unknown job state {state!r}; expected one of {JOB_STATES}")


def _to_job(row: sqlite3.Row) -> Job:
    return decode_row(row, Job, json=_JSON_COLUMNS)


def create(
    conn: sqlite3.Connection,
    kind: str,
    request: Any,
    *,
    state: str = "queued",
    callback_url: str | None = None,
    deadline: str | None = None,
    job_id: str | None = None,
    owner: str | None = None,
) -> Job:
    _check_state(state)
    now = now_iso()
    jid = job_id or new_id()
    conn.execute(
        f"INSERT INTO jobs({_COLUMNS}) VALUES (?, ?, ?, ?, NULL, NULL, ?, 0, ?, ?, ?, ?)",
        (jid, kind, state, canonical_json(request), callback_url, now, now, deadline, owner),
    )
    return get(conn, jid)


def set_owner(conn: sqlite3.Connection, job_id: str, owner: str) -> None:
    """Record the token a job was made for (once: an owner is never replaced)."""
    conn.execute("UPDATE jobs SET owner = ? WHERE id = ? AND owner IS NULL", (owner, job_id))


def get(conn: sqlite3.Connection, job_id: str) -> Job:
    row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return _to_job(row)


def update(
    conn: sqlite3.Connection,
    job_id: str,
    *,
    state: str | None = None,
    result: Any = _UNSET,
    error: Any = _UNSET,
    attempts_delta: int = 0,
) -> Job:
    sets = ["updated_at = ?", "attempts = attempts + ?"]
    args: list[Any] = [now_iso(), attempts_delta]
    if state is not None:
        _check_state(state)
        sets.append("state = ?")
        args.append(state)
    if result is not _UNSET:
        sets.append("result = ?")
        args.append(None if result is None else canonical_json(result))
    if error is not _UNSET:
        sets.append("error = ?")
        args.append(error)
    cur = conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*args, job_id))
    if cur.rowcount == 0:
        raise NotFound(f"no job {job_id!r}")
    return get(conn, job_id)


def list_by_state(
    conn: sqlite3.Connection, states: str | Sequence[str], limit: int = 100
) -> list[Job]:
    wanted = (states,) if isinstance(states, str) else tuple(states)
    for s in wanted:
        _check_state(s)
    marks = ", ".join("?" * len(wanted))
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY created_at, id LIMIT ?",
        (*wanted, limit),
    )
    return [_to_job(r) for r in rows]


def claim(
    conn: sqlite3.Connection,
    *,
    states: Sequence[str] = ("queued", "waiting_for_uplink"),
    kind: str | None = None,
) -> Job | None:
    """Move the oldest job in `states` (optionally of `kind`) to `running`, attempts + 1."""
    marks = ", ".join("?" * len(states))
    sql = f"SELECT id FROM jobs WHERE state IN ({marks})"
    args: list[Any] = list(states)
    if kind is not None:
        sql += " AND kind = ?"
        args.append(kind)
    row = conn.execute(sql + " ORDER BY created_at, id LIMIT 1", args).fetchone()
    if row is None:
        return None
    return update(conn, row["id"], state="running", attempts_delta=1)


def purge_finished(conn: sqlite3.Connection, before: str) -> int:
    """Delete jobs in a final state last updated before the ISO timestamp `before`."""
    marks = ", ".join("?" * len(TERMINAL_STATES))
    cur = conn.execute(
        f"DELETE FROM jobs WHERE state IN ({marks}) AND updated_at < ?", (*TERMINAL_STATES, before)
    )
    return cur.rowcount
