"""Operator actions shared by the HTML forms and the JSON API; each one is audited."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aivos.cloud.console.gate import GateIn, open_gate
from aivos.cloud.fleet.registry import Registry, RolloutRow
from aivos.cloud.fleet.rollout import (
    abort_rollout,
    pause_rollout,
    resume_rollout,
    rollback_rollout,
    start_rollout,
)
from aivos.cloud.fleet.service import FleetService
from aivos.shared.errors import ConfigError, LinkDown

__all__ = ["ROLLOUT_ACTIONS", "set_config", "begin_rollout", "rollout_action"]

ROLLOUT_ACTIONS = ("pause", "resume", "abort", "rollback")


def _config_store(fleet: FleetService) -> Any:
    if fleet.config is None:
        raise LinkDown("hub", "the console is not connected to NATS")
    return fleet.config


async def set_config(
    fleet: FleetService, actor: str, site: str | None, data: dict[str, Any]
) -> int:
    """Store `data` as the desired config of `site` (None = fleet defaults)."""
    store = _config_store(fleet)
    version: int = await store.put(site, data)
    reg = fleet.registry
    if site is not None:
        await asyncio.to_thread(
            reg.set_desired, [site], config=version, bundle=data.get("bundle_version")
        )
    else:
        # the ids only (`site_bundles`), not every site's row
        ids = list(await asyncio.to_thread(reg.site_bundles))
        await asyncio.to_thread(reg.set_desired, ids, config=version)
    await asyncio.to_thread(
        reg.record_action, actor, "config.set", site or "_defaults", {"version": version, **data}
    )
    return version


async def begin_rollout(
    registry: Registry,
    actor: str,
    *,
    bundle_version: str,
    sites: list[str] | None,
    canary_percent: float,
    soak_s: float,
    guards: dict[str, float] | None = None,
    gate: GateIn | None = None,
    data_dir: Path | None = None,
) -> str:
    """Start a rollout; with `gate` the bundle must pass the quality gate first (bundles and
    gate data resolved under `data_dir`, `gate.open_gate`): `QualityGateFailed` otherwise."""

    def start() -> str:
        quality_gate = None
        if gate is not None:
            if data_dir is None:
                raise ConfigError("gate", "this console has no data directory to gate from")
            quality_gate = open_gate(registry, data_dir, gate, bundle_version, sites)
        return start_rollout(
            registry,
            bundle_version=bundle_version,
            sites=sites,
            canary_percent=canary_percent,
            actor=actor,
            soak_s=soak_s,
            guards=guards,
            quality_gate=quality_gate,
        )

    # scoring two bundles on the held-out set is seconds of CPU: never on the event loop
    return await asyncio.to_thread(start)


async def rollout_action(
    fleet: FleetService, actor: str, rollout_id: str, action: str
) -> RolloutRow:
    reg = fleet.registry
    if action == "pause":
        return await asyncio.to_thread(pause_rollout, reg, rollout_id, actor)
    if action == "resume":
        return await asyncio.to_thread(resume_rollout, reg, rollout_id, actor)
    if action == "abort":
        return await asyncio.to_thread(abort_rollout, reg, rollout_id, actor)
    if action == "rollback":
        return await rollback_rollout(reg, _config_store(fleet), rollout_id, actor)
    raise ConfigError("action", f"unknown rollout action {action!r}")
