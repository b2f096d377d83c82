"""What the console's pages and JSON API show, computed once for both (view models)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from aivos.cloud.fleet.registry import Registry, SiteRow
from aivos.cloud.ingest.store import CloudStore

__all__ = [
    "SORT_KEYS",
    "FleetQuery",
    "Overview",
    "AuditQuery",
    "AuditHit",
    "overview",
    "search_audit",
    "open_cloud_store",
]

SORT_KEYS = {
    "site": lambda s: s.site_id,
    "state": lambda s: (s.state, s.site_id),
    "health": lambda s: (s.health, s.site_id),
    "last_seen": lambda s: s.last_seen_age_s if s.last_seen_age_s is not None else float("inf"),
    "bundle": lambda s: s.bundle_version or "",
    "rate": lambda s: s.request_rate or 0.0,
    "p99": lambda s: s.p99_ms or 0.0,
    "outbox": lambda s: s.outbox_depth or 0,
}


class FleetQuery(msgspec.Struct, frozen=True, kw_only=True):
    q: str = ""
    state: str = ""  # "" | online | offline
    health: str = ""  # "" | healthy | degraded | stale
    sort: str = "site"
    dir: str = "asc"

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> FleetQuery:
        """The filters and sort of a fleet overview request (page or API)."""
        return cls(
            q=params.get("q", ""),
            state=params.get("state", ""),
            health=params.get("health", ""),
            sort=params.get("sort", "site"),
            dir=params.get("dir", "asc"),
        )


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    counts: dict[str, int]
    total: int
    shown: int
    sites: list[SiteRow]
    revoked: list[str] = []  # sites whose credentials `aivos fleet revoke` removed
    misattributed: int = 0  # sync records the ingest rejected as claiming another site


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


def overview(registry: Registry, query: FleetQuery, data_dir: Path | None = None) -> Overview:
    sites = registry.sites()
    counts = {"online": 0, "offline": 0, "healthy": 0, "degraded": 0, "never_seen": 0}
    for s in sites:
        counts[s.state] += 1
        if s.health != "stale":
            counts[s.health] += 1
        if s.last_seen is None:
            counts["never_seen"] += 1
    needle = query.q.strip().lower()
    shown = [
        s
        for s in sites
        if (not needle or needle in s.site_id or needle in (s.bundle_version or "").lower())
        and (not query.state or s.state == query.state)
        and (not query.health or s.health == query.health)
    ]
    key = SORT_KEYS.get(query.sort, SORT_KEYS["site"])
    shown.sort(key=key, reverse=query.dir == "desc")  # type: ignore[arg-type]
    revoked, misattributed = security_state(data_dir) if data_dir is not None else ([], 0)
    return Overview(
        counts=counts,
        total=len(sites),
        shown=len(shown),
        sites=shown,
        revoked=revoked,
        misattributed=misattributed,
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
