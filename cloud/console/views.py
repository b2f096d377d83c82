"""The console's HTML pages (server-rendered Jinja templates, forms with CSRF tokens)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body, Dependency
from litestar.response import Redirect, Template

from aivos.cloud.console.actions import ROLLOUT_ACTIONS, begin_rollout, rollout_action, set_config
from aivos.cloud.console.auth import Operator, check_csrf, page_guard
from aivos.cloud.console.charts import line_chart
from aivos.cloud.console.gate import (
    GateIn,
    bundle_roots,
    gate_data_names,
    local_bundles,
)
from aivos.cloud.console.queries import (
    PAGE_SIZE,
    AuditQuery,
    FleetQuery,
    overview,
    search_audit,
)
from aivos.cloud.fleet.registry import ActionRow, Registry
from aivos.cloud.fleet.service import FleetService
from aivos.shared.errors import AivosError, InvalidInput

__all__ = ["PagesController", "RegistryDep", "site_detail"]

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
# a Protocol cannot be validated at run time: the provider is trusted
RegistryDep = Annotated[Registry, Dependency(skip_validation=True)]


def _ctx(request: Request[Any, Any, Any], nav: str, **extra: Any) -> dict[str, Any]:
    op: Operator = request.state.operator
    flash = request.query_params.get("flash", "")
    error = request.query_params.get("error", "")
    return {
        "operator": op.name,
        "csrf": op.csrf,
        "nav": nav,
        "flash": flash,
        "error": error,
        **extra,
    }


async def site_detail(fleet: FleetService, site_id: str) -> dict[str, Any]:
    reg = fleet.registry
    site = await asyncio.to_thread(reg.site, site_id)
    history = await asyncio.to_thread(reg.history, site_id)
    reports = await asyncio.to_thread(reg.config_reports, site_id)
    bundles = await asyncio.to_thread(reg.bundle_events, site_id)
    hb = await asyncio.to_thread(reg.heartbeat, site_id)
    desired: dict[str, Any] = {}
    effective: dict[str, Any] | None = None
    if fleet.config is not None:
        try:
            desired = await fleet.config.get_raw(site_id)
            effective = msgspec.to_builtins(await fleet.config.effective(site_id))
        except AivosError:
            effective = None
    return {
        "site": site,
        "heartbeat": hb,
        "history": history,
        "config_reports": reports,
        "bundle_events": bundles,
        "desired_override": desired,
        "desired_effective": effective,
    }


def _charts(history: list[Any]) -> list[Any]:
    ts = [p.ts for p in history]
    return [
        line_chart(
            "Latency",
            ts,
            {"p50": [p.p50_ms for p in history], "p99": [p.p99_ms for p in history]},
            unit="ms",
        ),
        line_chart(
            "Decision mix (per heartbeat window)",
            ts,
            {
                "local": [float(p.local) for p in history],
                "escalate": [float(p.escalate) for p in history],
                "refuse": [float(p.refuse) for p in history],
            },
        ),
        line_chart(
            "Outbox depth and job backlog",
            ts,
            {
                "outbox": [float(p.outbox_depth) for p in history],
                "jobs": [float(p.job_backlog) for p in history],
            },
        ),
        line_chart("Requests/s", ts, {"req/s": [p.request_rate for p in history]}),
        line_chart("Error rate", ts, {"errors": [100 * p.error_rate for p in history]}, unit="%"),
        line_chart(
            "Host",
            ts,
            {"cpu": [p.cpu for p in history], "mem": [p.mem for p in history]},
            unit="%",
        ),
    ]


def _bundle_changes(history: list[Any]) -> list[tuple[float, str]]:
    changes: list[tuple[float, str]] = []
    for p in history:
        if not changes or changes[-1][1] != p.bundle_version:
            changes.append((p.ts, p.bundle_version))
    return list(reversed(changes))


def _gate_form(data: dict[str, str]) -> GateIn | None:
    """The form's quality gate fields as a `GateIn` (None: no gate asked for); the same
    rules as the API's body."""
    fields = {
        key: data.get(f"gate_{key}", "").strip()
        for key in ("heldout", "baseline", "golden", "tolerance")
    }
    given = {k: v for k, v in fields.items() if v}
    if not given:
        return None
    if "heldout" not in given:
        raise InvalidInput("gate", "the quality gate needs a held-out set")
    if "tolerance" in given:  # typed as points: "1" or "1%" is one point
        given["tolerance"] = float(given["tolerance"].rstrip("%")) / 100  # type: ignore[assignment]
    try:
        return msgspec.convert(given, GateIn)
    except msgspec.ValidationError as exc:
        raise InvalidInput("gate", f"quality gate: {exc}") from exc


def _gate_report(actions: list[ActionRow]) -> dict[str, Any] | None:
    """The quality gate report kept with the rollout's start, if it was gated."""
    for a in actions:
        if a.action == "rollout.start":
            report = a.details.get("quality_gate")
            return report if isinstance(report, dict) else None
    return None


def _back(url: str, **params: str) -> Redirect:
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in params.items() if v})
    return Redirect(f"{url}?{query}" if query else url, status_code=303)


class PagesController(Controller):
    guards = [page_guard]
    include_in_schema = False

    @get("/")
    async def fleet_page(
        self, request: Request[Any, Any, Any], registry: RegistryDep, fleet: FleetService
    ) -> Template:
        # problems first (offline, degraded, then by site id), one page of PAGE_SIZE sites
        query = FleetQuery.from_params(request.query_params, default_sort="problems")
        view = await asyncio.to_thread(overview, registry, query, fleet.data_dir, limit=PAGE_SIZE)
        return Template("fleet.html", context=_ctx(request, "fleet", view=view, query=query))

    @get("/sites/{site_id:str}")
    async def site_page(
        self, request: Request[Any, Any, Any], fleet: FleetService, site_id: str
    ) -> Template:
        detail = await site_detail(fleet, site_id)
        rollouts = await asyncio.to_thread(fleet.registry.site_rollouts, site_id)
        return Template(
            "site.html",
            context=_ctx(
                request,
                "fleet",
                charts=_charts(detail["history"]),
                bundle_changes=_bundle_changes(detail["history"]),
                rollouts=rollouts,
                desired_json=json.dumps(detail["desired_override"], indent=2, sort_keys=True),
                effective_json=json.dumps(detail["desired_effective"], indent=2, sort_keys=True),
                **detail,
            ),
        )

    @post("/sites/{site_id:str}/config")
    async def site_config(
        self, request: Request[Any, Any, Any], fleet: FleetService, site_id: str, data: Form
    ) -> Redirect:
        op: Operator = request.state.operator
        check_csrf(op, data.get("csrf"))
        url = f"/sites/{site_id}"
        try:
            doc = json.loads(data.get("config", "") or "{}")
            if not isinstance(doc, dict):
                raise ValueError("the config must be a JSON object")
            version = await set_config(fleet, op.name, site_id, doc)
        except (ValueError, AivosError) as exc:
            return _back(url, error=f"config not saved: {exc}")
        return _back(url, flash=f"desired config version {version} stored")

    @get("/rollouts")
    async def rollouts_page(
        self, request: Request[Any, Any, Any], registry: RegistryDep, fleet: FleetService
    ) -> Template:
        # counts and per-wave progress in SQL: a 10k-site fleet's sites are never all loaded
        summaries = await asyncio.to_thread(registry.rollout_summaries)
        fleet_view = await asyncio.to_thread(overview, registry, FleetQuery(), limit=0)
        running = await asyncio.to_thread(registry.bundle_counts)
        built = await asyncio.to_thread(local_bundles, bundle_roots(fleet.data_dir))
        refused = [
            a
            for a in await asyncio.to_thread(registry.actions, 200)
            if a.action == "rollout.refused"
        ][:5]
        return Template(
            "rollouts.html",
            context=_ctx(
                request,
                "rollouts",
                summaries=summaries,
                n_sites=fleet_view.total,
                running=running,
                bundles=sorted({v for v, _ in running} | set(built)),
                built=built,
                gate_data=await asyncio.to_thread(gate_data_names, fleet.data_dir),
                refused=refused,
            ),
        )

    @post("/rollouts")
    async def rollout_start(
        self, request: Request[Any, Any, Any], fleet: FleetService, data: Form
    ) -> Redirect:
        op: Operator = request.state.operator
        check_csrf(op, data.get("csrf"))
        raw_sites = data.get("sites", "").strip()
        sites = (
            None
            if raw_sites in ("", "*", "all")
            else [s.strip() for s in raw_sites.split(",") if s.strip()]
        )
        try:
            rollout_id = await begin_rollout(
                fleet.registry,
                op.name,
                bundle_version=data.get("bundle_version", "").strip(),
                sites=sites,
                canary_percent=float(data.get("canary_percent", "10").rstrip("%") or 10),
                soak_s=float(data.get("soak_s", "60") or 60),
                gate=_gate_form(data),
                data_dir=fleet.data_dir,
            )
        except (ValueError, AivosError) as exc:
            return _back("/rollouts", error=f"rollout not started: {exc}")
        return _back(f"/rollouts/{rollout_id}", flash="rollout started")

    @get("/rollouts/{rollout_id:str}")
    async def rollout_page(
        self, request: Request[Any, Any, Any], registry: RegistryDep, rollout_id: str
    ) -> Template:
        params = request.query_params
        try:
            page = int(params.get("page", "1") or 1)
        except ValueError:
            page = 1
        view = await asyncio.to_thread(
            registry.rollout_view, rollout_id, status=params.get("status", ""), page=page
        )
        actions = await asyncio.to_thread(registry.actions, 50, rollout_id)
        return Template(
            "rollout.html",
            context=_ctx(
                request,
                "rollouts",
                rollout=view.rollout,
                view=view,
                actions=actions,
                gate=_gate_report(actions),
            ),
        )

    @post("/rollouts/{rollout_id:str}/{action:str}")
    async def rollout_act(
        self,
        request: Request[Any, Any, Any],
        fleet: FleetService,
        rollout_id: str,
        action: str,
        data: Form,
    ) -> Redirect:
        op: Operator = request.state.operator
        check_csrf(op, data.get("csrf"))
        url = f"/rollouts/{rollout_id}"
        if action not in ROLLOUT_ACTIONS:
            raise NotFoundException(f"unknown action {action}")
        try:
            rollout = await rollout_action(fleet, op.name, rollout_id, action)
        except AivosError as exc:
            return _back(url, error=str(exc))
        return _back(url, flash=f"{action}: rollout is now {rollout.state}")

    @get("/audit", opt={"role": "admin"})
    async def audit_page(self, request: Request[Any, Any, Any], fleet: FleetService) -> Template:
        query = AuditQuery.from_params(request.query_params, max_limit=1000)
        store = request.app.state.cloud_store()
        hits = await asyncio.to_thread(search_audit, store, query)
        return Template(
            "audit.html",
            context=_ctx(request, "audit", query=query, hits=hits, has_store=store is not None),
        )

    @get("/actions")
    async def actions_page(
        self, request: Request[Any, Any, Any], registry: RegistryDep
    ) -> Template:
        target = request.query_params.get("target") or None
        actions = await asyncio.to_thread(registry.actions, 300, target)
        return Template("actions.html", context=_ctx(request, "actions", actions=actions))
