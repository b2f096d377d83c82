"""Simulated sites: small NATS clients that speak the fleet protocol like an edge agent.

Used by the fleet simulator benchmark and by tests of the cloud side. A `SimSite`
publishes `Heartbeat`s, optionally watches its desired config in the KV bucket and answers
with `ConfigReport`s / `BundleReport`s the way the real agent does:

* a config whose ``thresholds`` hold a value outside [0, 1] is rejected (the last good
  config stays); otherwise it is applied and its version reported;
* a new desired ``bundle_version`` is "installed": versions in ``bad_bundles`` fail their
  canary (old bundle kept, ``canary_failed``), others go live (``ok``);
* `degrade` makes the site report a high error rate (a live-health guard breach).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from aivos.shared.errors import ConfigError
from aivos.shared.fleet import (
    DEFAULTS_KEY,
    BundleReport,
    ConfigReport,
    Decisions,
    Heartbeat,
    SiteConfig,
    bundle_report_subject,
    config_report_subject,
    effective_config,
    encode,
    now_ms,
)
from aivos.shared.subjects import CONFIG_BUCKET, HUB_DOMAIN, config_key, heartbeat_subject

__all__ = ["SimSite"]

log = logging.getLogger(__name__)


class SimSite:
    def __init__(
        self,
        nc: NATS,
        site_id: str,
        *,
        interval_s: float = 10.0,
        bundle_version: str = "v1",
        bad_bundles: frozenset[str] = frozenset(),
        seed: int | None = None,
    ) -> None:
        self.nc = nc
        self.site_id = site_id
        self.interval_s = interval_s
        self.bundle_version = bundle_version
        self.bad_bundles = bad_bundles
        self.bundle_status = "ok"
        self.bundle_message = ""
        self.bundle_target: str | None = None
        self.config: SiteConfig | None = None
        self.config_error: str | None = None
        self.error_rate = 0.0
        self.sent = 0
        self._rng = random.Random(seed if seed is not None else hash(site_id))
        self._raw: dict[str, bytes | None] = {DEFAULTS_KEY: None, site_id: None}
        self._tasks: list[asyncio.Task[None]] = []
        self._watchers: list[Any] = []

    def heartbeat(self) -> Heartbeat:
        r = self._rng
        local, escalate = r.randint(20, 60), r.randint(2, 15)
        p50 = round(r.uniform(1.5, 4.0), 2)
        return Heartbeat(
            site_id=self.site_id,
            agent_version="sim-0.1",
            bundle_version=self.bundle_version,
            provider="CPUExecutionProvider",
            link_state="up",
            outbox_depth=r.randint(0, 30),
            job_backlog=r.randint(0, 3),
            request_rate=round((local + escalate) / max(self.interval_s, 1e-3), 2),
            decisions=Decisions(local=local, escalate=escalate, refuse=r.randint(0, 3)),
            p50_ms=p50,
            p99_ms=round(p50 * r.uniform(3, 6), 2),
            cpu_percent=round(r.uniform(5, 60), 1),
            mem_percent=round(r.uniform(20, 70), 1),
            disk_percent=round(r.uniform(10, 50), 1),
            config_version_applied=self.config.version if self.config else 0,
            config_error=self.config_error,
            sent_at_unix_ms=now_ms(),
            bundle_status=self.bundle_status,
            bundle_message=self.bundle_message,
            bundle_target=self.bundle_target,
            error_rate=self.error_rate,
            interval_s=self.interval_s,
        )

    async def beat(self) -> None:
        await self.nc.publish(heartbeat_subject(self.site_id), encode(self.heartbeat()))
        self.sent += 1

    def degrade(self, error_rate: float = 0.5) -> None:
        self.error_rate = error_rate

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self, *, heartbeats: bool = True, watch_config: bool = True) -> None:
        if watch_config:
            kv = await self.nc.jetstream(domain=HUB_DOMAIN).key_value(CONFIG_BUCKET)
            for key in (DEFAULTS_KEY, config_key(self.site_id)):
                watcher = await kv.watch(key)
                self._watchers.append(watcher)
                self._tasks.append(asyncio.create_task(self._watch(kv, key, watcher)))
        if heartbeats:
            self._tasks.append(asyncio.create_task(self._beat_loop()))

    async def stop(self) -> None:
        for w in self._watchers:
            with contextlib.suppress(Exception):
                await w.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._watchers.clear()

    async def _beat_loop(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:  # reconnecting: the next beat goes out after the link returns
                log.debug("sim %s: heartbeat not sent", self.site_id)
            await asyncio.sleep(self.interval_s)

    async def _watch(self, kv: KeyValue, key: str, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:  # end of the initial values
                continue
            self._raw[key] = entry.value or None
            await self._apply()

    # ----- what the edge does with a new desired config --------------------------------------

    async def _apply(self) -> None:
        try:
            cfg = effective_config(self._raw[DEFAULTS_KEY], self._raw[self.site_id])
            for name, value in cfg.thresholds.items():
                if not 0.0 <= value <= 1.0:
                    raise ConfigError(f"thresholds.{name}", f"{value} is outside [0, 1]")
        except ConfigError as exc:
            self.config_error = str(exc)
            version = self._version_of_raw()
            await self._report(ConfigReport(self.site_id, version, "rejected", str(exc), now_ms()))
            return
        if self.config is not None and cfg.version <= self.config.version:
            return
        self.config, self.config_error = cfg, None
        if cfg.heartbeat_interval_s > 0:
            self.interval_s = cfg.heartbeat_interval_s
        await self._report(ConfigReport(self.site_id, cfg.version, "applied", None, now_ms()))
        if cfg.bundle_version and cfg.bundle_version != self.bundle_version:
            await self._install(cfg.bundle_version)

    def _version_of_raw(self) -> int:
        import json

        versions = [int(json.loads(v).get("version", 0)) for v in self._raw.values() if v]
        return max(versions, default=0)

    async def _install(self, version: str) -> None:
        self.bundle_target = version
        if version in self.bad_bundles:
            self.bundle_status = "canary_failed"
            self.bundle_message = "golden accuracy 0.40 < 0.90"
            await self._bundle_report(version, "canary_failed", self.bundle_message)
        else:
            previous = self.bundle_version
            self.bundle_version = version
            self.bundle_status, self.bundle_message = "ok", ""
            await self._bundle_report(version, "ok", "", previous)
        await self.beat()

    async def _report(self, report: ConfigReport) -> None:
        await self.nc.publish(config_report_subject(self.site_id), encode(report))

    async def _bundle_report(
        self, version: str, status: str, message: str, previous: str | None = None
    ) -> None:
        report = BundleReport(
            site=self.site_id,
            bundle_version=version,
            status=status,
            message=message,
            previous_version=previous,
            sent_at_unix_ms=now_ms(),
        )
        await self.nc.publish(bundle_report_subject(self.site_id), encode(report))
