"""What the console's pages and JSON API show, computed once for both (view models)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec

from aivos.cloud.db import Conn
from aivos.cloud.fleet.registry import (
    SORTS,
    Registry,
    RolloutRow,
    RolloutSiteRow,
    SiteFilter,
    SiteRow,
)
from aivos.cloud.ingest.store import CloudStore
from aivos.shared.errors import NotFound
from aivos.shared.sqlite import decode_row, decode_rows

__all__ = [
    "PAGE_SIZE",
    "FleetQuery",
    "Overview",
    "AuditQuery",
    "AuditHit",
    "RolloutSummary",
    "RolloutView",
    "WaveCount",
    "bundle_counts",
    "overview",
    "rollout_summaries",
    "rollout_view",
    "site_rollouts",
    "search_audit",
    "open_cloud_store",
]

PAGE_SIZE = 100
"""Sites per page of the overview (the HTML page; the JSON API lists all unless `limit`)."""


class FleetQuery(msgspec.Struct, frozen=True, kw_only=True):
    q: str = ""  # in the site id or the bundle version
    state: str = ""  # "" | online | offline
    health: str = ""  # "" | healthy | degraded | stale
    sort: str = "site"  # one of `registry.SORTS`
    dir: str = "asc"
    page: int = 1  # 1-based, pages of `PAGE_SIZE` (the HTML page)

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, default_sort: str = "site") -> FleetQuery:
        """The filters, sort and page of a fleet overview request (page or API)."""
        try:
            page = max(1, int(params.get("page", "1") or 1))
        except ValueError:
            page = 1
        return cls(
            q=params.get("q", ""),
            state=params.get("state", ""),
            health=params.get("health", ""),
            sort=params.get("sort", default_sort) or default_sort,
            dir=params.get("dir", "asc"),
            page=page,
        )

    def params(self, **changes: Any) -> str:
        """This query as a URL query string, with `changes` (a page link, a sort link)."""
        values = {
            "q": self.q,
            "state": self.state,
            "health": self.health,
            "sort": self.sort,
            "dir": self.dir,
            "page": self.page,
            **changes,
        }
        return urlencode({k: v for k, v in values.items() if v not in ("", None, 1)})


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    counts: dict[str, int]  # the whole fleet: online, offline, healthy, degraded, never_seen
    total: int
    shown: int  # sites that pass the filters (all pages)
    sites: list[SiteRow]  # this page of them
    revoked: list[str] = []  # sites whose credentials `aivos fleet revoke` removed
    misattributed: int = 0  # sync records the ingest rejected as claiming another site
    approvals: int = 0  # workflow runs waiting for approval, over the whole fleet
    offset: int = 0  # of the first site of `sites` among the `shown`
    page: int = 1
    pages: int = 1


def security_state(data_dir: Path) -> tuple[list[str], int]:
    """(revoked sites, misattributed records) from ``D/nats/identities.json`` and the
    ingest's counter file in the cloud data dir."""
    from aivos.cloud.fleet.enroll import load_identities
    from aivos.cloud.ingest.consumer import read_misattributed

    try:
        ids = load_identities(data_dir)
        revoked = sorted(site for site, ident in ids.sites.items() if ident.revoked)
    except (OSError, msgspec.DecodeError):
        revoked = []
    return revoked, read_misattributed(data_dir)


def overview(
    registry: Registry,
    query: FleetQuery,
    data_dir: Path | None = None,
    *,
    limit: int | None = None,
    offset: int | None = None,
) -> Overview:
    """Counts over the fleet (in SQL) and the sites the query selects: `limit` of them from
    `offset` (default: the query's page of `PAGE_SIZE` when `limit` is given, else all)."""
    if offset is None:
        offset = (query.page - 1) * limit if limit else 0
    view = registry.overview(
        SiteFilter(text=query.q, state=query.state, health=query.health),
        sort=query.sort if query.sort in SORTS else "site",
        descending=query.dir == "desc",
        limit=limit,
        offset=offset,
    )
    c = view.counts
    revoked, misattributed = security_state(data_dir) if data_dir is not None else ([], 0)
    return Overview(
        counts={
            "online": c.online,
            "offline": c.offline,
            "healthy": c.healthy,
            "degraded": c.degraded,
            "never_seen": c.never_seen,
        },
        total=c.total,
        shown=view.matched,
        sites=view.sites,
        revoked=revoked,
        misattributed=misattributed,
        approvals=c.approvals,
        offset=offset,
        page=offset // limit + 1 if limit else 1,
        pages=max(1, -(-view.matched // limit)) if limit else 1,
    )


class AuditQuery(msgspec.Struct, frozen=True, kw_only=True):
    site: str = ""
    intent: str = ""
    decision: str = ""
    since: str = ""  # ISO date/time (UTC), inclusive
    until: str = ""  # ISO date/time (UTC), exclusive
    limit: int = 200

    @classmethod
    def from_params(cls, params: Mapping[str, str], max_limit: int) -> AuditQuery:
        """The filters of an audit search request (page or API), limit capped at `max_limit`."""
        return cls(
            site=params.get("site", ""),
            intent=params.get("intent", ""),
            decision=params.get("decision", ""),
            since=params.get("since", ""),
            until=params.get("until", ""),
            limit=min(int(params.get("limit", "200") or 200), max_limit),
        )


class AuditHit(msgspec.Struct, frozen=True, kw_only=True):
    site: str
    id: str
    ts: str
    kind: str
    intent: str | None
    decision: str | None
    confidence: float | None
    model_version: str | None
    latency_ms: float | None
    pii_counts: dict[str, int]
    detail: Any


def _iso(value: str) -> str:
    """A datetime-local / ISO input as a comparable UTC ISO prefix ('' stays '')."""
    if not value:
        return ""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return value
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat()


def open_cloud_store(data_dir: Path) -> CloudStore | None:
    """The synced-records store of the ingest, if it exists (read only by the console)."""
    if not (data_dir / CloudStore.FILENAME).exists():
        return None
    return CloudStore.open(data_dir)


def search_audit(store: CloudStore | None, query: AuditQuery, scan: int = 50_000) -> list[AuditHit]:
    """Newest first (by the record's time at the site). Records are shown exactly as
    synced (already masked at the site). Scans at most `scan` records."""
    if store is None:
        return []
    records = store.records(data_class="audit", site=query.site or None, limit=None)
    since, until = _iso(query.since), _iso(query.until)
    hits: list[AuditHit] = []

    def when(rec: Any) -> str:
        p = rec.payload if isinstance(rec.payload, dict) else {}
        return str(p.get("ts") or rec.created_at)

    for rec in sorted(records[-scan:], key=when, reverse=True):
        p = rec.payload if isinstance(rec.payload, dict) else {}
        ts = when(rec)
        bare = ts.replace("Z", "").split("+")[0]
        if query.intent and p.get("intent") != query.intent:
            continue
        if query.decision and p.get("decision") != query.decision:
            continue
        if since and bare < since:
            continue
        if until and bare >= until:
            continue
        hits.append(
            AuditHit(
                site=rec.site,
                id=str(p.get("id", rec.id)),
                ts=ts,
                kind=str(p.get("kind", rec.kind)),
                intent=p.get("intent"),
                decision=p.get("decision"),
                confidence=p.get("confidence"),
                model_version=p.get("model_version"),
                latency_ms=p.get("latency_ms"),
                pii_counts=_counts(p.get("pii_counts")),
                detail=p.get("detail", {}),
            )
        )
        if len(hits) >= query.limit:
            break
    return hits


def _counts(value: Any) -> dict[str, int]:
    if isinstance(value, str):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return {}
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}


# -- rollouts, aggregated in SQL ---------------------------------------------------------------
# A rollout of a 10k-site fleet has 10k ``rollout_sites`` rows: the pages count them per wave
# and status in SQL and show one page of sites, as the overview does for ``sites``. These
# read the registry's tables through its engine (read only); they belong next to
# `registry.rollouts` should the registry grow the same reads.

ROLLOUT_PAGE_SIZE = 100
"""Sites per page of a rollout's page."""

_ROLLOUT_COLS = (
    "id, bundle_version, state, current_wave, canary_percent, soak_s, guards, created_by, "
    "created_at, updated_at, message"
)
_ROLLOUT_SITE_COLS = "site_id, wave, status, previous_bundle, healthy_since, message, updated_at"
# problems first on a rollout's page, then progress order
_STATUS_ORDER = (
    "CASE status WHEN 'failed' THEN 0 WHEN 'deploying' THEN 1 WHEN 'pending' THEN 2 "
    "WHEN 'healthy' THEN 3 ELSE 4 END"
)
_CHUNK = 500  # site ids per IN (...) list


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


def _in(ids: Sequence[str]) -> str:
    return ", ".join("?" for _ in ids)


def bundle_counts(registry: Registry, sites: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """(bundle version, sites running it), most run first; over `sites` (None: the fleet)."""

    def read(c: Conn) -> list[tuple[str, int]]:
        sql = "SELECT bundle_version, count(*) AS n FROM sites WHERE bundle_version IS NOT NULL"
        if sites is None:
            rows = c.execute(sql + " GROUP BY bundle_version").fetchall()
            return [(r["bundle_version"], int(r["n"])) for r in rows]
        found: dict[str, int] = {}
        ids = sorted(set(sites))
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            q = sql + f" AND site_id IN ({_in(chunk)}) GROUP BY bundle_version"
            for r in c.execute(q, chunk).fetchall():
                found[r["bundle_version"]] = found.get(r["bundle_version"], 0) + int(r["n"])
        return list(found.items())

    counts = registry.engine.read(read)
    return sorted(counts, key=lambda vn: (-vn[1], vn[0]))


def _waves(c: Conn, ids: Sequence[str]) -> dict[str, list[WaveCount]]:
    if not ids:
        return {}
    rows = c.execute(
        "SELECT rollout_id, wave, status, count(*) AS n FROM rollout_sites "
        f"WHERE rollout_id IN ({_in(ids)}) GROUP BY rollout_id, wave, status",
        list(ids),
    ).fetchall()
    per: dict[str, dict[int, dict[str, int]]] = {}
    for r in rows:
        per.setdefault(r["rollout_id"], {}).setdefault(int(r["wave"]), {})[r["status"]] = int(
            r["n"]
        )
    return {
        rid: [
            WaveCount(wave=w, total=sum(counts.values()), counts=counts)
            for w, counts in sorted(waves.items())
        ]
        for rid, waves in per.items()
    }


def _rollout(row: Any) -> RolloutRow:
    return decode_row(row, RolloutRow, json=("guards",), sites=[])


def rollout_summaries(registry: Registry, limit: int = 50) -> list[RolloutSummary]:
    """The newest `limit` rollouts with their per-wave status counts (no site rows)."""

    def read(c: Conn) -> list[RolloutSummary]:
        rows = c.execute(
            f"SELECT {_ROLLOUT_COLS} FROM rollouts ORDER BY created_at DESC LIMIT ?", (limit,)
        ).fetchall()
        waves = _waves(c, [r["id"] for r in rows])
        return [RolloutSummary(rollout=_rollout(r), waves=waves.get(r["id"], [])) for r in rows]

    return registry.engine.read(read)


def rollout_view(
    registry: Registry, rollout_id: str, *, status: str = "", page: int = 1
) -> RolloutView:
    """One rollout: per-wave counts and one page of its sites (problems first), filtered by
    `status` when given."""
    size = ROLLOUT_PAGE_SIZE

    def read(c: Conn) -> RolloutView:
        row = c.execute(
            f"SELECT {_ROLLOUT_COLS} FROM rollouts WHERE id = ?", (rollout_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"rollout {rollout_id!r} does not exist")
        waves = _waves(c, [rollout_id]).get(rollout_id, [])
        where, args = "rollout_id = ?", [rollout_id]
        if status:
            where, args = where + " AND status = ?", [*args, status]
        shown = int(
            c.execute(f"SELECT count(*) AS n FROM rollout_sites WHERE {where}", args).fetchone()[
                "n"
            ]
        )
        pages = max(1, -(-shown // size))
        current = min(max(1, page), pages)
        offset = (current - 1) * size
        sites = decode_rows(
            c.execute(
                f"SELECT {_ROLLOUT_SITE_COLS} FROM rollout_sites WHERE {where} "
                f"ORDER BY {_STATUS_ORDER}, wave, site_id LIMIT ? OFFSET ?",
                [*args, size, offset],
            ),
            RolloutSiteRow,
        )
        return RolloutView(
            rollout=_rollout(row),
            waves=waves,
            status=status,
            sites=sites,
            shown=shown,
            page=current,
            pages=pages,
            offset=offset,
        )

    return registry.engine.read(read)


def site_rollouts(registry: Registry, site_id: str, limit: int = 20) -> list[RolloutRow]:
    """The newest rollouts that targeted `site_id` (without their site rows)."""
    cols = ", ".join(f"r.{c.strip()}" for c in _ROLLOUT_COLS.split(","))

    def read(c: Conn) -> list[RolloutRow]:
        rows = c.execute(
            f"SELECT {cols} FROM rollouts r JOIN rollout_sites s ON s.rollout_id = r.id "
            "WHERE s.site_id = ? ORDER BY r.created_at DESC LIMIT ?",
            (site_id, limit),
        ).fetchall()
        return [_rollout(r) for r in rows]

    return registry.engine.read(read)
