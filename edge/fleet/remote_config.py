"""Remote config: watch the site's desired config in the hub's JetStream KV bucket
``aivos_config`` (keys ``_defaults`` and ``<site>``), validate, apply without a restart.

* effective config = `shared.fleet.merge_config(defaults, site)` (deep merge, site wins);
* valid -> `FleetHost.apply_remote_config`, persisted to ``DATA_DIR/fleet/applied_config.json``
  (re-applied at the next start, even offline), `ConfigReport(applied)`;
* invalid -> nothing changes, the last good config stays, `ConfigReport(rejected, error)`,
  and the error rides in every heartbeat until a valid config arrives.

The watch (`ConfigWatch`) runs on the uplink's connection; it is rebuilt after every
reconnect and retried while the bucket does not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aivos.edge.fleet.config_apply import ResolvedConfig, resolve_config
from aivos.edge.fleet.config_watch import ConfigWatch
from aivos.edge.fleet.host import FleetHost
from aivos.edge.fleet.layout import FleetPaths, atomic_write
from aivos.edge.fleet.reports import Reporter
from aivos.edge.fleet.status import FleetStatus
from aivos.shared.errors import AivosError
from aivos.shared.fleet import DEFAULTS_KEY, decode_partial_config, merge_config
from aivos.shared.subjects import config_key

__all__ = ["RemoteConfig"]

log = logging.getLogger(__name__)

OnResolved = Callable[[ResolvedConfig], Awaitable[None]]


class RemoteConfig:
    def __init__(
        self,
        host: FleetHost,
        status: FleetStatus,
        reporter: Reporter,
        paths: FleetPaths,
        on_resolved: OnResolved,
        *,
        retry_s: float = 2.0,
    ) -> None:
        self.host = host
        self.status = status
        self.reporter = reporter
        self.paths = paths
        self.on_resolved = on_resolved
        self.retry_s = retry_s
        self.site_key = config_key(host.site_id)
        # The site's own policies: what an absent remote `router`/`residency` means.
        self.base_router = host.policy
        self.base_residency = host.residency
        self.applied: ResolvedConfig | None = None
        self.watch = ConfigWatch(host.uplink, self.site_key, self.evaluate, retry_s=retry_s)
        self.watching = self.watch.watching  # set while a watch is established (tests, bench)
        self._lock = asyncio.Lock()

    async def apply_persisted(self) -> bool:
        """Re-apply the config applied before the last restart; True if one was applied."""
        try:
            data = json.loads(self.paths.applied_config.read_bytes())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.paths.applied_config, exc)
            return False
        merged = data.get("config") if isinstance(data, dict) else None
        if not isinstance(merged, dict):
            return False
        async with self._lock:
            return await self._apply(merged, report=False)

    def reconnected(self) -> None:
        """Uplink listener: rebuild the watch on the (re)connected link."""
        self.watch.reconnected()

    async def run(self) -> None:
        await self.watch.run()

    async def evaluate(self, defaults: bytes | None, site: bytes | None) -> bool:
        """Merge, validate and apply one pair of KV values; True when applied."""
        async with self._lock:
            try:
                d = decode_partial_config(defaults, DEFAULTS_KEY)
                s = decode_partial_config(site, self.site_key)
            except AivosError as exc:
                await self._reject(_version_hint(defaults, site), str(exc))
                return False
            merged = merge_config(d, s)
            merged["version"] = max(_int(d.get("version")), _int(s.get("version")))
            if self.applied is not None and merged == self.applied.raw:
                return True  # a rebuilt watch replays the same values
            return await self._apply(merged, report=True)

    async def _apply(self, merged: dict[str, Any], *, report: bool) -> bool:
        host = self.host
        version = _int(merged.get("version"))
        try:
            resolved = resolve_config(
                merged,
                labels=list(host.model.labels),
                oos_label=host.model.manifest.oos_label,
                base_router=self.base_router,
                base_residency=self.base_residency,
            )
            host.apply_remote_config(resolved.router, resolved.residency)
        except (AivosError, ValueError, TypeError) as exc:
            if report:
                await self._reject(version, str(exc))
            else:
                self.status.config_error = f"persisted config v{version}: {exc}"
                log.warning("persisted remote config v%d no longer valid: %s", version, exc)
            return False
        self.applied = resolved
        self.status.config_version_applied = resolved.version
        self.status.config_error = None
        await asyncio.to_thread(
            atomic_write,
            self.paths.applied_config,
            json.dumps({"version": resolved.version, "config": merged}, indent=1).encode(),
        )
        log.info("remote config v%d applied", resolved.version)
        await self.on_resolved(resolved)
        if report:
            await self.reporter.config(resolved.version, "applied")
        return True

    async def _reject(self, version: int, error: str) -> None:
        log.warning("remote config v%d rejected: %s", version, error)
        self.status.config_error = f"v{version} rejected: {error}"
        await self.reporter.config(version, "rejected", error)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _version_hint(*raw: bytes | None) -> int:
    best = 0
    for value in raw:
        with contextlib.suppress(Exception):
            best = max(best, _int(json.loads(value or b"{}").get("version")))
    return best
