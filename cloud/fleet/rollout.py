"""Staged, health-gated bundle rollouts.

A rollout has waves: wave 1 = the canary sites (``canary_percent`` of the targets, at least
one), wave 2 = the rest. The controller (`RolloutController.tick`, run every second inside
the console or ``aivos cloud fleet``) drives every ``running`` rollout from its state in
the registry, so it survives restarts:

1. each ``pending`` site of the current wave gets the bundle as its desired
   ``bundle_version`` in the KV bucket -> ``deploying``;
2. a site is ``healthy`` once it is online and its heartbeat shows the new bundle live
   (``bundle_version`` = V, ``bundle_status`` ok) within the guards (error rate, p99);
3. it is ``failed`` when it reports the new bundle as verify_failed / canary_failed /
   rolled_back / error, or runs it outside the guards -> the rollout is ``halted``;
4. when every site of the wave has been healthy for ``soak_s``, the next wave starts; after
   the last wave the rollout is ``completed``.

A tick reads what may move, not the fleet: the registry answers in SQL with the current
wave's pending and failed sites and those deploying or healthy whose latest heartbeat (or a
failed bundle event) says they changed (`Registry.rollout_moves`), then one summary row for
the soak; a wave of 10,000 sites costs a few rows a tick (benchmarks/rollout_tick.py).

With several fleet replicas (consoles on one database), only the one holding the rollout
lease (`Leadership`, in production `aivos.cloud.fleet.lease.Lease`) ticks; the others wait
and take over when the holder dies. Operator actions write the registry and work on any
replica.

Operator actions: pause/resume (stop/continue progressing; a halted rollout is not resumed:
its failed site would fail again — abort or roll it back), abort (stop for good; sites
already switched keep the new bundle), rollback (every site the rollout touched gets its
previous bundle back as desired bundle_version; state ``rolled_back``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Sequence
from typing import Protocol

import msgspec

from aivos.cloud.fleet.quality_gate import QualityGate, QualityGateFailed
from aivos.cloud.fleet.registry import MovingSite, Registry, RolloutRow, SiteChange
from aivos.shared.errors import ConfigError, NotFound
from aivos.shared.fleet import validate_bundle_version

__all__ = [
    "FAILED_STATUSES",
    "DEFAULT_GUARDS",
    "DesiredBundleSink",
    "Leadership",
    "RolloutController",
    "start_rollout",
    "pause_rollout",
    "resume_rollout",
    "abort_rollout",
    "rollback_rollout",
    "plan_waves",
]

log = logging.getLogger(__name__)

FAILED_STATUSES = frozenset({"verify_failed", "canary_failed", "rolled_back", "error"})
DEFAULT_GUARDS = {"max_error_rate": 0.05, "max_p99_ms": 2000.0}
_ACTIVE = ("running", "paused")
_DEPLOY_BATCH = 200  # sites whose desired config is put, recorded per transaction


class Leadership(Protocol):
    """Whether this replica may drive rollouts now (it holds the coordinator lease)."""

    @property
    def held(self) -> bool: ...


class DesiredBundleSink(Protocol):
    """Where desired bundle versions go (the KV-backed `ConfigStore` in production)."""

    async def put(
        self, site: str | None, data: dict[str, object], *, merge: bool = False
    ) -> int: ...


def plan_waves(sites: Sequence[str], canary_percent: float) -> list[list[str]]:
    """[canary, rest]: ceil(percent of the sites), at least one; no empty wave."""
    if not sites:
        raise ConfigError("sites", "a rollout needs at least one site")
    if not 0 < canary_percent <= 100:
        raise ConfigError("canary", "canary percent must be in (0, 100]")
    ordered = sorted(set(sites))
    n = max(1, math.ceil(len(ordered) * canary_percent / 100))
    waves = [ordered[:n], ordered[n:]]
    return [w for w in waves if w]


def start_rollout(
    registry: Registry,
    *,
    bundle_version: str,
    sites: Sequence[str] | None,
    canary_percent: float,
    actor: str,
    soak_s: float = 60.0,
    guards: dict[str, float] | None = None,
    quality_gate: QualityGate | None = None,
) -> str:
    """Create a running rollout (the controller carries it out); returns its id. With a
    `quality_gate` the bundle must pass it first: a failing one raises `QualityGateFailed`
    and the refusal is recorded (``rollout.refused``); a passing report is kept with the
    start (``rollout.start`` details, ``quality_gate``) for the rollout's page."""
    validate_bundle_version(bundle_version)
    report = None
    if quality_gate is not None:
        report = quality_gate.check(bundle_version)
        if not report.passed:
            registry.record_action(
                actor, "rollout.refused", bundle_version, msgspec.to_builtins(report)
            )
            raise QualityGateFailed(bundle_version, report.reasons)
    # each target's current bundle (to roll back to) and which are busy, asked of the
    # registry: two columns and a set, never every site's row (a fleet has 10,000)
    previous = registry.site_bundles(sites)
    targets = list(previous) if sites is None else list(sites)
    missing = [s for s in targets if s not in previous]
    if missing:
        raise NotFound(f"unknown sites: {', '.join(missing)}")
    busy = registry.busy_sites(_ACTIVE, sites) & set(targets)
    if busy:
        raise ConfigError("sites", f"already in an active rollout: {', '.join(sorted(busy))}")
    waves = plan_waves(targets, canary_percent)
    rollout_id = f"r-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    merged_guards = {**DEFAULT_GUARDS, **(guards or {})}
    registry.create_rollout(
        rollout_id,
        bundle_version,
        [[(s, previous[s]) for s in wave] for wave in waves],
        canary_percent=canary_percent,
        soak_s=soak_s,
        guards=merged_guards,
        created_by=actor,
    )
    registry.record_action(
        actor,
        "rollout.start",
        rollout_id,
        {
            "bundle_version": bundle_version,
            "waves": waves,
            "canary_percent": canary_percent,
            "soak_s": soak_s,
            "guards": merged_guards,
            # what the gate measured, or None: started without one
            "quality_gate": msgspec.to_builtins(report) if report is not None else None,
        },
    )
    return rollout_id


def _transition(
    registry: Registry,
    rollout_id: str,
    actor: str,
    action: str,
    allowed: Sequence[str],
    to: str,
) -> RolloutRow:
    rollout = registry.rollout(rollout_id)
    if rollout.state not in allowed:
        raise ConfigError("rollout", f"cannot {action} a rollout that is {rollout.state}")
    registry.update_rollout(rollout_id, state=to, message=f"{action} by {actor}")
    registry.record_action(actor, f"rollout.{action}", rollout_id, {"from": rollout.state})
    return registry.rollout(rollout_id)


def pause_rollout(registry: Registry, rollout_id: str, actor: str) -> RolloutRow:
    return _transition(registry, rollout_id, actor, "pause", ("running",), "paused")


def resume_rollout(registry: Registry, rollout_id: str, actor: str) -> RolloutRow:
    return _transition(registry, rollout_id, actor, "resume", ("paused",), "running")


def abort_rollout(registry: Registry, rollout_id: str, actor: str) -> RolloutRow:
    return _transition(
        registry, rollout_id, actor, "abort", ("running", "paused", "halted"), "aborted"
    )


async def rollback_rollout(
    registry: Registry, sink: DesiredBundleSink, rollout_id: str, actor: str
) -> RolloutRow:
    """Set every touched site's desired bundle back to the one it ran before the rollout."""
    rollout = registry.rollout(rollout_id)
    if rollout.state == "rolled_back":
        raise ConfigError("rollout", "already rolled back")
    reverted: dict[str, str] = {}
    for s in rollout.sites:
        if s.status == "pending" or s.previous_bundle is None:
            continue
        version = await sink.put(s.site_id, {"bundle_version": s.previous_bundle}, merge=True)
        registry.set_desired([s.site_id], config=version, bundle=s.previous_bundle)
        registry.update_rollout_site(rollout_id, s.site_id, status="rolled_back", message="")
        reverted[s.site_id] = s.previous_bundle
    registry.update_rollout(rollout_id, state="rolled_back", message=f"rolled back by {actor}")
    registry.record_action(actor, "rollout.rollback", rollout_id, {"reverted": reverted})
    return registry.rollout(rollout_id)


class RolloutController:
    def __init__(
        self,
        registry: Registry,
        sink: DesiredBundleSink,
        *,
        tick_s: float = 1.0,
        leadership: Leadership | None = None,
    ) -> None:
        self.registry = registry
        self.sink = sink
        self.tick_s = tick_s
        self.leadership = leadership  # None: the only replica, always ticks
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rollout-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _leads(self) -> bool:
        return self.leadership is None or self.leadership.held

    async def _loop(self) -> None:
        while True:
            try:
                if self._leads():
                    await self.tick()
                    self.ticks += 1
            except Exception:
                log.exception("rollout controller tick failed")
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        for rollout in self.registry.running_rollouts():
            await self._advance(rollout)

    def _failure(self, rollout: RolloutRow, site: MovingSite) -> str | None:
        """Why this site failed the new bundle, or None."""
        hb = site.heartbeat
        v = rollout.bundle_version
        # the registry flags a site with a failed event of V since the start; the verdict
        # is still the newest ten events' (what the console shows), as it always was
        if site.reported_failure:
            for ev in self.registry.bundle_events(site.site_id, limit=10):
                if (
                    ev.bundle_version == v
                    and ev.status in FAILED_STATUSES
                    and ev.ts >= rollout.created_at
                ):
                    return f"{ev.status}: {ev.message}".rstrip(": ")
        if hb is None:
            return None
        if hb.bundle_target == v and hb.bundle_status in FAILED_STATUSES:
            return f"{hb.bundle_status}: {hb.bundle_message}".rstrip(": ")
        if hb.bundle_version == v and hb.bundle_status == "ok":
            g = rollout.guards
            if hb.error_rate > g.get("max_error_rate", math.inf):
                return f"error rate {hb.error_rate:.3f} above guard {g['max_error_rate']}"
            if hb.p99_ms > g.get("max_p99_ms", math.inf):
                return f"p99 {hb.p99_ms:.0f} ms above guard {g['max_p99_ms']:.0f} ms"
        return None

    @staticmethod
    def _healthy(rollout: RolloutRow, site: MovingSite, now: float) -> bool:
        """Online (the stored deadline, as `Registry.site` tells it) on the new bundle."""
        hb = site.heartbeat
        if hb is None or site.stale_at is None or site.stale_at < now:
            return False
        return hb.bundle_version == rollout.bundle_version and hb.bundle_status == "ok"

    def _record_deploys(self, rollout: RolloutRow, deploying: dict[str, int]) -> None:
        self.registry.deploy_rollout_sites(rollout.id, rollout.bundle_version, deploying)
        deploying.clear()

    async def _advance(self, rollout: RolloutRow) -> None:
        """One step of a running rollout's current wave. Only the sites the registry says
        may move are read (`Registry.rollout_moves`): a site left out is deploying and not
        yet live, or healthy and still live, neither failing; the wave's soak is then one
        summary row (`Registry.rollout_wave_state`), not a pass over its sites. The tick's
        status changes are written together, in one transaction (a thousand sites of a wave
        turn live within one heartbeat interval: one commit each was the tick's cost)."""
        now = time.time()
        failed: list[str] = []
        changes: list[SiteChange] = []
        deployed = False
        deploying: dict[str, int] = {}  # site -> the config version naming the bundle
        try:
            for s in self.registry.rollout_moves(rollout, now, FAILED_STATUSES):
                if s.status == "pending":
                    if not self._leads():
                        # a put can wait for JetStream (up to the store's ready timeout):
                        # the lease may have lapsed meanwhile, and another replica may lead
                        break
                    deploying[s.site_id] = await self.sink.put(
                        s.site_id, {"bundle_version": rollout.bundle_version}, merge=True
                    )
                    deployed = True
                    if len(deploying) >= _DEPLOY_BATCH:
                        self._record_deploys(rollout, deploying)
                    continue
                if s.status not in ("deploying", "healthy"):
                    if s.status == "failed":
                        failed.append(f"{s.site_id}: {s.message}")
                    continue
                why = self._failure(rollout, s)
                if why is not None:
                    changes.append(SiteChange(site_id=s.site_id, status="failed", message=why))
                    failed.append(f"{s.site_id}: {why}")
                elif self._healthy(rollout, s, now):
                    if s.status != "healthy" or s.healthy_since is None:
                        since = s.healthy_since or now
                        changes.append(
                            SiteChange(site_id=s.site_id, status="healthy", healthy_since=since)
                        )
                elif s.status == "healthy":  # went offline or changed bundle: start over
                    changes.append(SiteChange(site_id=s.site_id, status="deploying"))
        finally:
            # a site whose desired config was put is recorded even if a later put failed
            self._record_deploys(rollout, deploying)
        self.registry.update_rollout_sites(rollout.id, changes)
        if failed:
            what = "canary" if rollout.current_wave == 1 else f"wave {rollout.current_wave}"
            message = f"halted: {what} site failed ({'; '.join(failed)})"
            self.registry.update_rollout(rollout.id, state="halted", message=message)
            self.registry.record_action(
                "controller", "rollout.halt", rollout.id, {"failed": failed}
            )
            log.warning("rollout %s halted", rollout.id)
            return
        if deployed:
            return
        # soaked: no site pending or deploying, every healthy one healthy for soak_s (the
        # newest healthy_since decides); failed sites halted above, other statuses wait on
        # nothing, as before
        wave = self.registry.rollout_wave_state(rollout.id, rollout.current_wave)
        if wave.unsettled or (
            wave.newest_healthy_since is not None
            and now - wave.newest_healthy_since < rollout.soak_s
        ):
            return
        last_wave = self.registry.rollout_last_wave(rollout.id)
        if last_wave is None:  # a rollout without sites: nothing to carry out
            return
        if rollout.current_wave < last_wave:
            self.registry.update_rollout(
                rollout.id,
                current_wave=rollout.current_wave + 1,
                message=f"wave {rollout.current_wave} healthy; wave {rollout.current_wave + 1} started",
            )
        else:
            self.registry.update_rollout(rollout.id, state="completed", message="all waves healthy")
            self.registry.record_action("controller", "rollout.complete", rollout.id, {})
