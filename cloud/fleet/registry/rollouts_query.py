"""Reads of ``rollouts`` and ``rollout_sites`` that never load a whole rollout's sites: a
rollout of a 10,000-site fleet has 10,000 ``rollout_sites`` rows, so the console's pages
count them per wave and status in SQL and show one page of sites (problems first), as the
overview does for ``sites``; a rollout's start asks only which of its sites are busy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from aivos.cloud.db import Conn
from aivos.cloud.fleet.registry.chunks import in_chunks, placeholders
from aivos.cloud.fleet.registry.rollouts import _COLS, _SITE_COLS, RolloutRow, RolloutSiteRow
from aivos.shared.errors import NotFound
from aivos.shared.sqlite import decode_row, decode_rows

__all__ = [
    "ROLLOUT_PAGE_SIZE",
    "RolloutSummary",
    "RolloutView",
    "WaveCount",
    "busy_sites",
    "for_site",
    "summaries",
    "view",
]

ROLLOUT_PAGE_SIZE = 100
"""Sites per page of a rollout's page."""

# problems first on a rollout's page, then progress order
_STATUS_ORDER = (
    "CASE status WHEN 'failed' THEN 0 WHEN 'deploying' THEN 1 WHEN 'pending' THEN 2 "
    "WHEN 'healthy' THEN 3 ELSE 4 END"
)


class WaveCount(msgspec.Struct, frozen=True, kw_only=True):
    wave: int
    total: int
    counts: dict[str, int]  # sites per status

    @property
    def healthy(self) -> int:
        return self.counts.get("healthy", 0)


class RolloutSummary(msgspec.Struct, frozen=True, kw_only=True):
    rollout: RolloutRow  # without its sites (`sites` is empty)
    waves: list[WaveCount]


class RolloutView(msgspec.Struct, frozen=True, kw_only=True):
    rollout: RolloutRow  # without its sites
    waves: list[WaveCount]
    status: str  # the status filter of `sites` ("" = any)
    sites: list[RolloutSiteRow]  # one page, problems first
    shown: int  # sites that pass the filter (all pages)
    page: int
    pages: int
    offset: int


def _bare(row: Any) -> RolloutRow:
    """A ``rollouts`` row without its sites."""
    return decode_row(row, RolloutRow, json=("guards",), sites=[])


def _waves(conn: Conn, ids: Sequence[str]) -> dict[str, list[WaveCount]]:
    """Per rollout of `ids`: its sites counted per wave and status, in wave order."""
    if not ids:
        return {}
    rows = conn.execute(
        "SELECT rollout_id, wave, status, count(*) AS n FROM rollout_sites "
        f"WHERE rollout_id IN ({placeholders(ids)}) GROUP BY rollout_id, wave, status",
        list(ids),
    ).fetchall()
    per: dict[str, dict[int, dict[str, int]]] = {}
    for r in rows:
        waves = per.setdefault(r["rollout_id"], {})
        waves.setdefault(int(r["wave"]), {})[r["status"]] = int(r["n"])
    return {
        rid: [
            WaveCount(wave=w, total=sum(counts.values()), counts=counts)
            for w, counts in sorted(waves.items())
        ]
        for rid, waves in per.items()
    }


def summaries(conn: Conn, limit: int) -> list[RolloutSummary]:
    """The newest `limit` rollouts with their per-wave status counts (no site rows)."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM rollouts ORDER BY created_at DESC LIMIT ?", (limit,)
    ).fetchall()
    waves = _waves(conn, [r["id"] for r in rows])
    return [RolloutSummary(rollout=_bare(r), waves=waves.get(r["id"], [])) for r in rows]


def view(conn: Conn, rollout_id: str, *, status: str, page: int, size: int) -> RolloutView:
    """One rollout: per-wave counts and page `page` (clamped to the pages there are) of
    `size` of its sites, problems first, only those with `status` when given."""
    row = conn.execute(f"SELECT {_COLS} FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
    if row is None:
        raise NotFound(f"rollout {rollout_id!r} does not exist")
    waves = _waves(conn, [rollout_id]).get(rollout_id, [])
    where, args = "rollout_id = ?", [rollout_id]
    if status:
        where, args = where + " AND status = ?", [*args, status]
    count = conn.execute(f"SELECT count(*) AS n FROM rollout_sites WHERE {where}", args)
    shown = int(count.fetchone()["n"])
    pages = max(1, -(-shown // size))
    current = min(max(1, page), pages)
    offset = (current - 1) * size
    sites = decode_rows(
        conn.execute(
            f"SELECT {_SITE_COLS} FROM rollout_sites WHERE {where} "
            f"ORDER BY {_STATUS_ORDER}, wave, site_id LIMIT ? OFFSET ?",
            [*args, size, offset],
        ),
        RolloutSiteRow,
    )
    return RolloutView(
        rollout=_bare(row),
        waves=waves,
        status=status,
        sites=sites,
        shown=shown,
        page=current,
        pages=pages,
        offset=offset,
    )


def for_site(conn: Conn, site_id: str, limit: int) -> list[RolloutRow]:
    """The newest `limit` rollouts that targeted `site_id` (without their site rows)."""
    cols = ", ".join(f"r.{c.strip()}" for c in _COLS.split(","))
    rows = conn.execute(
        f"SELECT {cols} FROM rollouts r JOIN rollout_sites s ON s.rollout_id = r.id "
        "WHERE s.site_id = ? ORDER BY r.created_at DESC LIMIT ?",
        (site_id, limit),
    ).fetchall()
    return [_bare(r) for r in rows]


def busy_sites(conn: Conn, states: Sequence[str], sites: Sequence[str] | None) -> set[str]:
    """The sites of rollouts in `states` (the active ones), among `sites` (None: any)."""
    if not states:
        return set()
    sql = (
        "SELECT DISTINCT s.site_id FROM rollout_sites s JOIN rollouts r ON r.id = s.rollout_id "
        f"WHERE r.state IN ({placeholders(states)})"
    )
    if sites is None:
        return {r["site_id"] for r in conn.execute(sql, list(states)).fetchall()}
    busy: set[str] = set()
    for chunk in in_chunks(sites):
        q = sql + f" AND s.site_id IN ({placeholders(chunk)})"
        busy.update(r["site_id"] for r in conn.execute(q, [*states, *chunk]).fetchall())
    return busy
