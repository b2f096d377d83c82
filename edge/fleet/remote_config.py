"""Remote config: watch the site's desired config in the hub's JetStream KV bucket
``aivos_config`` (keys ``_defaults`` and ``<site>``), validate, apply without a restart.

* effective config = `shared.fleet.merge_config(defaults, site)` (deep merge, site wins);
* valid -> `FleetHost.apply_remote_config`, persisted to ``DATA_DIR/fleet/applied_config.json``
  (re-applied at the next start, even offline), `ConfigReport(applied)`;
* invalid -> nothing changes, the last good config stays, `ConfigReport(rejected, error)`,
  the rejection is written to the site's audit log, and the error rides in every
  heartbeat until a valid config arrives.

Trust (docs/security.md, "Signed remote config"):

* **signatures**: a signed value (`shared.config_signature`) must verify with a trusted
  config key, and was signed for the key it is stored under. Unsigned values are accepted
  only while signatures are not required (`FleetOptions.require_signed_config`; by
  default they are required once the site trusts a config key). An absent or deleted key
  is no override: the site falls back to its local settings, never below them.
* **no replay**: a signed change must carry a version above the one applied.
* **tighten only**: a remote ``residency`` must be at least as strict as the site's local
  one (`edge.fleet.tightening`) unless the local ``allow_remote_loosening`` is set.

The watch (`ConfigWatch`) runs on the uplink's connection; it is rebuilt after every
reconnect and retried while the bucket does not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aivos.edge.fleet.config_apply import ResolvedConfig, resolve_config
from aivos.edge.fleet.config_watch import ConfigWatch
from aivos.edge.fleet.host import FleetHost
from aivos.edge.fleet.layout import FleetPaths, atomic_write
from aivos.edge.fleet.options import FleetOptions
from aivos.edge.fleet.reports import Reporter
from aivos.edge.fleet.status import FleetStatus
from aivos.edge.fleet.tightening import check_tighter
from aivos.edge.store.audit import AuditRecord
from aivos.shared.config_signature import (
    ConfigSignatureError,
    load_config_keys,
    unwrap_config,
    verify_config,
)
from aivos.shared.errors import AivosError
from aivos.shared.fleet import DEFAULTS_KEY, merge_config
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
        options: FleetOptions | None = None,
    ) -> None:
        self.host = host
        self.options = options or host.fleet_options
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
        """Verify, merge, validate and apply one pair of KV values; True when applied."""
        async with self._lock:
            hint = _version_hint(defaults, site)
            try:
                keys = await asyncio.to_thread(load_config_keys, self.paths.trusted_keys)
                required = self.options.require_signed_config
                if required is None:
                    required = bool(keys)
                d, d_signed = _open(defaults, DEFAULTS_KEY, keys, required)
                s, s_signed = _open(site, self.site_key, keys, required)
            except AivosError as exc:
                await self._reject(hint, exc)
                return False
            merged = merge_config(d, s)
            merged["version"] = max(_int(d.get("version")), _int(s.get("version")))
            applied = self.applied
            if applied is not None and merged == applied.raw:
                return True  # a rebuilt watch replays the same values
            version = _int(merged["version"])
            if (d_signed or s_signed) and applied is not None and version <= applied.version:
                stale = ConfigSignatureError(
                    "version",
                    f"signed config v{version} is not newer than the applied "
                    f"v{applied.version} (replayed?)",
                )
                await self._reject(version, stale)
                return False
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
            if merged.get("residency") and not self.options.allow_remote_loosening:
                check_tighter(resolved.residency, self.base_residency)
            host.apply_remote_config(resolved.router, resolved.residency)
        except (AivosError, ValueError, TypeError) as exc:
            if report:
                await self._reject(version, exc)
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

    async def _reject(self, version: int, exc: Exception) -> None:
        error = str(exc)
        log.warning("remote config v%d rejected: %s", version, error)
        self.status.config_error = f"v{version} rejected: {error}"
        await self._audit(version, exc)
        await self.reporter.config(version, "rejected", error)

    async def _audit(self, version: int, exc: Exception) -> None:
        """One audit row per rejection: an `auth_failure` for a bad signature or a replay,
        an `operator_action` for any other refused change (e.g. a loosening)."""
        code = getattr(exc, "code", type(exc).__name__)
        record = AuditRecord(
            id=f"remote-config-{uuid.uuid4().hex}",
            kind="auth_failure" if isinstance(exc, ConfigSignatureError) else "operator_action",
            detail={
                "action": "remote_config.rejected",
                "version": version,
                "reason": code,
                "error": str(exc)[:500],
            },
        )
        try:
            await self.host.store.append_audit(record)
        except Exception:  # never let auditing stop the watch; the report still goes out
            log.exception("could not audit the rejected remote config v%d", version)


def _open(
    value: bytes | None, key: str, keys: list[Any], required: bool
) -> tuple[dict[str, Any], bool]:
    """The partial config of one KV value, and whether it was signed (and verified)."""
    config, signed = unwrap_config(value, key)
    if signed is not None:
        return verify_config(value, key, keys), True
    if required and config:
        raise ConfigSignatureError(key, "config is not signed; this site requires signatures")
    return config, False


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _version_hint(*raw: bytes | None) -> int:
    best = 0
    for value in raw:
        with contextlib.suppress(Exception):
            best = max(best, _int(unwrap_config(value, "config")[0].get("version")))
    return best
