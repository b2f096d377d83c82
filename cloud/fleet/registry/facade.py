"""`Registry`: the registry's operations (what the fleet services, the console and the CLI
call), each one transaction or one read on an `Engine`, delegated to the table modules."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from aivos.cloud.db import Conn, Engine
from aivos.cloud.fleet.registry import actions as _actions
from aivos.cloud.fleet.registry import heartbeats as _heartbeats
from aivos.cloud.fleet.registry import operators as _operators
from aivos.cloud.fleet.registry import overview as _overview
from aivos.cloud.fleet.registry import reports as _reports
from aivos.cloud.fleet.registry import rollouts as _rollouts
from aivos.cloud.fleet.registry import rollouts_query as _rollouts_query
from aivos.cloud.fleet.registry import rollouts_tick as _rollouts_tick
from aivos.cloud.fleet.registry import sites as _sites
from aivos.cloud.fleet.registry.actions import ActionRow
from aivos.cloud.fleet.registry.overview import SiteFilter, SiteOverview
from aivos.cloud.fleet.registry.reports import BundleEvent, ConfigReportRow
from aivos.cloud.fleet.registry.rollouts import RolloutRow, SiteChange
from aivos.cloud.fleet.registry.rollouts_query import (
    ROLLOUT_PAGE_SIZE,
    RolloutSummary,
    RolloutView,
)
from aivos.cloud.fleet.registry.rollouts_tick import MovingSite, WaveState
from aivos.cloud.fleet.registry.sites import HISTORY_ROWS, HistoryPoint, SiteRow
from aivos.shared.fleet import BundleReport, ConfigReport, Heartbeat
from aivos.shared.sqlite import Closing

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Closing):
    """The fleet registry on one `Engine` (SQLite file or PostgreSQL database); open it
    with `SqliteRegistry.open`, `PostgresRegistry.open` or `open_registry`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.close()

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        with self.engine.tx() as conn:
            yield conn

    def _read(self, fn: Callable[[Conn], T]) -> T:
        return self.engine.read(fn)

    # -- heartbeats and reports (the ingest) ---------------------------------------------------

    def ingest_heartbeats(self, beats: Sequence[tuple[Heartbeat, float]]) -> int:
        """Upsert each site's latest heartbeat and append history, in one transaction (a
        batch: what the ingest gathered in its flush interval). Sites seen for the first
        time register themselves (``registered_by = auto``)."""
        if not beats:
            return 0
        with self._tx() as conn:
            _heartbeats.write_heartbeats(conn, self.engine.dialect, beats)
        return len(beats)

    def add_config_reports(self, reports: Sequence[tuple[ConfigReport, float]]) -> None:
        with self._tx() as conn:
            _reports.add_config_reports(conn, reports)
            _sites.apply_config_reports(conn, reports)

    def add_bundle_reports(self, reports: Sequence[tuple[BundleReport, float]]) -> None:
        with self._tx() as conn:
            _reports.add_bundle_reports(conn, reports)

    # -- sites -----------------------------------------------------------------------------

    def register_site(self, site_id: str, by: str = "operator") -> bool:
        """Pre-register a site; False if it was already known."""
        with self._tx() as conn:
            return _sites.register(conn, site_id, by)

    def set_desired(
        self, site_ids: Sequence[str], *, config: int | None = None, bundle: str | None = None
    ) -> None:
        with self._tx() as conn:
            _sites.set_desired(conn, site_ids, config=config, bundle=bundle)

    def sites(self, now: float | None = None) -> list[SiteRow]:
        at = time.time() if now is None else now
        return self._read(lambda c: _sites.list_all(c, at))

    def overview(
        self,
        flt: SiteFilter | None = None,
        *,
        sort: str = "site",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        now: float | None = None,
    ) -> SiteOverview:
        """Counts by state over the fleet and one page of the sites `flt` matches (all of
        them when `limit` is None), sorted by `sort` (`overview.SORTS`), in one read."""
        at = time.time() if now is None else now
        return self._read(
            lambda c: _overview.read(
                c,
                at,
                flt or SiteFilter(),
                sort=sort,
                descending=descending,
                limit=limit,
                offset=offset,
            )
        )

    def site_bundles(self, site_ids: Sequence[str] | None = None) -> dict[str, str | None]:
        """{site: the bundle it runs} of the registered sites among `site_ids` (None: all),
        in site order; a site not registered is left out."""
        return self._read(lambda c: _sites.bundles(c, site_ids))

    def bundle_counts(self, site_ids: Sequence[str] | None = None) -> list[tuple[str, int]]:
        """(bundle version, sites running it), most run first; over `site_ids` (None: all)."""
        return self._read(lambda c: _overview.bundle_counts(c, site_ids))

    def site(self, site_id: str, now: float | None = None) -> SiteRow:
        at = time.time() if now is None else now
        return self._read(lambda c: _sites.get(c, site_id, at))

    def heartbeat(self, site_id: str) -> Heartbeat | None:
        return self._read(lambda c: _sites.heartbeat(c, site_id))

    def history(self, site_id: str, limit: int = HISTORY_ROWS) -> list[HistoryPoint]:
        return self._read(lambda c: _sites.history(c, site_id, limit))

    def config_reports(self, site_id: str, limit: int = 20) -> list[ConfigReportRow]:
        return self._read(lambda c: _reports.config_reports(c, site_id, limit))

    def bundle_events(self, site_id: str, limit: int = 50) -> list[BundleEvent]:
        return self._read(lambda c: _reports.bundle_events(c, site_id, limit))

    # -- operator action audit -------------------------------------------------------------

    def record_action(
        self, actor: str, action: str, target: str = "", details: dict[str, Any] | None = None
    ) -> None:
        with self._tx() as conn:
            _actions.record(conn, actor, action, target, details)

    def actions(self, limit: int = 100, target: str | None = None) -> list[ActionRow]:
        return self._read(lambda c: _actions.list_recent(c, limit, target))

    # -- rollouts --------------------------------------------------------------------------

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
        with self._tx() as conn:
            _rollouts.create(
                conn,
                rollout_id,
                bundle_version,
                waves,
                canary_percent=canary_percent,
                soak_s=soak_s,
                guards=guards,
                created_by=created_by,
            )

    def update_rollout(
        self,
        rollout_id: str,
        *,
        state: str | None = None,
        current_wave: int | None = None,
        message: str | None = None,
    ) -> None:
        with self._tx() as conn:
            _rollouts.update(
                conn, rollout_id, state=state, current_wave=current_wave, message=message
            )

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
            _rollouts.update_site(
                conn,
                rollout_id,
                site_id,
                status=status,
                message=message,
                healthy_since=healthy_since,
            )

    def rollout(self, rollout_id: str) -> RolloutRow:
        return self._read(lambda c: _rollouts.get(c, rollout_id))

    def rollouts(self, states: Sequence[str] | None = None, limit: int = 50) -> list[RolloutRow]:
        """The newest `limit` rollouts (only those in `states` when given), each with every
        one of its sites; `rollout_summaries` counts the sites instead."""
        return self._read(lambda c: _rollouts.list_recent(c, states, limit))

    def rollout_summaries(self, limit: int = 50) -> list[RolloutSummary]:
        """The newest `limit` rollouts with their sites counted per wave and status, in SQL
        (no site rows)."""
        return self._read(lambda c: _rollouts_query.summaries(c, limit))

    def rollout_view(
        self, rollout_id: str, *, status: str = "", page: int = 1, size: int = ROLLOUT_PAGE_SIZE
    ) -> RolloutView:
        """One rollout without its sites, its per-wave counts, and one page of `size` of its
        sites (problems first; only `status` ones when given). `NotFound` if unknown."""
        return self._read(
            lambda c: _rollouts_query.view(c, rollout_id, status=status, page=page, size=size)
        )

    def site_rollouts(self, site_id: str, limit: int = 20) -> list[RolloutRow]:
        """The newest `limit` rollouts that targeted `site_id`, without their site rows."""
        return self._read(lambda c: _rollouts_query.for_site(c, site_id, limit))

    def busy_sites(self, states: Sequence[str], site_ids: Sequence[str] | None = None) -> set[str]:
        """The sites among `site_ids` (None: any) in a rollout whose state is in `states`."""
        return self._read(lambda c: _rollouts_query.busy_sites(c, states, site_ids))

    # -- the rollout controller's tick (only what moves; `rollouts_tick`) ------------------

    def running_rollouts(self, limit: int = 50) -> list[RolloutRow]:
        """The newest `limit` running rollouts, without their site rows."""
        return self._read(lambda c: _rollouts_tick.running(c, limit))

    def rollout_moves(
        self, rollout: RolloutRow, now: float, failed_statuses: Collection[str]
    ) -> list[MovingSite]:
        """The sites of `rollout`'s current wave whose state may move at `now`, in site
        order (pending, failed, and deploying/healthy ones whose heartbeat or bundle
        events say they changed), each with its latest heartbeat; never the others."""
        return self._read(lambda c: _rollouts_tick.moves(c, rollout, now, failed_statuses))

    def rollout_wave_state(self, rollout_id: str, wave: int) -> WaveState:
        """One wave's sites not yet healthy, and the newest ``healthy_since`` of the rest."""
        return self._read(lambda c: _rollouts_tick.wave_state(c, rollout_id, wave))

    def update_rollout_sites(self, rollout_id: str, changes: Sequence[SiteChange]) -> None:
        """Several sites' `update_rollout_site`, in one transaction."""
        if changes:
            with self._tx() as conn:
                _rollouts.update_sites(conn, rollout_id, changes)

    def deploy_rollout_sites(self, rollout_id: str, bundle: str, configs: dict[str, int]) -> None:
        """Sites whose desired config (version per site) now names `bundle`: their desired
        bundle and config recorded, their rollout status ``deploying``, in one transaction."""
        if not configs:
            return
        with self._tx() as conn:
            for site_id, version in sorted(configs.items()):
                _sites.set_desired(conn, [site_id], config=version, bundle=bundle)
            _rollouts.update_sites(
                conn, rollout_id, [SiteChange(site_id=s, status="deploying") for s in configs]
            )

    def rollout_last_wave(self, rollout_id: str) -> int | None:
        return self._read(lambda c: _rollouts_tick.last_wave(c, rollout_id))

    # -- operators, tokens, sessions -------------------------------------------------------

    def put_operator(self, username: str, password_hash: str, role: str | None = None) -> None:
        with self._tx() as conn:
            _operators.put_operator(conn, username, password_hash, role)

    def operator_hash(self, username: str) -> str | None:
        return self._read(lambda c: _operators.operator_hash(c, username))

    def add_token(
        self, token_hash: str, name: str, role: str = "admin", expires_at: float | None = None
    ) -> None:
        """Store an API token's hash (default expiry `operators.DEFAULT_TOKEN_TTL_S`)."""
        with self._tx() as conn:
            _operators.add_token(conn, token_hash, name, role, expires_at)

    def token_name(self, token_hash: str) -> str | None:
        return self._read(lambda c: _operators.token_name(c, token_hash))

    def token_info(self, token_hash: str) -> tuple[str, str] | None:
        """(name, role) of a token that is neither expired nor revoked."""
        return self._read(lambda c: _operators.token_info(c, token_hash))

    def revoke_tokens(self, name: str) -> int:
        with self._tx() as conn:
            return _operators.revoke_tokens(conn, name)

    def add_session(self, token_hash: str, username: str, csrf: str, expires_at: float) -> None:
        with self._tx() as conn:
            _operators.add_session(conn, token_hash, username, csrf, expires_at)

    def session(self, token_hash: str) -> tuple[str, str, str] | None:
        return self._read(lambda c: _operators.session(c, token_hash))

    def drop_session(self, token_hash: str) -> None:
        with self._tx() as conn:
            _operators.drop_session(conn, token_hash)
