"""The heartbeat write: a batch of heartbeats (what the ingest gathered in its last flush
interval) into ``sites`` (latest state per site) and ``heartbeats`` (history), in the caller's
one transaction.

A batch is reduced to one row per site first (the latest heartbeat wins, ``first_seen`` is the
earliest), so the upsert touches each site once. SQLite takes it with ``executemany`` in that
one transaction. PostgreSQL takes it the way the ingest store takes records: the history rows
with ``COPY`` straight into ``heartbeats``, the site rows with ``COPY`` into a per-connection
temp table and one ``INSERT ... SELECT ... ORDER BY site_id ON CONFLICT (site_id) DO UPDATE``
(in key order: two replicas upserting overlapping batches never deadlock), and the history
trimmed to the last ``HISTORY_ROWS`` per site of the batch in one statement (a statement per
site cost a round trip each: 200 per batch at 1,000 heartbeats/s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aivos.cloud.db import Conn, Dialect
from aivos.cloud.fleet.registry.sites import HISTORY_ROWS, STALE_FACTOR
from aivos.shared.fleet import Heartbeat, encode

__all__ = ["write_heartbeats"]

_SITE_COLS = (
    "site_id, first_seen, last_seen, stale_at, interval_s, heartbeat, bundle_version, "
    "bundle_status, config_applied, config_error, request_rate, p99_ms, outbox_depth, "
    "approvals_pending, error_rate"
)
_HISTORY_COLS = (
    "site_id, ts, p50_ms, p99_ms, request_rate, error_rate, local, escalate, refuse, "
    "outbox_depth, job_backlog, cpu, mem, disk, bundle_version"
)
# a site's later heartbeat never moves last_seen (and stale_at with it) back
_UPSERT_SET = (
    "ON CONFLICT(site_id) DO UPDATE SET "
    "first_seen = coalesce(sites.first_seen, excluded.first_seen), "
    "last_seen = CASE WHEN sites.last_seen > excluded.last_seen "
    "THEN sites.last_seen ELSE excluded.last_seen END, "
    "stale_at = CASE WHEN sites.last_seen > excluded.last_seen "
    "THEN sites.stale_at ELSE excluded.stale_at END, "
    "interval_s = excluded.interval_s, heartbeat = excluded.heartbeat, "
    "bundle_version = excluded.bundle_version, bundle_status = excluded.bundle_status, "
    "config_applied = excluded.config_applied, config_error = excluded.config_error, "
    "request_rate = excluded.request_rate, p99_ms = excluded.p99_ms, "
    "outbox_depth = excluded.outbox_depth, approvals_pending = excluded.approvals_pending, "
    "error_rate = excluded.error_rate"
)
_UPSERT_SQLITE = (
    f"INSERT INTO sites({_SITE_COLS}, registered_by, created_at) "
    f"VALUES ({', '.join('?' * 15)}, 'auto', ?) {_UPSERT_SET}"
)
_HISTORY_SQLITE = f"INSERT INTO heartbeats({_HISTORY_COLS}) VALUES ({', '.join('?' * 15)})"
_TRIM_SQLITE = (
    "DELETE FROM heartbeats WHERE site_id = ? AND ts < ("
    "SELECT ts FROM heartbeats WHERE site_id = ? ORDER BY ts DESC LIMIT 1 OFFSET ?)"
)

_STAGE_PG = (
    "CREATE TEMP TABLE IF NOT EXISTS sites_in (site_id TEXT, first_seen DOUBLE PRECISION, "
    "last_seen DOUBLE PRECISION, stale_at DOUBLE PRECISION, interval_s DOUBLE PRECISION, "
    "heartbeat TEXT, bundle_version TEXT, bundle_status TEXT, config_applied BIGINT, "
    "config_error TEXT, request_rate DOUBLE PRECISION, p99_ms DOUBLE PRECISION, "
    "outbox_depth BIGINT, approvals_pending BIGINT, error_rate DOUBLE PRECISION) "
    "ON COMMIT DELETE ROWS"
)
_COPY_SITES_PG = f"COPY sites_in({_SITE_COLS}) FROM STDIN"
_COPY_HISTORY_PG = f"COPY heartbeats({_HISTORY_COLS}) FROM STDIN"
_UPSERT_PG = (
    f"INSERT INTO sites({_SITE_COLS}, registered_by, created_at) "
    f"SELECT {_SITE_COLS}, 'auto', first_seen FROM sites_in ORDER BY site_id {_UPSERT_SET}"
)
# each site's cutoff is one backward probe of idx_hb_site_ts
_TRIM_PG = (
    "DELETE FROM heartbeats h USING ("
    "SELECT s.site_id, (SELECT x.ts FROM heartbeats x WHERE x.site_id = s.site_id "
    "ORDER BY x.ts DESC LIMIT 1 OFFSET %s) AS cutoff FROM sites_in s) c "
    "WHERE h.site_id = c.site_id AND h.ts < c.cutoff"
)


def _rows(
    beats: Sequence[tuple[Heartbeat, float]],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(one site row per site, in site order; one history row per heartbeat)."""
    latest: dict[str, tuple[Heartbeat, float]] = {}
    first: dict[str, float] = {}
    history: list[tuple[Any, ...]] = []
    for hb, received in beats:
        site = hb.site_id
        seen = latest.get(site)
        if seen is None or received >= seen[1]:
            latest[site] = (hb, received)
        first[site] = min(first.get(site, received), received)
        d = hb.decisions
        history.append(
            (
                site,
                received,
                hb.p50_ms,
                hb.p99_ms,
                hb.request_rate,
                hb.error_rate,
                d.local,
                d.escalate,
                d.refuse,
                hb.outbox_depth,
                hb.job_backlog,
                hb.cpu_percent,
                hb.mem_percent,
                hb.disk_percent,
                hb.bundle_version,
            )
        )
    sites = [
        (
            site,
            first[site],
            received,
            received + STALE_FACTOR * hb.interval_s,
            hb.interval_s,
            encode(hb).decode(),
            hb.bundle_version,
            hb.bundle_status,
            hb.config_version_applied,
            hb.config_error,
            hb.request_rate,
            hb.p99_ms,
            hb.outbox_depth,
            hb.approvals_pending,
            hb.error_rate,
        )
        for site, (hb, received) in sorted(latest.items())
    ]
    return sites, history


def write_heartbeats(
    conn: Conn, dialect: Dialect, beats: Sequence[tuple[Heartbeat, float]]
) -> None:
    """Upsert each site's latest heartbeat, append the history, trim it to the last
    ``HISTORY_ROWS`` per site. Sites seen for the first time register themselves
    (``registered_by = auto``)."""
    sites, history = _rows(beats)
    if not sites:
        return
    if dialect == "postgres":
        raw = conn.raw  # type: ignore[attr-defined]  # PgConn: COPY is psycopg's own API
        raw.execute(_STAGE_PG)
        with raw.cursor() as cur:
            with cur.copy(_COPY_SITES_PG) as copy:
                for row in sites:
                    copy.write_row(row)
            with cur.copy(_COPY_HISTORY_PG) as copy:
                for row in history:
                    copy.write_row(row)
            cur.execute(_UPSERT_PG)
            cur.execute(_TRIM_PG, (HISTORY_ROWS - 1,))
        return
    conn.executemany(_UPSERT_SQLITE, [(*row, row[1]) for row in sites])
    conn.executemany(_HISTORY_SQLITE, history)
    conn.executemany(_TRIM_SQLITE, [(row[0], row[0], HISTORY_ROWS - 1) for row in sites])
