"""The rollout controller's reads: what a tick must look at, never a rollout's every site.

A rollout of a 10,000-site fleet has 10,000 ``rollout_sites`` rows and the controller ticks
once a second, so a tick asks SQL for the few sites whose state must move (`moves`) and
for one summary of the wave (`wave_state`); the database still walks the wave's rows, but
on indexes and without sending them. `moves` may return a site that turns out not to move
(its filter is a superset: the controller decides with the heartbeat itself), never leave
one out. It reads the columns kept beside the heartbeat JSON (``bundle_version``,
``bundle_status``, ``stale_at``, ``p99_ms`` and ``error_rate``, the last added by this
module's migration ``registry_0004_rollout_tick`` together with the indexes it reads).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec

from aivos.cloud.db import Conn
from aivos.cloud.fleet.registry.chunks import placeholders
from aivos.cloud.fleet.registry.rollouts import _COLS, RolloutRow
from aivos.cloud.fleet.registry.sites import _hb_decoder
from aivos.shared.fleet import Heartbeat
from aivos.shared.sqlite import decode_row

__all__ = [
    "MIGRATION_PG",
    "MovingSite",
    "WaveState",
    "last_wave",
    "migrate_sqlite",
    "moves",
    "running",
    "wave_state",
]

# -- migration registry_0004_rollout_tick ---------------------------------------------------

# site_id: the rollouts of a site (`rollouts_query.for_site`, `busy_sites`) scanned the
# table; (rollout_id, wave, status): a tick's per-wave summary and its pending/failed sites
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS idx_rollout_sites_site ON rollout_sites(site_id);"
    "CREATE INDEX IF NOT EXISTS idx_rollout_sites_wave "
    "ON rollout_sites(rollout_id, wave, status);"
)
_BACKFILL = "UPDATE sites SET error_rate = {0} WHERE heartbeat IS NOT NULL AND heartbeat <> '';"

MIGRATION_PG = (
    "ALTER TABLE sites ADD COLUMN IF NOT EXISTS error_rate DOUBLE PRECISION;"
    + _BACKFILL.format("(heartbeat::json->>'error_rate')::double precision")
    + _INDEXES
)
"""Migration ``registry_0004_rollout_tick`` on PostgreSQL."""


def migrate_sqlite(conn: Conn) -> None:
    """Migration ``registry_0004_rollout_tick`` on SQLite (ADD COLUMN has no IF NOT EXISTS)."""
    have = {row["name"] for row in conn.execute("PRAGMA table_info(sites)")}
    if "error_rate" not in have:
        conn.execute("ALTER TABLE sites ADD COLUMN error_rate REAL")
    conn.execute(_BACKFILL.format("json_extract(heartbeat, '$.error_rate')").rstrip(";"))
    for statement in _INDEXES.split(";"):
        if statement.strip():
            conn.execute(statement)


# -- reads ----------------------------------------------------------------------------------


class MovingSite(msgspec.Struct, frozen=True, kw_only=True):
    """A site of the current wave that a tick must look at, with its latest heartbeat."""

    site_id: str
    status: str
    healthy_since: float | None
    message: str
    heartbeat: Heartbeat | None
    stale_at: float | None  # None: the site's row is gone
    reported_failure: bool  # a bundle event of the rollout's bundle in a failed status


class WaveState(msgspec.Struct, frozen=True, kw_only=True):
    """One wave after a tick's writes: sites not yet healthy (pending or deploying) and
    the newest ``healthy_since`` of its healthy sites (None: none is healthy)."""

    unsettled: int
    newest_healthy_since: float | None


def running(conn: Conn, limit: int) -> list[RolloutRow]:
    """The newest `limit` running rollouts, without their sites."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM rollouts WHERE state = 'running' ORDER BY created_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [decode_row(r, RolloutRow, json=("guards",), sites=[]) for r in rows]


def _guard_breach(guards: dict[str, float], args: list[Any]) -> str:
    """SQL: the site runs the bundle (ok) outside a guard; a guard not set is no limit."""
    limits = [
        (column, guards[key])
        for column, key in (("s.error_rate", "max_error_rate"), ("s.p99_ms", "max_p99_ms"))
        if key in guards
    ]
    if not limits:
        return "0 = 1"
    args.extend(value for _, value in limits)
    return "(" + " OR ".join(f"{column} > ?" for column, _ in limits) + ")"


def moves(
    conn: Conn, rollout: RolloutRow, now: float, failed_statuses: Collection[str]
) -> list[MovingSite]:
    """The sites of `rollout`'s current wave whose state a tick may move, in site order:
    pending (to deploy), failed (for the halt message), deploying and live on the bundle,
    healthy and no longer live (or without ``healthy_since``), and deploying or healthy
    with a failure in sight (a failed bundle event of this bundle since the rollout
    started, a failed bundle status, or a guard breached)."""
    failed = sorted(failed_statuses)
    v = rollout.bundle_version
    live_args: list[Any] = [v, now]
    event_args: list[Any] = [v, *failed, rollout.created_at]
    suspect_args: list[Any] = [*failed, v]
    breach = _guard_breach(rollout.guards, suspect_args)
    sql = (
        "SELECT t.* FROM (SELECT rs.site_id, rs.status, rs.healthy_since, rs.message, "
        "s.heartbeat, s.stale_at, "
        "CASE WHEN s.heartbeat IS NOT NULL AND s.bundle_version = ? "
        "AND s.bundle_status = 'ok' AND s.stale_at >= ? THEN 1 ELSE 0 END AS live, "
        "CASE WHEN EXISTS (SELECT 1 FROM bundle_events e WHERE e.site_id = rs.site_id "
        f"AND e.bundle_version = ? AND e.status IN ({placeholders(failed)}) AND e.ts >= ?) "
        "THEN 1 ELSE 0 END AS reported, "
        f"CASE WHEN s.bundle_status IN ({placeholders(failed)}) "
        f"OR (s.bundle_version = ? AND s.bundle_status = 'ok' AND {breach}) "
        "THEN 1 ELSE 0 END AS suspect "
        "FROM rollout_sites rs LEFT JOIN sites s ON s.site_id = rs.site_id "
        "WHERE rs.rollout_id = ? AND rs.wave = ?) t "
        "WHERE t.status IN ('pending', 'failed') "
        "OR (t.status = 'deploying' AND (t.live = 1 OR t.reported = 1 OR t.suspect = 1)) "
        "OR (t.status = 'healthy' AND (t.live = 0 OR t.healthy_since IS NULL "
        "OR t.reported = 1 OR t.suspect = 1)) "
        "ORDER BY t.site_id"
    )
    args = [*live_args, *event_args, *suspect_args, rollout.id, rollout.current_wave]
    return [
        MovingSite(
            site_id=r["site_id"],
            status=r["status"],
            healthy_since=r["healthy_since"],
            message=r["message"],
            heartbeat=_hb_decoder.decode(r["heartbeat"]) if r["heartbeat"] else None,
            stale_at=r["stale_at"],
            reported_failure=bool(r["reported"]),
        )
        for r in conn.execute(sql, args).fetchall()
    ]


def wave_state(conn: Conn, rollout_id: str, wave: int) -> WaveState:
    """Whether `wave` has soaked, in one row: its unsettled sites and newest healthy one."""
    row = conn.execute(
        "SELECT coalesce(sum(CASE WHEN status IN ('pending', 'deploying') THEN 1 ELSE 0 END), "
        "0) AS unsettled, max(CASE WHEN status = 'healthy' THEN healthy_since END) AS newest "
        "FROM rollout_sites WHERE rollout_id = ? AND wave = ?",
        (rollout_id, wave),
    ).fetchone()
    return WaveState(unsettled=int(row["unsettled"]), newest_healthy_since=row["newest"])


def last_wave(conn: Conn, rollout_id: str) -> int | None:
    """The rollout's last wave (None: it has no sites)."""
    row = conn.execute(
        "SELECT max(wave) AS w FROM rollout_sites WHERE rollout_id = ?", (rollout_id,)
    ).fetchone()
    return None if row["w"] is None else int(row["w"])
