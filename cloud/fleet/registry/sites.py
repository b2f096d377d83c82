"""Tables ``sites`` (one row per site: latest heartbeat, desired and applied config and
bundle) and ``heartbeats`` (history, the last ``HISTORY_ROWS`` per site).

A site's state is derived when it is read, never stored: ``online`` only while its last
heartbeat is at most ``STALE_FACTOR`` heartbeat intervals old, otherwise ``offline`` with the
age of that heartbeat (``last_seen_age_s`` is None for a pre-registered site never seen).
The latest heartbeat of an offline site is still shown, but never as healthy. What is stored
is the deadline, ``stale_at`` = last seen + ``STALE_FACTOR`` intervals (0 for a site never
seen; migration ``registry_0003_site_overview``), so the overview counts and pages sites by
state in SQL, on an index (`overview`).

Write functions take the registry's write connection inside a transaction; read functions
take any connection.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from aivos.cloud.db import Conn
from aivos.cloud.fleet.registry.chunks import in_chunks, placeholders
from aivos.shared.errors import NotFound
from aivos.shared.fleet import ConfigReport, Heartbeat
from aivos.shared.sqlite import decode_row, row_dict
from aivos.shared.subjects import validate_site

__all__ = [
    "HISTORY_ROWS",
    "SCHEMA",
    "STALE_FACTOR",
    "HistoryPoint",
    "SiteRow",
    "apply_config_reports",
    "bundles",
    "get",
    "heartbeat",
    "history",
    "list_all",
    "register",
    "set_desired",
    "site_state",
]

STALE_FACTOR = 3.0
HISTORY_ROWS = 720

SCHEMA = """
CREATE TABLE IF NOT EXISTS sites (
    site_id TEXT PRIMARY KEY,
    registered_by TEXT NOT NULL,
    first_seen REAL,
    last_seen REAL,
    interval_s REAL NOT NULL DEFAULT 10.0,
    heartbeat TEXT,
    bundle_version TEXT,
    bundle_status TEXT,
    bundle_desired TEXT,
    config_desired INTEGER NOT NULL DEFAULT 0,
    config_applied INTEGER NOT NULL DEFAULT 0,
    config_error TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_sites_last_seen ON sites(last_seen);
CREATE TABLE IF NOT EXISTS heartbeats (
    site_id TEXT NOT NULL,
    ts REAL NOT NULL,
    p50_ms REAL, p99_ms REAL, request_rate REAL, error_rate REAL,
    local INTEGER, escalate INTEGER, refuse INTEGER,
    outbox_depth INTEGER, job_backlog INTEGER,
    cpu REAL, mem REAL, disk REAL,
    bundle_version TEXT
);
CREATE INDEX IF NOT EXISTS idx_hb_site_ts ON heartbeats(site_id, ts);
"""


def site_state(last_seen: float | None, interval_s: float, now: float) -> tuple[str, float | None]:
    """("online" | "offline", age in seconds or None if never seen)."""
    if last_seen is None:
        return "offline", None
    age = max(0.0, now - last_seen)
    return ("online" if age <= STALE_FACTOR * interval_s else "offline"), age


class SiteRow(msgspec.Struct, frozen=True, kw_only=True):
    """One site as the console and ``GET /api/sites`` show it."""

    site_id: str
    state: str
    last_seen_age_s: float | None
    bundle_version: str | None
    registered_by: str
    health: str  # "healthy" | "degraded" (online but failing) | "stale" (offline)
    bundle_status: str | None
    bundle_desired: str | None
    config_desired: int
    config_applied: int
    config_error: str | None
    agent_version: str | None
    provider: str | None
    link_state: str | None
    request_rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    outbox_depth: int | None
    first_seen: float | None
    last_seen: float | None
    interval_s: float
    # from the latest heartbeat: runs waiting for an operator's approval at the site, and
    # how long the oldest had waited when it was sent
    approvals_pending: int | None = None
    approval_oldest_s: float | None = None


class HistoryPoint(msgspec.Struct, frozen=True, array_like=True):
    ts: float
    p50_ms: float
    p99_ms: float
    request_rate: float
    error_rate: float
    local: int
    escalate: int
    refuse: int
    outbox_depth: int
    job_backlog: int
    cpu: float
    mem: float
    bundle_version: str


_hb_decoder = msgspec.json.Decoder(Heartbeat)

_SITE_COLS = (
    "site_id, registered_by, first_seen, last_seen, stale_at, interval_s, heartbeat, "
    "bundle_version, bundle_status, bundle_desired, config_desired, config_applied, config_error"
)
_HISTORY_COLS = (
    "ts, p50_ms, p99_ms, request_rate, error_rate, local, escalate, refuse, "
    "outbox_depth, job_backlog, cpu, mem, bundle_version"
)


# -- writes (the heartbeat write is `heartbeats.write_heartbeats`) ----------------------------


def apply_config_reports(conn: Conn, reports: Sequence[tuple[ConfigReport, float]]) -> None:
    """What each config report says about its site: applied (and no error), or the error."""
    # in site order, like the heartbeat upsert: two writers then lock rows in one order and
    # cannot deadlock each other
    for r, _ in sorted(reports, key=lambda item: item[0].site):
        if r.status == "applied":
            conn.execute(
                "UPDATE sites SET config_applied = CASE WHEN config_applied > ? "
                "THEN config_applied ELSE ? END, config_error = NULL WHERE site_id = ?",
                (r.version, r.version, r.site),
            )
        else:
            conn.execute(
                "UPDATE sites SET config_error = ? WHERE site_id = ?",
                (r.error or "rejected", r.site),
            )


def register(conn: Conn, site_id: str, by: str) -> bool:
    """Pre-register a site; False if it was already known."""
    validate_site(site_id)
    cur = conn.execute(
        "INSERT INTO sites(site_id, registered_by, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (site_id, by, time.time()),
    )
    return cur.rowcount == 1


def set_desired(
    conn: Conn,
    site_ids: Sequence[str],
    *,
    config: int | None = None,
    bundle: str | None = None,
) -> None:
    now = time.time()
    for site_id in site_ids:
        conn.execute(
            "INSERT INTO sites(site_id, registered_by, created_at) "
            "VALUES (?, 'operator', ?) ON CONFLICT DO NOTHING",
            (site_id, now),
        )
        if config is not None:
            conn.execute("UPDATE sites SET config_desired = ? WHERE site_id = ?", (config, site_id))
        if bundle is not None:
            conn.execute("UPDATE sites SET bundle_desired = ? WHERE site_id = ?", (bundle, site_id))


# -- reads ----------------------------------------------------------------------------------


def _site_row(row: Any, now: float) -> SiteRow:
    _, age = site_state(row["last_seen"], row["interval_s"], now)
    # the stored deadline, so a row's state and the overview's SQL counts always agree
    state = "online" if row["stale_at"] >= now else "offline"
    hb = _hb_decoder.decode(row["heartbeat"]) if row["heartbeat"] else None
    degraded = (
        row["bundle_status"] not in (None, "ok", "pending") or row["config_error"] is not None
    )
    health = "stale" if state == "offline" else ("degraded" if degraded else "healthy")
    return decode_row(
        row,
        SiteRow,
        state=state,
        last_seen_age_s=None if age is None else round(age, 1),
        health=health,
        agent_version=hb.agent_version if hb else None,
        provider=hb.provider if hb else None,
        link_state=hb.link_state if hb else None,
        request_rate=hb.request_rate if hb else None,
        p50_ms=hb.p50_ms if hb else None,
        p99_ms=hb.p99_ms if hb else None,
        outbox_depth=hb.outbox_depth if hb else None,
        approvals_pending=hb.approvals_pending if hb else None,
        approval_oldest_s=hb.approval_oldest_s if hb else None,
    )


def list_all(conn: Conn, now: float) -> list[SiteRow]:
    rows = conn.execute(f"SELECT {_SITE_COLS} FROM sites ORDER BY site_id").fetchall()
    return [_site_row(r, now) for r in rows]


def bundles(conn: Conn, site_ids: Sequence[str] | None) -> dict[str, str | None]:
    """{site: the bundle it runs (None: none reported)} of the registered sites among
    `site_ids` (None: every site), in site order: two columns, not the site rows, for a
    rollout of the whole fleet."""
    sql = "SELECT site_id, bundle_version FROM sites"
    if site_ids is None:
        rows = conn.execute(sql + " ORDER BY site_id").fetchall()
        return {r["site_id"]: r["bundle_version"] for r in rows}
    found: dict[str, str | None] = {}
    for chunk in in_chunks(site_ids):  # sorted chunks: the dict stays in site order
        q = sql + f" WHERE site_id IN ({placeholders(chunk)}) ORDER BY site_id"
        found.update((r["site_id"], r["bundle_version"]) for r in conn.execute(q, chunk))
    return found


def get(conn: Conn, site_id: str, now: float) -> SiteRow:
    row = conn.execute(f"SELECT {_SITE_COLS} FROM sites WHERE site_id = ?", (site_id,)).fetchone()
    if row is None:
        raise NotFound(f"site {site_id!r} is not registered")
    return _site_row(row, now)


def heartbeat(conn: Conn, site_id: str) -> Heartbeat | None:
    row = conn.execute("SELECT heartbeat FROM sites WHERE site_id = ?", (site_id,)).fetchone()
    if row is None or not row["heartbeat"]:
        return None
    return _hb_decoder.decode(row["heartbeat"])


def history(conn: Conn, site_id: str, limit: int) -> list[HistoryPoint]:
    """The site's last `limit` heartbeats, oldest first."""
    rows = conn.execute(
        f"SELECT {_HISTORY_COLS} FROM heartbeats WHERE site_id = ? ORDER BY ts DESC LIMIT ?",
        (site_id, limit),
    ).fetchall()
    # by name, as stored (HistoryPoint is array-like on the wire)
    return [HistoryPoint(**row_dict(r)) for r in reversed(rows)]
