"""The console's own health: `/healthz` (open, for probes) and `/api/health` (operators),
and the banner its pages show while the fleet link to the hub is down.

`/healthz` stays ``{"status": "ok"}`` while the console serves (it serves the registry
without the hub, so a probe must not restart it for a hub fault) and names the fleet link's
state in ``fleet_link`` (`link.LinkStatus.state`). The why (the last failed try's error
class and message, since when) is for operators only, in `/api/health`: it names the hub's
subjects and config."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Controller, get

from aivos.cloud.console.auth import api_guard
from aivos.cloud.fleet.link import LinkStatus
from aivos.cloud.fleet.service import FleetService

__all__ = ["ApiHealthController", "HealthController", "link_banner"]


def _health(fleet: FleetService) -> dict[str, str]:
    return {"status": "ok", "fleet_link": fleet.link.status().state}


class HealthController(Controller):
    include_in_schema = False

    @get("/healthz")
    async def healthz(self, fleet: FleetService) -> dict[str, str]:
        """Liveness, and the fleet link's state in one word (no details: this is open)."""
        return _health(fleet)


class ApiHealthController(Controller):
    path = "/api"
    guards = [api_guard]

    @get("/health")
    async def health(self, fleet: FleetService) -> dict[str, Any]:
        """`/healthz`, plus ``fleet_link_detail``: the link's state, since when, failed
        tries in a row, the last failure's error class, message and plain-words reason."""
        detail = msgspec.to_builtins(fleet.link.status())
        return {**_health(fleet), "fleet_link_detail": detail}


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def link_banner(status: LinkStatus) -> str | None:
    """What the pages say about the fleet link: nothing while it is up, off (a console
    without NATS) or on its first try; otherwise why it is down and what to do."""
    since = _when(status.since)
    if status.state == "reconnecting":
        return (
            f"Fleet link interrupted since {since}: the connection to the hub was lost and is "
            "being re-established. Config changes and rollouts wait until it is back."
        )
    if status.state in ("down", "refused") and status.reason:
        return (
            f"Fleet link down since {since}: {status.reason}. Config changes and rollouts "
            f"wait until it is back (tries so far: {status.failures}; the console keeps "
            "trying)."
        )
    return None
