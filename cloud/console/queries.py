"""What the console's pages and JSON API show, computed once for both (view models)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec

from aivos.cloud.fleet.registry import SORTS, Registry, SiteFilter, SiteRow
from aivos.cloud.ingest.store import CloudStore

__all__ = [
    "PAGE_SIZE",
    "FleetQuery",
    "Overview",
    "AuditQuery",
    "AuditHit",
    "bundle_counts",
    "overview",
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


# -- rollouts ---------------------------------------------------------------------------------
# The rollout pages read their per-wave counts and pages of sites from the registry
# (`Registry.rollout_summaries`, `rollout_view`, `site_rollouts`), which owns that SQL.


def bundle_counts(registry: Registry, sites: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """(bundle version, sites running it), most run first; over `sites` (None: the fleet)."""
    return registry.bundle_counts(sites)
