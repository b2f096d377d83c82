"""Table ``actions``: the audit of operator (and controller) actions, newest first when read."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from aivos.cloud.db import Conn
from aivos.shared.sqlite import decode_rows

__all__ = ["SCHEMA", "ActionRow", "list_recent", "record"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '', details TEXT NOT NULL DEFAULT '{}'
);
"""


class ActionRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    ts: float
    actor: str
    action: str
    target: str
    details: dict[str, Any]


def record(
    conn: Conn, actor: str, action: str, target: str, details: dict[str, Any] | None
) -> None:
    conn.execute(
        "INSERT INTO actions(ts, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
        (time.time(), actor, action, target, msgspec.json.encode(details or {}).decode()),
    )


def list_recent(conn: Conn, limit: int, target: str | None) -> list[ActionRow]:
    sql = "SELECT id, ts, actor, action, target, details FROM actions"
    args: list[Any] = []
    if target is not None:
        sql += " WHERE target = ?"
        args.append(target)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return decode_rows(conn.execute(sql, args), ActionRow, json=("details",))
