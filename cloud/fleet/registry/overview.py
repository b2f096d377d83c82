"""The fleet overview in SQL: counts of sites by state over the whole fleet, and one page of
sites (filtered, sorted, ``LIMIT``/``OFFSET``), without loading every row.

A site is online while ``stale_at`` (last seen + ``STALE_FACTOR`` intervals, written with each
heartbeat; 0 for a site never seen) is not in the past, and degraded when online with a
failed bundle install or a rejected config (`DEGRADED`, the same rule as `sites._site_row`).
The columns the overview sorts and sums on are kept beside the heartbeat JSON (``request_rate``,
``p99_ms``, ``outbox_depth``, ``approvals_pending``), and the counts read indexes:
``idx_sites_stale_at`` (online / offline), the partial ``idx_sites_degraded`` and
``idx_sites_approvals`` (only the few rows they cover), ``idx_sites_last_seen`` (never seen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from aivos.cloud.db import Conn
from aivos.cloud.fleet.registry.chunks import in_chunks, placeholders
from aivos.cloud.fleet.registry.sites import _SITE_COLS, STALE_FACTOR, SiteRow, _site_row

__all__ = [
    "DEGRADED",
    "bundle_counts",
    "MIGRATION_PG",
    "SORTS",
    "SiteCounts",
    "SiteFilter",
    "SiteOverview",
    "migrate_sqlite",
    "read",
]

DEGRADED = "(coalesce(bundle_status, 'ok') NOT IN ('ok', 'pending') OR config_error IS NOT NULL)"

_ADDED = {
    "stale_at": "REAL NOT NULL DEFAULT 0",
    "request_rate": "REAL",
    "p99_ms": "REAL",
    "outbox_depth": "INTEGER",
    "approvals_pending": "INTEGER",
}
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS idx_sites_stale_at ON sites(stale_at);"
    f"CREATE INDEX IF NOT EXISTS idx_sites_degraded ON sites(stale_at) WHERE {DEGRADED};"
    "CREATE INDEX IF NOT EXISTS idx_sites_approvals ON sites(approvals_pending) "
    "WHERE approvals_pending > 0;"
)


def _backfill(extract: str) -> str:
    """The new columns of the sites seen before the migration, from their heartbeat."""
    cols = ", ".join(f"{c} = {extract.format(c)}" for c in list(_ADDED)[1:])
    return (
        f"UPDATE sites SET stale_at = last_seen + {STALE_FACTOR} * interval_s, {cols} "
        "WHERE last_seen IS NOT NULL AND heartbeat IS NOT NULL;"
    )


MIGRATION_PG = (
    "".join(
        f"ALTER TABLE sites ADD COLUMN IF NOT EXISTS {name} "
        f"{kind.replace('REAL', 'DOUBLE PRECISION').replace('INTEGER', 'BIGINT')};"
        for name, kind in _ADDED.items()
    )
    + _backfill("(heartbeat::json->>'{0}')::double precision")
    + _INDEXES
)
"""Migration ``registry_0003_site_overview`` on PostgreSQL."""


def migrate_sqlite(conn: Conn) -> None:
    """Migration ``registry_0003_site_overview`` on SQLite (ADD COLUMN has no IF NOT EXISTS)."""
    have = {row["name"] for row in conn.execute("PRAGMA table_info(sites)")}
    for name, kind in _ADDED.items():
        if name not in have:
            conn.execute(f"ALTER TABLE sites ADD COLUMN {name} {kind}")
    conn.execute(_backfill("json_extract(heartbeat, '$.{0}')").rstrip(";"))
    for statement in _INDEXES.split(";"):
        if statement.strip():
            conn.execute(statement)


SORTS = ("problems", "site", "state", "health", "last_seen", "bundle", "rate", "p99", "outbox")
"""Sort keys of `read`; ``problems``: offline first, then degraded, then healthy."""


class SiteFilter(msgspec.Struct, frozen=True, kw_only=True):
    text: str = ""  # in the site id or the bundle version (case-insensitive)
    state: str = ""  # "" | online | offline
    health: str = ""  # "" | healthy | degraded | stale


class SiteCounts(msgspec.Struct, frozen=True, kw_only=True):
    total: int
    online: int
    offline: int
    healthy: int  # online and not degraded
    degraded: int  # online and degraded
    never_seen: int
    approvals: int  # runs waiting for approval, over every site's last heartbeat


class SiteOverview(msgspec.Struct, frozen=True, kw_only=True):
    counts: SiteCounts  # the whole fleet
    matched: int  # sites that pass the filter
    sites: list[SiteRow]  # the requested page of them


_COUNTS = (
    "SELECT (SELECT count(*) FROM sites) AS total, "
    "(SELECT count(*) FROM sites WHERE stale_at >= ?) AS online, "
    f"(SELECT count(*) FROM sites WHERE stale_at >= ? AND {DEGRADED}) AS degraded, "
    "(SELECT count(*) FROM sites WHERE last_seen IS NULL) AS never_seen, "
    "(SELECT coalesce(sum(approvals_pending), 0) FROM sites WHERE approvals_pending > 0) "
    "AS approvals"
)


def _where(flt: SiteFilter, now: float) -> tuple[str, list[Any]]:
    terms: list[str] = []
    params: list[Any] = []
    online = {"online": "stale_at >= ?", "offline": "stale_at < ?"}
    health = {
        "healthy": f"stale_at >= ? AND NOT {DEGRADED}",
        "degraded": f"stale_at >= ? AND {DEGRADED}",
        "stale": "stale_at < ?",
    }
    for value, table in ((flt.state, online), (flt.health, health)):
        if value:
            terms.append(table.get(value, "1 = 0"))
            params += [now] if value in table else []
    needle = flt.text.strip().lower()
    if needle:
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        terms.append(
            "(site_id LIKE ? ESCAPE '\\' OR lower(coalesce(bundle_version, '')) LIKE ? ESCAPE '\\')"
        )
        params += [pattern, pattern]
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def _order(sort: str, descending: bool, now: float) -> tuple[str, list[Any]]:
    """ORDER BY of a sort key; ties by site id ascending (as a stable sort would leave them)."""
    d = "DESC" if descending else "ASC"
    if sort == "site":
        return f"site_id {d}", []
    if sort == "last_seen":  # by age: the most recent first, never seen last
        other = "ASC" if descending else "DESC"
        return f"CASE WHEN last_seen IS NULL THEN 1 ELSE 0 END {d}, last_seen {other}, site_id", []
    keys = {
        "problems": (f"CASE WHEN stale_at < ? THEN 0 WHEN {DEGRADED} THEN 1 ELSE 2 END", True),
        "state": ("CASE WHEN stale_at >= ? THEN 1 ELSE 0 END", True),  # offline < online
        "health": (f"CASE WHEN stale_at < ? THEN 2 WHEN {DEGRADED} THEN 0 ELSE 1 END", True),
        "bundle": ("coalesce(bundle_version, '')", False),
        "rate": ("coalesce(request_rate, 0)", False),
        "p99": ("coalesce(p99_ms, 0)", False),
        "outbox": ("coalesce(outbox_depth, 0)", False),
    }
    expr, uses_now = keys.get(sort, ("site_id", False))
    return f"{expr} {d}, site_id", [now] if uses_now else []


def read(
    conn: Conn,
    now: float,
    flt: SiteFilter,
    *,
    sort: str = "site",
    descending: bool = False,
    limit: int | None = None,
    offset: int = 0,
) -> SiteOverview:
    """Counts over the fleet, the number of sites `flt` matches, and `limit` of them (None:
    all) from `offset`, sorted by `sort` (one of `SORTS`; unknown: by site id)."""
    row = conn.execute(_COUNTS, (now, now)).fetchone()
    total, online, degraded = int(row["total"]), int(row["online"]), int(row["degraded"])
    counts = SiteCounts(
        total=total,
        online=online,
        offline=total - online,
        healthy=online - degraded,
        degraded=degraded,
        never_seen=int(row["never_seen"]),
        approvals=int(row["approvals"]),
    )
    where, params = _where(flt, now)
    if where:
        matched = int(
            conn.execute(f"SELECT count(*) AS n FROM sites{where}", params).fetchone()["n"]
        )
    else:
        matched = total
    if limit == 0 or offset >= matched:
        return SiteOverview(counts=counts, matched=matched, sites=[])
    order, order_params = _order(sort, descending, now)
    sql = f"SELECT {_SITE_COLS} FROM sites{where} ORDER BY {order}"
    page_params = [*params, *order_params]
    if limit is not None or offset:
        sql += " LIMIT ? OFFSET ?"
        page_params += [limit if limit is not None else 2**62, offset]
    rows = conn.execute(sql, page_params).fetchall()
    return SiteOverview(counts=counts, matched=matched, sites=[_site_row(r, now) for r in rows])


def bundle_counts(conn: Conn, site_ids: Sequence[str] | None) -> list[tuple[str, int]]:
    """(bundle version, sites running it), most run first, then by version; over
    `site_ids` (None: the fleet). Sites that report no bundle are not counted."""
    sql = "SELECT bundle_version, count(*) AS n FROM sites WHERE bundle_version IS NOT NULL"
    found: dict[str, int] = {}
    if site_ids is None:
        for r in conn.execute(sql + " GROUP BY bundle_version"):
            found[r["bundle_version"]] = int(r["n"])
    for chunk in in_chunks(site_ids or []):
        q = sql + f" AND site_id IN ({placeholders(chunk)}) GROUP BY bundle_version"
        for r in conn.execute(q, chunk):
            found[r["bundle_version"]] = found.get(r["bundle_version"], 0) + int(r["n"])
    return sorted(found.items(), key=lambda vn: (-vn[1], vn[0]))
