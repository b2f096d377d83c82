"""The console's JSON API: the same data as the pages (operator token or session)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.params import Body, Parameter
from msgspec import UNSET, Meta, UnsetType

from aivos.cloud.console.actions import ROLLOUT_ACTIONS, begin_rollout, rollout_action, set_config
from aivos.cloud.console.auth import Operator, api_guard
from aivos.cloud.console.errors import http_error
from aivos.cloud.console.gate import GateIn
from aivos.cloud.console.queries import AuditHit, AuditQuery, FleetQuery, overview, search_audit
from aivos.cloud.console.views import RegistryDep, site_detail
from aivos.cloud.fleet.quality_gate import QualityGateFailed
from aivos.cloud.fleet.registry import ActionRow, RolloutRow, SiteRow
from aivos.cloud.fleet.service import FleetService
from aivos.shared.errors import ConfigError, Conflict, NotFound

__all__ = ["ApiController", "ConfigIn", "GuardsIn", "RolloutIn"]

# what `shared.fleet.validate_bundle_version` accepts: 1-128 characters, not starting with
# '.', none of / \ space tab newline * >
BundleVersion = Annotated[
    str, Meta(min_length=1, max_length=128, pattern=r"^[^./\\ \t\n*>][^/\\ \t\n*>]*$")
]
# a site id (`shared.subjects.validate_site`) or `_defaults`, the fleet-wide config
ConfigTarget = Annotated[str, Parameter(pattern=r"^(_defaults|[a-z0-9][a-z0-9_-]{0,62})$")]


# a site id as `shared.subjects.validate_site` accepts it
SiteId = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class GuardsIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The health guards a site must stay within on the new bundle (unset: the defaults,
    `rollout.DEFAULT_GUARDS`)."""

    max_error_rate: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    max_p99_ms: Annotated[float, Meta(gt=0, le=600_000)] | UnsetType = UNSET


class RolloutIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bundle_version: BundleVersion
    # None = every registered site
    sites: Annotated[list[SiteId], Meta(min_length=1, max_length=100_000)] | None = None
    canary_percent: Annotated[float, Meta(gt=0, le=100)] = 10.0
    soak_s: Annotated[float, Meta(ge=0, le=7 * 86400)] = 60.0
    guards: GuardsIn | None = None
    # the quality gate the bundle must pass first (`console.gate`); None: no gate
    gate: GateIn | None = None


class ConflictException(HTTPException):
    """409: what the fleet is in does not allow the rollout (a site busy in another
    rollout, no site to roll to, the bundle failed the quality gate)."""

    status_code = 409


class ConfigIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A partial desired config: the keys of `shared.fleet.SiteConfig` an operator sets
    (`version` is stamped by the store). A key left out stays as stored."""

    router: dict[str, Any] | UnsetType = UNSET
    thresholds: dict[str, float] | UnsetType = UNSET
    residency: dict[str, Any] | UnsetType = UNSET
    bundle_version: str | None | UnsetType = UNSET
    heartbeat_interval_s: float | UnsetType = UNSET


# Litestar does not document `forbid_unknown_fields`; these bodies refuse unknown keys
_Closed = Body(schema_extra={"additionalProperties": False})


class ConfigOut(msgspec.Struct, frozen=True):
    site: str
    version: int


class ApiController(Controller):
    path = "/api"
    guards = [api_guard]

    @get("/sites")
    async def sites(
        self,
        request: Request[Any, Any, Any],
        registry: RegistryDep,
        limit: Annotated[int, Parameter(ge=0)] | None = None,  # this form documents ge=0
        offset: Annotated[int, Parameter(ge=0)] = 0,
    ) -> list[SiteRow]:
        """Every site (or `limit` of them from `offset`): state online|offline,
        last_seen_age_s, bundle_version, health, ..."""
        if limit is not None and limit < 0:  # litestar drops the bound of an optional int
            raise ValidationException(f"limit must be >= 0, got {limit}")
        query = FleetQuery.from_params(request.query_params)
        view = await asyncio.to_thread(overview, registry, query, limit=limit, offset=offset)
        return view.sites

    @get("/ingest")
    async def ingest(self, fleet: FleetService) -> dict[str, Any]:
        """Heartbeat ingest counters (received, written, invalid, batches, lag)."""
        return msgspec.to_builtins(fleet.ingest.counters)  # type: ignore[no-any-return]

    @get("/overview")
    async def counts(self, registry: RegistryDep, fleet: FleetService) -> dict[str, Any]:
        """Site counts by state and health, revoked sites, misattributed sync records."""
        view = await asyncio.to_thread(overview, registry, FleetQuery(), fleet.data_dir, limit=0)
        return {
            "total": view.total,
            "counts": view.counts,
            "revoked": view.revoked,
            "misattributed": view.misattributed,
        }

    @get("/sites/{site_id:str}", raises=[NotFoundException])
    async def site(self, fleet: FleetService, site_id: str) -> dict[str, Any]:
        detail = await site_detail(fleet, site_id)
        return msgspec.to_builtins(detail)  # type: ignore[no-any-return]

    @put("/config/{target:str}")
    async def put_config(
        self,
        request: Request[Any, Any, Any],
        fleet: FleetService,
        target: ConfigTarget,
        data: Annotated[ConfigIn, _Closed],
    ) -> ConfigOut:
        """Desired config of a site, or of the fleet with target ``_defaults``."""
        op: Operator = request.state.operator
        site = None if target == "_defaults" else target
        version = await set_config(fleet, op.name, site, msgspec.to_builtins(data))
        return ConfigOut(site=target, version=version)

    @get("/rollouts")
    async def rollouts(self, registry: RegistryDep) -> list[RolloutRow]:
        """The newest 50 rollouts, each with all its sites (the pages count them instead:
        `Registry.rollout_summaries`); the sites of all of them are read in one query."""
        return await asyncio.to_thread(registry.rollouts)

    @get("/rollouts/{rollout_id:str}", raises=[NotFoundException])
    async def rollout(self, registry: RegistryDep, rollout_id: str) -> RolloutRow:
        return await asyncio.to_thread(registry.rollout, rollout_id)

    @post("/rollouts", raises=[NotFoundException, ConflictException])
    async def start(
        self,
        request: Request[Any, Any, Any],
        fleet: FleetService,
        data: Annotated[RolloutIn, _Closed],
    ) -> RolloutRow:
        """Start a staged rollout. 404: a named site, the bundle or baseline to gate, or
        the gate's data is unknown; 409: a site is in an active rollout, the fleet has no
        site, or the bundle failed the quality gate (``extra.reasons``)."""
        op: Operator = request.state.operator
        guards = msgspec.to_builtins(data.guards) if data.guards is not None else None
        try:
            rollout_id = await begin_rollout(
                fleet.registry,
                op.name,
                bundle_version=data.bundle_version,
                sites=data.sites,
                canary_percent=data.canary_percent,
                soak_s=data.soak_s,
                guards=guards,
                gate=data.gate,
                data_dir=fleet.data_dir,
            )
        except QualityGateFailed as exc:
            raise ConflictException(
                detail=str(exc), extra={"code": exc.code, "reasons": exc.reasons}
            ) from exc
        except (ConfigError, Conflict) as exc:  # the fleet's state, not the body, refuses
            raise http_error(exc, status=409) from exc
        except NotFound as exc:
            raise http_error(exc, status=404) from exc
        return await asyncio.to_thread(fleet.registry.rollout, rollout_id)

    @post("/rollouts/{rollout_id:str}/{action:str}", status_code=200, raises=[NotFoundException])
    async def act(
        self, request: Request[Any, Any, Any], fleet: FleetService, rollout_id: str, action: str
    ) -> RolloutRow:
        if action not in ROLLOUT_ACTIONS:
            raise NotFoundException(f"unknown action {action}")
        op: Operator = request.state.operator
        return await rollout_action(fleet, op.name, rollout_id, action)

    @get("/audit", opt={"role": "admin"})
    async def audit(self, request: Request[Any, Any, Any]) -> list[AuditHit]:
        query = AuditQuery.from_params(request.query_params, max_limit=5000)
        return await asyncio.to_thread(search_audit, request.app.state.cloud_store(), query)

    @get("/actions")
    async def actions(
        self, request: Request[Any, Any, Any], registry: RegistryDep
    ) -> list[ActionRow]:
        target = request.query_params.get("target") or None
        return await asyncio.to_thread(registry.actions, 300, target)
