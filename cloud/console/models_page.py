"""The models page: each catalogue model's answers today (as primary and as fallback),
tokens, cost and p95, a chart per model over the last hour, and the sites and intents
whose daily budget is used up.

Usage is read from the routers' ``model_usage.sqlite`` in the cloud data dir; the catalogue
is the one the fleet runs (`cloud.models.report.fleet_catalogue`): the pushed one, read over
the console's hub connection, with its version, else the data dir's ``catalogue.toml``; the
page says which. A console without either shows the models the usage file names.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template
from markupsafe import Markup

from aivos.cloud.console.auth import Operator, page_guard
from aivos.cloud.console.charts import line_chart
from aivos.cloud.fleet.service import FleetService
from aivos.cloud.models.report import (
    ModelUsage,
    QuotaState,
    ShownCatalogue,
    catalogue_path,
    fleet_catalogue,
    models_report,
    quota_states,
    usage_path,
)
from aivos.cloud.models.usage import MinuteRow

__all__ = ["ModelsController", "models_view"]


def _charts(model: ModelUsage, now: float) -> list[Markup]:
    """Two charts over the last hour, a point per minute (minutes without answers are 0)."""
    last = int(now // 60)
    by_minute = {m.minute: m for m in model.minutes}
    minutes = [by_minute.get(t) or MinuteRow(t, model.name) for t in range(last - 59, last + 1)]
    ts = [m.minute * 60.0 for m in minutes]
    return [
        line_chart(
            f"{model.name}: answers per minute",
            ts,
            {
                "primary": [float(m.requests - m.fallback) for m in minutes],
                "fallback": [float(m.fallback) for m in minutes],
            },
        ),
        line_chart(
            f"{model.name}: p95 and cost per minute",
            ts,
            {
                "p95 ms": [m.p95_ms for m in minutes],
                "cost x1000": [m.cost * 1000 for m in minutes],
            },
        ),
    ]


def models_view(data_dir: Path, shown: ShownCatalogue) -> dict[str, Any]:
    """Everything the page shows, for the catalogue `shown` (blocking: file reads)."""
    catalogue = shown.catalogue
    path = usage_path(data_dir)
    now = time.time()
    models = models_report(catalogue, path, now=now)
    quotas: list[QuotaState] = quota_states(catalogue, path) if catalogue is not None else []
    return {
        "catalogue_found": catalogue is not None,
        "catalogue": shown,
        "models": [(m, _charts(m, now)) for m in models],
        "quotas": quotas,
        "exhausted": [q for q in quotas if q.exhausted],
        "total_cost": sum(m.cost for m in models),
    }


class ModelsController(Controller):
    guards = [page_guard]
    include_in_schema = False

    @get("/models")
    async def models_page(self, request: Request[Any, Any, Any], fleet: FleetService) -> Template:
        shown = await fleet_catalogue(
            fleet.nc, catalogue_path(fleet.data_dir), no_hub="the console is not on the hub yet"
        )
        view = await asyncio.to_thread(models_view, fleet.data_dir, shown)
        op: Operator = request.state.operator
        return Template(
            "models.html",
            context={"operator": op.name, "csrf": op.csrf, "nav": "models", **view},
        )
