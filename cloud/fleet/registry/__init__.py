"""The fleet registry: sites, heartbeat history, config and bundle reports, rollouts,
operators and the operator action audit: one SQLite file (``DATA_DIR/fleet.db``, WAL) by
default, or a PostgreSQL database shared by several console replicas.

`Registry` (`facade`) is what the fleet services, the console and the CLI use, the same on
both engines (`SqliteRegistry`, `PostgresRegistry`, or `open_registry(db, data_dir)`); each
group of tables lives in its own module, which owns its SQL and its row types:

    sites      ``sites``, ``heartbeats``: registration, desired state, the derived
               online/offline state (`site_state`, `STALE_FACTOR`), history
    heartbeats the heartbeat write (a batch: COPY on PostgreSQL, executemany on SQLite)
    overview   counts by state and by bundle, one page of sites, in SQL (`SiteOverview`)
    reports    ``config_reports``, ``bundle_events``
    rollouts   ``rollouts``, ``rollout_sites``
    rollouts_query  per-wave counts, one page of a rollout's sites, busy sites, in SQL
    rollouts_tick   the rollout controller's reads: only the sites a tick must move
    actions    ``actions`` (operator action audit)
    operators  ``operators``, ``operator_tokens``, ``sessions``

Open with `SqliteRegistry.open(data_dir)` (or `open_registry`), close with `close()`, or use
it as a context manager (`with SqliteRegistry.open(data_dir) as registry:`). The schema is
the recorded migrations `MIGRATIONS` (`aivos.cloud.db.migrations`), applied on open.
"""

from __future__ import annotations

from pathlib import Path

from aivos.cloud.db import Conn, Migration, SqliteEngine, apply_migrations, open_engine
from aivos.cloud.db.migrations import pg_ddl
from aivos.cloud.fleet.registry import actions as _actions
from aivos.cloud.fleet.registry import operators as _operators
from aivos.cloud.fleet.registry import overview as _overview
from aivos.cloud.fleet.registry import reports as _reports
from aivos.cloud.fleet.registry import rollouts as _rollouts
from aivos.cloud.fleet.registry import rollouts_tick as _rollouts_tick
from aivos.cloud.fleet.registry import sites as _sites
from aivos.cloud.fleet.registry.actions import ActionRow
from aivos.cloud.fleet.registry.facade import Registry
from aivos.cloud.fleet.registry.overview import SORTS, SiteCounts, SiteFilter, SiteOverview
from aivos.cloud.fleet.registry.reports import BundleEvent, ConfigReportRow
from aivos.cloud.fleet.registry.rollouts import RolloutRow, RolloutSiteRow, SiteChange
from aivos.cloud.fleet.registry.rollouts_query import (
    ROLLOUT_PAGE_SIZE,
    RolloutSummary,
    RolloutView,
    WaveCount,
)
from aivos.cloud.fleet.registry.rollouts_tick import MovingSite, WaveState
from aivos.cloud.fleet.registry.sites import (
    HISTORY_ROWS,
    STALE_FACTOR,
    HistoryPoint,
    SiteRow,
    site_state,
)

__all__ = [
    "STALE_FACTOR",
    "HISTORY_ROWS",
    "MIGRATIONS",
    "SORTS",
    "SiteCounts",
    "SiteFilter",
    "SiteOverview",
    "SiteRow",
    "HistoryPoint",
    "ConfigReportRow",
    "BundleEvent",
    "ActionRow",
    "ROLLOUT_PAGE_SIZE",
    "RolloutRow",
    "RolloutSiteRow",
    "SiteChange",
    "RolloutSummary",
    "RolloutView",
    "WaveCount",
    "MovingSite",
    "WaveState",
    "Registry",
    "PostgresRegistry",
    "SqliteRegistry",
    "open_registry",
    "site_state",
]

# Table order as the registry has always created them.
_SCHEMA = "".join(m.SCHEMA for m in (_sites, _reports, _rollouts, _actions, _operators))


def _operator_columns(conn: Conn) -> None:
    _operators.migrate(conn)


MIGRATIONS = [
    # CREATE ... IF NOT EXISTS: a file from before recorded migrations keeps its tables
    Migration("registry_0001_tables", _SCHEMA, pg_ddl(_SCHEMA)),
    # tables created before roles and expiry get the columns (PostgreSQL never lacked them)
    Migration("registry_0002_operator_roles_expiry", _operator_columns, ""),
    # the state deadline and the sort/sum columns of the overview, backfilled, and its indexes
    Migration("registry_0003_site_overview", _overview.migrate_sqlite, _overview.MIGRATION_PG),
    # the rollout tick reads only the sites that move: sites.error_rate (backfilled) for its
    # guard, and indexes on rollout_sites (site_id; rollout_id, wave, status)
    Migration(
        "registry_0004_rollout_tick", _rollouts_tick.migrate_sqlite, _rollouts_tick.MIGRATION_PG
    ),
]


class SqliteRegistry(Registry):
    """The registry in one SQLite file (``DATA_DIR/fleet.db``). It is a dashboard's state,
    rebuilt by the next heartbeats: it commits with ``synchronous=NORMAL`` (a power cut may
    lose the last commits, never the file)."""

    FILENAME = "fleet.db"

    def __init__(self, path: Path) -> None:
        self.path = path
        engine = SqliteEngine(path, synchronous="NORMAL")
        try:
            apply_migrations(engine, MIGRATIONS)
        except BaseException:
            engine.close()
            raise
        super().__init__(engine)

    @classmethod
    def open(cls, data_dir: str | Path) -> SqliteRegistry:
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / cls.FILENAME)


class PostgresRegistry(Registry):
    """The registry in a PostgreSQL database (a `postgresql://` URL), through a pool."""

    def __init__(self, url: str, *, pool_max: int = 4) -> None:
        engine = open_engine(url, Path(), pool_max=pool_max, name="aivos-fleet")
        try:
            apply_migrations(engine, MIGRATIONS)
        except BaseException:
            engine.close()
            raise
        super().__init__(engine)

    @classmethod
    def open(cls, url: str) -> PostgresRegistry:
        return cls(url)


def open_registry(db: str | None, data_dir: str | Path) -> Registry:
    """PostgreSQL when `db` is a ``postgresql://`` URL (``--db``, ``$AIVOS_CLOUD_DB``), else
    the SQLite file in `data_dir`."""
    return PostgresRegistry.open(db) if db else SqliteRegistry.open(data_dir)
