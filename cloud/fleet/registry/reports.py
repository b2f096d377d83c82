"""Tables ``config_reports`` and ``bundle_events``: what sites report after applying (or
rejecting) a config version and while installing a bundle, newest first when read."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from aivos.cloud.db import Conn
from aivos.shared.fleet import BundleReport, ConfigReport
from aivos.shared.sqlite import decode_rows

__all__ = [
    "SCHEMA",
    "BundleEvent",
    "ConfigReportRow",
    "add_bundle_reports",
    "add_config_reports",
    "bundle_events",
    "config_reports",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS config_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL,
    error TEXT, ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_cfgrep_site ON config_reports(site_id, id);
CREATE TABLE IF NOT EXISTS bundle_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL, bundle_version TEXT NOT NULL, status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '', ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_bundle_ev_site ON bundle_events(site_id, id);
"""


class ConfigReportRow(msgspec.Struct, frozen=True, kw_only=True):
    site_id: str
    version: int
    status: str
    error: str | None
    ts: float


class BundleEvent(msgspec.Struct, frozen=True, kw_only=True):
    site_id: str
    bundle_version: str
    status: str
    message: str
    ts: float


def add_config_reports(conn: Conn, reports: Sequence[tuple[ConfigReport, float]]) -> None:
    conn.executemany(
        "INSERT INTO config_reports(site_id, version, status, error, ts) VALUES (?, ?, ?, ?, ?)",
        [(r.site, r.version, r.status, r.error, ts) for r, ts in reports],
    )


def add_bundle_reports(conn: Conn, reports: Sequence[tuple[BundleReport, float]]) -> None:
    conn.executemany(
        "INSERT INTO bundle_events(site_id, bundle_version, status, message, ts) "
        "VALUES (?, ?, ?, ?, ?)",
        [(r.site, r.bundle_version, r.status, r.message, ts) for r, ts in reports],
    )


def config_reports(conn: Conn, site_id: str, limit: int) -> list[ConfigReportRow]:
    rows = conn.execute(
        "SELECT site_id, version, status, error, ts FROM config_reports WHERE site_id = ? "
        "ORDER BY id DESC LIMIT ?",
        (site_id, limit),
    )
    return decode_rows(rows, ConfigReportRow)


def bundle_events(conn: Conn, site_id: str, limit: int) -> list[BundleEvent]:
    rows = conn.execute(
        "SELECT site_id, bundle_version, status, message, ts FROM bundle_events "
        "WHERE site_id = ? ORDER BY id DESC LIMIT ?",
        (site_id, limit),
    )
    return decode_rows(rows, BundleEvent)
