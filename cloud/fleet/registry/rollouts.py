"""Tables ``rollouts`` (one staged bundle rollout: state, current wave, guards) and
``rollout_sites`` (each target site's wave and status, and the bundle to roll back to)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from aivos.cloud.db import Conn
from aivos.cloud.fleet.registry.chunks import in_chunks, placeholders
from aivos.shared.errors import NotFound
from aivos.shared.sqlite import decode_row, decode_rows

__all__ = [
    "SCHEMA",
    "RolloutRow",
    "RolloutSiteRow",
    "SiteChange",
    "create",
    "get",
    "list_recent",
    "update",
    "update_site",
    "update_sites",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    bundle_version TEXT NOT NULL,
    state TEXT NOT NULL,
    current_wave INTEGER NOT NULL DEFAULT 1,
    canary_percent REAL NOT NULL,
    soak_s REAL NOT NULL,
    guards TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rollout_sites (
    rollout_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    wave INTEGER NOT NULL,
    status TEXT NOT NULL,
    previous_bundle TEXT,
    healthy_since REAL,
    message TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY (rollout_id, site_id)
);
"""


class RolloutSiteRow(msgspec.Struct, frozen=True, kw_only=True):
    site_id: str
    wave: int
    status: str  # pending | deploying | healthy | failed | rolled_back
    previous_bundle: str | None
    healthy_since: float | None
    message: str
    updated_at: float


class RolloutRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    bundle_version: str
    state: str  # running | paused | halted | aborted | completed | rolled_back
    current_wave: int
    canary_percent: float
    soak_s: float
    guards: dict[str, float]
    created_by: str
    created_at: float
    updated_at: float
    message: str
    sites: list[RolloutSiteRow] = []

    def wave_progress(self) -> list[dict[str, Any]]:
        """Per wave: counts of site statuses, in wave order."""
        waves: dict[int, dict[str, int]] = {}
        for s in self.sites:
            counts = waves.setdefault(s.wave, {})
            counts[s.status] = counts.get(s.status, 0) + 1
        return [
            {"wave": w, "total": sum(c.values()), "counts": c} for w, c in sorted(waves.items())
        ]


class SiteChange(msgspec.Struct, frozen=True, kw_only=True):
    """A rollout site's new status (a tick writes its changes in one transaction)."""

    site_id: str
    status: str
    message: str = ""
    healthy_since: float | None = None


_COLS = (
    "id, bundle_version, state, current_wave, canary_percent, soak_s, guards, created_by, "
    "created_at, updated_at, message"
)
_SITE_COLS = "site_id, wave, status, previous_bundle, healthy_since, message, updated_at"


# -- writes ---------------------------------------------------------------------------------


def create(
    conn: Conn,
    rollout_id: str,
    bundle_version: str,
    waves: Sequence[Sequence[tuple[str, str | None]]],
    *,
    canary_percent: float,
    soak_s: float,
    guards: dict[str, float],
    created_by: str,
) -> None:
    """A running rollout at wave 1; `waves` lists (site, bundle to roll back to) per wave."""
    now = time.time()
    conn.execute(
        "INSERT INTO rollouts(id, bundle_version, state, current_wave, canary_percent, "
        "soak_s, guards, created_by, created_at, updated_at) "
        "VALUES (?, ?, 'running', 1, ?, ?, ?, ?, ?, ?)",
        (
            rollout_id,
            bundle_version,
            canary_percent,
            soak_s,
            msgspec.json.encode(guards).decode(),
            created_by,
            now,
            now,
        ),
    )
    conn.executemany(
        "INSERT INTO rollout_sites(rollout_id, site_id, wave, status, previous_bundle, "
        "updated_at) VALUES (?, ?, ?, 'pending', ?, ?)",
        [
            (rollout_id, site, n, prev, now)
            for n, wave in enumerate(waves, start=1)
            for site, prev in wave
        ],
    )


def update(
    conn: Conn,
    rollout_id: str,
    *,
    state: str | None = None,
    current_wave: int | None = None,
    message: str | None = None,
) -> None:
    sets: list[str] = ["updated_at = ?"]
    args: list[Any] = [time.time()]
    for col, val in (("state", state), ("current_wave", current_wave), ("message", message)):
        if val is not None:
            sets.append(f"{col} = ?")
            args.append(val)
    conn.execute(f"UPDATE rollouts SET {', '.join(sets)} WHERE id = ?", [*args, rollout_id])


def update_site(
    conn: Conn,
    rollout_id: str,
    site_id: str,
    *,
    status: str,
    message: str = "",
    healthy_since: float | None = None,
) -> None:
    conn.execute(
        "UPDATE rollout_sites SET status = ?, message = ?, healthy_since = ?, "
        "updated_at = ? WHERE rollout_id = ? AND site_id = ?",
        (status, message, healthy_since, time.time(), rollout_id, site_id),
    )


def update_sites(conn: Conn, rollout_id: str, changes: Sequence[SiteChange]) -> None:
    """`update_site` for each of `changes`, in site order (two writers lock rows in one
    order and cannot deadlock each other)."""
    now = time.time()
    conn.executemany(
        "UPDATE rollout_sites SET status = ?, message = ?, healthy_since = ?, "
        "updated_at = ? WHERE rollout_id = ? AND site_id = ?",
        [
            (c.status, c.message, c.healthy_since, now, rollout_id, c.site_id)
            for c in sorted(changes, key=lambda c: c.site_id)
        ],
    )


# -- reads ----------------------------------------------------------------------------------


def _with_sites(conn: Conn, row: Any) -> RolloutRow:
    sites = decode_rows(
        conn.execute(
            f"SELECT {_SITE_COLS} FROM rollout_sites WHERE rollout_id = ? ORDER BY wave, site_id",
            (row["id"],),
        ),
        RolloutSiteRow,
    )
    return decode_row(row, RolloutRow, json=("guards",), sites=sites)


def get(conn: Conn, rollout_id: str) -> RolloutRow:
    row = conn.execute(f"SELECT {_COLS} FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
    if row is None:
        raise NotFound(f"rollout {rollout_id!r} does not exist")
    return _with_sites(conn, row)


def list_recent(conn: Conn, states: Sequence[str] | None, limit: int) -> list[RolloutRow]:
    """Newest first, optionally only those in `states`; each with all its sites, read in
    one query for all of them (not one per rollout)."""
    sql = f"SELECT {_COLS} FROM rollouts"
    args: list[Any] = []
    if states:
        sql += f" WHERE state IN ({placeholders(states)})"
        args.extend(states)
    sql += " ORDER BY created_at DESC LIMIT ?"
    args.append(limit)
    rows = conn.execute(sql, args).fetchall()
    sites: dict[str, list[RolloutSiteRow]] = {r["id"]: [] for r in rows}
    for chunk in in_chunks(list(sites)):
        for site in conn.execute(
            f"SELECT rollout_id, {_SITE_COLS} FROM rollout_sites "
            f"WHERE rollout_id IN ({placeholders(chunk)}) ORDER BY wave, site_id",
            chunk,
        ).fetchall():
            sites[site["rollout_id"]].append(decode_row(site, RolloutSiteRow))
    return [decode_row(r, RolloutRow, json=("guards",), sites=sites[r["id"]]) for r in rows]
