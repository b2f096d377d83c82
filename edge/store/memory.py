"""Per-session memory: short-term turns (the last N kept per session) and long-term facts
(key -> JSON value per session), with retention by age.

A session belongs to the token that first wrote to it (`session_owners`, migration
``0010_owners``): `claim_session` records the owner of a new session and returns the owner
of an existing one; NULL is the site's own (operators only). Forgetting a session releases
its id."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from aivos.edge.store._codec import canonical_json, iso_ago, now_iso
from aivos.shared.errors import FactLimitReached
from aivos.shared.sqlite import decode_row, decode_rows

__all__ = [
    "Turn",
    "Fact",
    "add_turn",
    "turns",
    "put_fact",
    "get_fact",
    "list_facts",
    "delete_fact",
    "delete_session",
    "purge_older_than",
    "session_owner",
    "claim_session",
    "UNCLAIMED",
]


_JSON_COLUMNS = ("value",)


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    session_id: str
    role: str
    text: str
    ts: str


class Fact(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    key: str
    value: Any
    updated_at: str


def add_turn(conn: sqlite3.Connection, session_id: str, role: str, text: str, *, keep: int) -> Turn:
    ts = now_iso()
    cur = conn.execute(
        "INSERT INTO memory_turns(session_id, role, text, ts) VALUES (?, ?, ?, ?)",
        (session_id, role, text, ts),
    )
    seq = int(cur.lastrowid or 0)
    conn.execute(
        "DELETE FROM memory_turns WHERE session_id = ? AND seq <= ("
        " SELECT seq FROM memory_turns WHERE session_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
        (session_id, session_id, keep),
    )
    return Turn(seq=seq, session_id=session_id, role=role, text=text, ts=ts)


def turns(conn: sqlite3.Connection, session_id: str, limit: int = 100) -> list[Turn]:
    """The session's most recent turns, oldest first."""
    rows = conn.execute(
        "SELECT seq, session_id, role, text, ts FROM memory_turns WHERE session_id = ? "
        "ORDER BY seq DESC LIMIT ?",
        (session_id, limit),
    ).fetchall()
    return decode_rows(reversed(rows), Turn)


def put_fact(
    conn: sqlite3.Connection, session_id: str, key: str, value: Any, *, max_facts: int | None = None
) -> Fact:
    """Set a fact; a new key in a session already holding `max_facts` raises FactLimitReached
    (updating an existing key is always allowed)."""
    if max_facts is not None and get_fact(conn, session_id, key) is None:
        row = conn.execute(
            "SELECT count(*) AS n FROM memory_facts WHERE session_id = ?", (session_id,)
        ).fetchone()
        if int(row["n"]) >= max_facts:
            raise FactLimitReached(session_id, max_facts)
    ts = now_iso()
    conn.execute(
        "INSERT INTO memory_facts(session_id, key, value, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(session_id, key) DO UPDATE SET value = excluded.value, "
        "updated_at = excluded.updated_at",
        (session_id, key, canonical_json(value), ts),
    )
    return Fact(session_id=session_id, key=key, value=value, updated_at=ts)


def get_fact(conn: sqlite3.Connection, session_id: str, key: str) -> Fact | None:
    row = conn.execute(
        "SELECT value, updated_at FROM memory_facts WHERE session_id = ? AND key = ?",
        (session_id, key),
    ).fetchone()
    if row is None:
        return None
    return decode_row(row, Fact, json=_JSON_COLUMNS, session_id=session_id, key=key)


def list_facts(conn: sqlite3.Connection, session_id: str) -> list[Fact]:
    rows = conn.execute(
        "SELECT key, value, updated_at FROM memory_facts WHERE session_id = ? ORDER BY key",
        (session_id,),
    )
    return decode_rows(rows, Fact, json=_JSON_COLUMNS, session_id=session_id)


def delete_fact(conn: sqlite3.Connection, session_id: str, key: str) -> bool:
    cur = conn.execute(
        "DELETE FROM memory_facts WHERE session_id = ? AND key = ?", (session_id, key)
    )
    return cur.rowcount > 0


def delete_session(conn: sqlite3.Connection, session_id: str) -> int:
    """Forget a session entirely (and its owner); returns the number of turns and facts deleted."""
    n = conn.execute("DELETE FROM memory_turns WHERE session_id = ?", (session_id,)).rowcount
    n += conn.execute("DELETE FROM memory_facts WHERE session_id = ?", (session_id,)).rowcount
    conn.execute("DELETE FROM session_owners WHERE session_id = ?", (session_id,))
    return n


UNCLAIMED: Any = object()  # session_owner(): nobody has written to this session


def session_owner(conn: sqlite3.Connection, session_id: str) -> str | None | Any:
    """The owner token id of a known session (None: the site's own), or `UNCLAIMED`."""
    row = conn.execute(
        "SELECT owner FROM session_owners WHERE session_id = ?", (session_id,)
    ).fetchone()
    return UNCLAIMED if row is None else row["owner"]


def claim_session(conn: sqlite3.Connection, session_id: str, owner: str | None) -> str | None:
    """Make `owner` the owner of `session_id` unless someone already is; returns the owner."""
    conn.execute(
        "INSERT OR IGNORE INTO session_owners(session_id, owner, created_at) VALUES (?, ?, ?)",
        (session_id, owner, now_iso()),
    )
    row = conn.execute(
        "SELECT owner FROM session_owners WHERE session_id = ?", (session_id,)
    ).fetchone()
    return None if row is None else row["owner"]


def purge_older_than(conn: sqlite3.Connection, days: float) -> int:
    """Delete turns and facts last written more than `days` ago; returns rows deleted."""
    cutoff = iso_ago(days)
    n = conn.execute("DELETE FROM memory_turns WHERE ts < ?", (cutoff,)).rowcount
    n += conn.execute("DELETE FROM memory_facts WHERE updated_at < ?", (cutoff,)).rowcount
    return n
