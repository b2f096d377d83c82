"""The fleet registry: sites, heartbeat history, config and bundle reports, rollouts,
operators and the operator action audit. SQLite (WAL) by default, behind `Registry`.

A site's state is derived when it is read, never stored: ``online`` only while its last
heartbeat is at most ``STALE_FACTOR`` heartbeat intervals old, otherwise ``offline`` with the
age of that heartbeat (``last_seen_age_s`` is None for a pre-registered site never seen).
The latest heartbeat of an offline site is still shown, but never as healthy.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import msgspec

from aivos.shared.errors import NotFound
from aivos.shared.fleet import BundleReport, ConfigReport, Heartbeat, encode
from aivos.shared.subjects import validate_site

__all__ = [
    "STALE_FACTOR",
    "HISTORY_ROWS",
    "SiteRow",
    "HistoryPoint",
    "ConfigReportRow",
    "BundleEvent",
    "ActionRow",
    "RolloutRow",
    "RolloutSiteRow",
    "Registry",
    "SqliteRegistry",
    "site_state",
]

STALE_FACTOR = 3.0
HISTORY_ROWS = 720

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '', details TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS operators (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS operator_tokens (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
    expires_at REAL NOT NULL
);
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


class ActionRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    ts: float
    actor: str
    action: str
    target: str
    details: dict[str, Any]


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


class Registry(Protocol):
    """What the fleet services and the console need from a registry (a server database may
    implement it later)."""

    def ingest_heartbeats(self, beats: Sequence[tuple[Heartbeat, float]]) -> int: ...
    def add_config_reports(self, reports: Sequence[tuple[ConfigReport, float]]) -> None: ...
    def add_bundle_reports(self, reports: Sequence[tuple[BundleReport, float]]) -> None: ...
    def register_site(self, site_id: str, by: str = "operator") -> bool: ...
    def set_desired(
        self, site_ids: Sequence[str], *, config: int | None = None, bundle: str | None = None
    ) -> None: ...
    def sites(self, now: float | None = None) -> list[SiteRow]: ...
    def site(self, site_id: str, now: float | None = None) -> SiteRow: ...
    def heartbeat(self, site_id: str) -> Heartbeat | None: ...
    def history(self, site_id: str, limit: int = HISTORY_ROWS) -> list[HistoryPoint]: ...
    def config_reports(self, site_id: str, limit: int = 20) -> list[ConfigReportRow]: ...
    def bundle_events(self, site_id: str, limit: int = 50) -> list[BundleEvent]: ...
    def record_action(
        self, actor: str, action: str, target: str = "", details: dict[str, Any] | None = None
    ) -> None: ...
    def actions(self, limit: int = 100, target: str | None = None) -> list[ActionRow]: ...
    def create_rollout(
        self,
        rollout_id: str,
        bundle_version: str,
        waves: Sequence[Sequence[tuple[str, str | None]]],
        *,
        canary_percent: float,
        soak_s: float,
        guards: dict[str, float],
        created_by: str,
    ) -> None: ...
    def update_rollout(
        self,
        rollout_id: str,
        *,
        state: str | None = None,
        current_wave: int | None = None,
        message: str | None = None,
    ) -> None: ...
    def update_rollout_site(
        self,
        rollout_id: str,
        site_id: str,
        *,
        status: str,
        message: str = "",
        healthy_since: float | None = None,
    ) -> None: ...
    def rollout(self, rollout_id: str) -> RolloutRow: ...
    def rollouts(
        self, states: Sequence[str] | None = None, limit: int = 50
    ) -> list[RolloutRow]: ...
    def put_operator(self, username: str, password_hash: str) -> None: ...
    def operator_hash(self, username: str) -> str | None: ...
    def add_token(self, token_hash: str, name: str) -> None: ...
    def token_name(self, token_hash: str) -> str | None: ...
    def add_session(self, token_hash: str, username: str, csrf: str, expires_at: float) -> None: ...
    def session(self, token_hash: str) -> tuple[str, str] | None: ...
    def drop_session(self, token_hash: str) -> None: ...
    def close(self) -> None: ...


class SqliteRegistry:
    """SQLite registry (file ``DATA_DIR/fleet.db``): one writer connection and one reader
    connection (WAL lets readers run while a batch commits), each behind its own lock."""

    FILENAME = "fleet.db"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wconn = self._connect()
        self._wconn.executescript(_SCHEMA)
        self._rconn = self._connect()
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    @classmethod
    def open(cls, data_dir: str | Path) -> SqliteRegistry:
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / cls.FILENAME)

    def close(self) -> None:
        with self._wlock:
            self._wconn.close()
        with self._rlock:
            self._rconn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._wlock:
            self._wconn.execute("BEGIN IMMEDIATE")
            try:
                yield self._wconn
            except BaseException:
                self._wconn.execute("ROLLBACK")
                raise
            self._wconn.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._rlock:
            return self._rconn.execute(sql, args).fetchall()

    # ----- heartbeats ------------------------------------------------------------------------

    def ingest_heartbeats(self, beats: Sequence[tuple[Heartbeat, float]]) -> int:
        """Upsert each site's latest heartbeat and append history, in one transaction.
        Sites seen for the first time register themselves (``registered_by = auto``)."""
        if not beats:
            return 0
        site_rows = []
        history = []
        for hb, received in beats:
            site_rows.append(
                (
                    hb.site_id,
                    received,
                    received,
                    hb.interval_s,
                    encode(hb).decode(),
                    hb.bundle_version,
                    hb.bundle_status,
                    hb.config_version_applied,
                    hb.config_error,
                    received,
                )
            )
            d = hb.decisions
            history.append(
                (
                    hb.site_id,
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
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO sites(site_id, registered_by, first_seen, last_seen, interval_s, "
                "heartbeat, bundle_version, bundle_status, config_applied, config_error, "
                "created_at) VALUES (?, 'auto', ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(site_id) DO UPDATE SET "
                "first_seen = coalesce(sites.first_seen, excluded.first_seen), "
                "last_seen = max(coalesce(sites.last_seen, 0), excluded.last_seen), "
                "interval_s = excluded.interval_s, heartbeat = excluded.heartbeat, "
                "bundle_version = excluded.bundle_version, "
                "bundle_status = excluded.bundle_status, "
                "config_applied = excluded.config_applied, "
                "config_error = excluded.config_error",
                site_rows,
            )
            conn.executemany(
                "INSERT INTO heartbeats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                history,
            )
            for site_id in {hb.site_id for hb, _ in beats}:
                conn.execute(
                    "DELETE FROM heartbeats WHERE site_id = ? AND ts < ("
                    "SELECT ts FROM heartbeats WHERE site_id = ? ORDER BY ts DESC "
                    "LIMIT 1 OFFSET ?)",
                    (site_id, site_id, HISTORY_ROWS - 1),
                )
        return len(beats)

    def add_config_reports(self, reports: Sequence[tuple[ConfigReport, float]]) -> None:
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO config_reports(site_id, version, status, error, ts) "
                "VALUES (?, ?, ?, ?, ?)",
                [(r.site, r.version, r.status, r.error, ts) for r, ts in reports],
            )
            for r, _ in reports:
                if r.status == "applied":
                    conn.execute(
                        "UPDATE sites SET config_applied = max(config_applied, ?), "
                        "config_error = NULL WHERE site_id = ?",
                        (r.version, r.site),
                    )
                else:
                    conn.execute(
                        "UPDATE sites SET config_error = ? WHERE site_id = ?",
                        (r.error or "rejected", r.site),
                    )

    def add_bundle_reports(self, reports: Sequence[tuple[BundleReport, float]]) -> None:
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO bundle_events(site_id, bundle_version, status, message, ts) "
                "VALUES (?, ?, ?, ?, ?)",
                [(r.site, r.bundle_version, r.status, r.message, ts) for r, ts in reports],
            )

    # ----- sites -----------------------------------------------------------------------------

    def register_site(self, site_id: str, by: str = "operator") -> bool:
        """Pre-register a site; False if it was already known."""
        validate_site(site_id)
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO sites(site_id, registered_by, created_at) VALUES (?, ?, ?)",
                (site_id, by, time.time()),
            )
            return cur.rowcount == 1

    def set_desired(
        self, site_ids: Sequence[str], *, config: int | None = None, bundle: str | None = None
    ) -> None:
        now = time.time()
        with self._tx() as conn:
            for site_id in site_ids:
                conn.execute(
                    "INSERT OR IGNORE INTO sites(site_id, registered_by, created_at) "
                    "VALUES (?, 'operator', ?)",
                    (site_id, now),
                )
                if config is not None:
                    conn.execute(
                        "UPDATE sites SET config_desired = ? WHERE site_id = ?", (config, site_id)
                    )
                if bundle is not None:
                    conn.execute(
                        "UPDATE sites SET bundle_desired = ? WHERE site_id = ?", (bundle, site_id)
                    )

    _SITE_COLS = (
        "site_id, registered_by, first_seen, last_seen, interval_s, heartbeat, bundle_version, "
        "bundle_status, bundle_desired, config_desired, config_applied, config_error"
    )
    _hb_decoder = msgspec.json.Decoder(Heartbeat)

    def _site_row(self, r: tuple[Any, ...], now: float) -> SiteRow:
        state, age = site_state(r[3], r[4], now)
        hb = self._hb_decoder.decode(r[5]) if r[5] else None
        degraded = r[7] not in (None, "ok", "pending") or r[11] is not None
        health = "stale" if state == "offline" else ("degraded" if degraded else "healthy")
        return SiteRow(
            site_id=r[0],
            state=state,
            last_seen_age_s=None if age is None else round(age, 1),
            bundle_version=r[6],
            registered_by=r[1],
            health=health,
            bundle_status=r[7],
            bundle_desired=r[8],
            config_desired=r[9],
            config_applied=r[10],
            config_error=r[11],
            agent_version=hb.agent_version if hb else None,
            provider=hb.provider if hb else None,
            link_state=hb.link_state if hb else None,
            request_rate=hb.request_rate if hb else None,
            p50_ms=hb.p50_ms if hb else None,
            p99_ms=hb.p99_ms if hb else None,
            outbox_depth=hb.outbox_depth if hb else None,
            first_seen=r[2],
            last_seen=r[3],
            interval_s=r[4],
        )

    def sites(self, now: float | None = None) -> list[SiteRow]:
        now = time.time() if now is None else now
        rows = self._read(f"SELECT {self._SITE_COLS} FROM sites ORDER BY site_id")
        return [self._site_row(r, now) for r in rows]

    def site(self, site_id: str, now: float | None = None) -> SiteRow:
        now = time.time() if now is None else now
        rows = self._read(f"SELECT {self._SITE_COLS} FROM sites WHERE site_id = ?", (site_id,))
        if not rows:
            raise NotFound(f"site {site_id!r} is not registered")
        return self._site_row(rows[0], now)

    def heartbeat(self, site_id: str) -> Heartbeat | None:
        rows = self._read("SELECT heartbeat FROM sites WHERE site_id = ?", (site_id,))
        if not rows or not rows[0][0]:
            return None
        return self._hb_decoder.decode(rows[0][0])

    def history(self, site_id: str, limit: int = HISTORY_ROWS) -> list[HistoryPoint]:
        rows = self._read(
            "SELECT ts, p50_ms, p99_ms, request_rate, error_rate, local, escalate, refuse, "
            "outbox_depth, job_backlog, cpu, mem, bundle_version FROM heartbeats "
            "WHERE site_id = ? ORDER BY ts DESC LIMIT ?",
            (site_id, limit),
        )
        return [HistoryPoint(*r) for r in reversed(rows)]

    def config_reports(self, site_id: str, limit: int = 20) -> list[ConfigReportRow]:
        rows = self._read(
            "SELECT site_id, version, status, error, ts FROM config_reports WHERE site_id = ? "
            "ORDER BY id DESC LIMIT ?",
            (site_id, limit),
        )
        return [
            ConfigReportRow(site_id=r[0], version=r[1], status=r[2], error=r[3], ts=r[4])
            for r in rows
        ]

    def bundle_events(self, site_id: str, limit: int = 50) -> list[BundleEvent]:
        rows = self._read(
            "SELECT site_id, bundle_version, status, message, ts FROM bundle_events "
            "WHERE site_id = ? ORDER BY id DESC LIMIT ?",
            (site_id, limit),
        )
        return [
            BundleEvent(site_id=r[0], bundle_version=r[1], status=r[2], message=r[3], ts=r[4])
            for r in rows
        ]

    # ----- operator action audit -------------------------------------------------------------

    def record_action(
        self, actor: str, action: str, target: str = "", details: dict[str, Any] | None = None
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO actions(ts, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
                (time.time(), actor, action, target, msgspec.json.encode(details or {}).decode()),
            )

    def actions(self, limit: int = 100, target: str | None = None) -> list[ActionRow]:
        sql = "SELECT id, ts, actor, action, target, details FROM actions"
        args: list[Any] = []
        if target is not None:
            sql += " WHERE target = ?"
            args.append(target)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [
            ActionRow(
                id=r[0],
                ts=r[1],
                actor=r[2],
                action=r[3],
                target=r[4],
                details=msgspec.json.decode(r[5]),
            )
            for r in self._read(sql, args)
        ]

    # ----- rollouts --------------------------------------------------------------------------

    def create_rollout(
        self,
        rollout_id: str,
        bundle_version: str,
        waves: Sequence[Sequence[tuple[str, str | None]]],
        *,
        canary_percent: float,
        soak_s: float,
        guards: dict[str, float],
        created_by: str,
    ) -> None:
        now = time.time()
        with self._tx() as conn:
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

    def update_rollout(
        self,
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
        with self._tx() as conn:
            conn.execute(f"UPDATE rollouts SET {', '.join(sets)} WHERE id = ?", [*args, rollout_id])

    def update_rollout_site(
        self,
        rollout_id: str,
        site_id: str,
        *,
        status: str,
        message: str = "",
        healthy_since: float | None = None,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE rollout_sites SET status = ?, message = ?, healthy_since = ?, "
                "updated_at = ? WHERE rollout_id = ? AND site_id = ?",
                (status, message, healthy_since, time.time(), rollout_id, site_id),
            )

    def _rollout_from(self, r: tuple[Any, ...], with_sites: bool) -> RolloutRow:
        sites: list[RolloutSiteRow] = []
        if with_sites:
            sites = [
                RolloutSiteRow(
                    site_id=s[0],
                    wave=s[1],
                    status=s[2],
                    previous_bundle=s[3],
                    healthy_since=s[4],
                    message=s[5],
                    updated_at=s[6],
                )
                for s in self._read(
                    "SELECT site_id, wave, status, previous_bundle, healthy_since, message, "
                    "updated_at FROM rollout_sites WHERE rollout_id = ? ORDER BY wave, site_id",
                    (r[0],),
                )
            ]
        return RolloutRow(
            id=r[0],
            bundle_version=r[1],
            state=r[2],
            current_wave=r[3],
            canary_percent=r[4],
            soak_s=r[5],
            guards=msgspec.json.decode(r[6]),
            created_by=r[7],
            created_at=r[8],
            updated_at=r[9],
            message=r[10],
            sites=sites,
        )

    _ROLLOUT_COLS = (
        "id, bundle_version, state, current_wave, canary_percent, soak_s, guards, created_by, "
        "created_at, updated_at, message"
    )

    def rollout(self, rollout_id: str) -> RolloutRow:
        rows = self._read(f"SELECT {self._ROLLOUT_COLS} FROM rollouts WHERE id = ?", (rollout_id,))
        if not rows:
            raise NotFound(f"rollout {rollout_id!r} does not exist")
        return self._rollout_from(rows[0], True)

    def rollouts(self, states: Sequence[str] | None = None, limit: int = 50) -> list[RolloutRow]:
        sql = f"SELECT {self._ROLLOUT_COLS} FROM rollouts"
        args: list[Any] = []
        if states:
            sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
            args.extend(states)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [self._rollout_from(r, True) for r in self._read(sql, args)]

    # ----- operators, tokens, sessions -------------------------------------------------------

    def put_operator(self, username: str, password_hash: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO operators(username, password_hash, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash",
                (username, password_hash, time.time()),
            )

    def operator_hash(self, username: str) -> str | None:
        rows = self._read("SELECT password_hash FROM operators WHERE username = ?", (username,))
        return rows[0][0] if rows else None

    def add_token(self, token_hash: str, name: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO operator_tokens(token_hash, name, created_at) VALUES (?, ?, ?)",
                (token_hash, name, time.time()),
            )

    def token_name(self, token_hash: str) -> str | None:
        rows = self._read("SELECT name FROM operator_tokens WHERE token_hash = ?", (token_hash,))
        return rows[0][0] if rows else None

    def add_session(self, token_hash: str, username: str, csrf: str, expires_at: float) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", (time.time(),))
            conn.execute(
                "INSERT INTO sessions(token_hash, username, csrf, expires_at) VALUES (?, ?, ?, ?)",
                (token_hash, username, csrf, expires_at),
            )

    def session(self, token_hash: str) -> tuple[str, str] | None:
        rows = self._read(
            "SELECT username, csrf FROM sessions WHERE token_hash = ? AND expires_at > ?",
            (token_hash, time.time()),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def drop_session(self, token_hash: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
