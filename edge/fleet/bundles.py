"""Bundle rollout on the site: when the desired bundle differs from the live one, fetch it,
verify it, canary it, swap it in, guard it, and roll it back if live health degrades.

    download (object store -> DATA_DIR/fleet/downloads/<version>.<id>, streamed to disk)
    verify   (Ed25519 signature over the manifest with a trusted key, every file's sha256)
    move     (-> DATA_DIR/bundles/<version>)
    load     (FleetHost.load_model)
    canary   (the bundle's golden queries, accuracy >= canary_min_accuracy)
    swap     (FleetHost.swap_model: atomic, in-flight batches finish on the old model)
    pointer  (DATA_DIR/bundles/ACTIVE -> the new dir; previous kept for rollback)
    guard    (error / escalation rate vs the previous bundle's; breach -> swap back)

A failure at any step leaves the live bundle as it was and is reported (heartbeat
`bundle_status` + a `BundleReport`). Versions that failed verification, the canary or the
guard are remembered (DATA_DIR/fleet/bundle_state.json) and not retried; a download that
fails (link down, not published yet) is retried with a capped back-off.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aivos.edge.fleet.canary import run_canary
from aivos.edge.fleet.download import download_bundle
from aivos.edge.fleet.guard import HealthGuard
from aivos.edge.fleet.host import FleetHost
from aivos.edge.fleet.installed import BundleFiles, FailedVersions, load_trusted_keys
from aivos.edge.fleet.layout import ActivePointer, FleetPaths
from aivos.edge.fleet.options import FleetOptions
from aivos.edge.fleet.reports import Reporter
from aivos.edge.fleet.status import FleetStatus
from aivos.edge.intent.runtime import IntentModel
from aivos.shared.errors import AivosError, BundleError, BundleTampered, LinkDown, ModelNotFound
from aivos.shared.fleet import verify_bundle_signature
from aivos.shared.natsconf.connect import backoff_delay

__all__ = ["BundleManager", "InstallTimings"]

log = logging.getLogger(__name__)

_PERMANENT = ("verify_failed", "canary_failed", "rolled_back")


class InstallTimings(msgspec.Struct):
    """Seconds per step of the last install (for the rollout benchmark)."""

    version: str = ""
    bytes: int = 0
    download_s: float = 0.0
    verify_s: float = 0.0
    load_s: float = 0.0
    canary_s: float = 0.0
    swap_s: float = 0.0
    total_s: float = 0.0  # desired seen -> serving the new bundle


class _CanaryFailed(AivosError):
    code = "canary_failed"


class BundleManager:
    def __init__(
        self,
        host: FleetHost,
        status: FleetStatus,
        reporter: Reporter,
        paths: FleetPaths,
        options: FleetOptions,
    ) -> None:
        self.host = host
        self.status = status
        self.reporter = reporter
        self.paths = paths
        self.options = options
        self.guard = HealthGuard(host.stats, options.guard)
        self.last_install: InstallTimings | None = None
        self._desired: str | None = None
        self._desired_at = time.perf_counter()
        self._wake = asyncio.Event()
        self._attempt = 0
        self.files = BundleFiles(paths)
        self.failed = FailedVersions(paths.bundle_state)

    @property
    def desired(self) -> str | None:
        return self._desired

    def set_desired(self, version: str | None) -> None:
        if version != self._desired:
            self._desired = version
            self._desired_at = time.perf_counter()
            self._attempt = 0
        self.status.bundle_target = version
        self._wake.set()

    def poke(self) -> None:
        """Re-check now (e.g. the link came back after a failed download)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bundle reconcile failed")

    async def _reconcile(self) -> None:
        desired = self._desired
        if desired is None or desired == self.host.model.version:
            if desired is not None and self.status.bundle_status != "ok":
                self._set("ok", "")
            return
        failed = self.failed.get(desired)
        if failed is not None:
            self._set(failed.status, failed.message)
            return
        uplink = self.host.uplink
        while not await uplink.wait_up(5.0):
            pass
        try:
            await self._install(desired)
        except (LinkDown, ModelNotFound) as exc:
            await self._fail(desired, "error", str(exc), permanent=False)
            self._retry_later()
        except BundleTampered as exc:
            await self._fail(desired, "verify_failed", str(exc))
        except _CanaryFailed as exc:
            await self._fail(desired, "canary_failed", str(exc))
        except TimeoutError:
            await self._fail(desired, "error", "download timed out", permanent=False)
            self._retry_later()
        except AivosError as exc:  # BundleError (cannot load), ConfigError (policy vs labels)
            await self._fail(desired, "error", str(exc), permanent=False)
            self._retry_later()

    def _retry_later(self) -> None:
        delay = backoff_delay(self._attempt, self.options.retry_s, 60.0)
        self._attempt += 1
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _install(self, version: str) -> None:
        host = self.host
        t = InstallTimings(version=version)
        started = self._desired_at
        self._set("pending", "downloading")
        await self.reporter.bundle(version, "pending", "downloading", host.model.version)
        keys = await asyncio.to_thread(load_trusted_keys, self.paths.trusted_keys)
        final = await asyncio.to_thread(self.files.local_copy, version, keys)
        if final is None:
            final = await self._fetch(version, keys, t)
        else:
            log.info("bundle %s found on disk; not downloading it again", version)
        self._set("pending", "canary")
        t0 = time.perf_counter()
        try:
            model = await asyncio.to_thread(host.load_model, final)
        except BundleError:
            await asyncio.to_thread(self.files.discard, final)
            raise
        t.load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        canary = await asyncio.to_thread(run_canary, model)
        t.canary_s = time.perf_counter() - t0
        if not canary.passed:
            await asyncio.to_thread(self.files.discard, final)
            raise _CanaryFailed(canary.reason)
        baseline = self.guard.baseline()
        t0 = time.perf_counter()
        old = await host.swap_model(model)
        since = time.monotonic()
        t.swap_s = time.perf_counter() - t0
        t.total_s = time.perf_counter() - started
        self.last_install = t
        pointer = ActivePointer(str(final), version, str(old.bundle_dir))
        await asyncio.to_thread(self.paths.write_active, pointer)
        log.info(
            "bundle %s live (was %s; canary %.3f; %.2fs after it was desired)",
            version,
            old.version,
            canary.accuracy,
            t.total_s,
        )
        self._set("ok", "")
        await self.reporter.bundle(version, "ok", "", old.version, canary.accuracy)
        if self.options.guard.enabled:
            self._set("ok", f"health guard open for {self.options.guard.window_s:g}s")
            verdict = await self.guard.watch(baseline, since)
            if verdict.breached:
                await self._rollback(old, version, final, verdict.reason)
                return
            self._set("ok", "")
        await asyncio.to_thread(self.files.prune, pointer)

    async def _fetch(self, version: str, keys: list[Ed25519PublicKey], t: InstallTimings) -> Path:
        nc = self.host.uplink.nc
        if nc is None or not self.host.uplink.connected:
            raise LinkDown(self.host.site_id)
        self.paths.downloads.mkdir(parents=True, exist_ok=True)
        staging = self.paths.downloads / f"{version}.{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            t0 = time.perf_counter()
            t.bytes = await asyncio.wait_for(
                download_bundle(nc, version, staging), self.options.download_timeout_s
            )
            t.download_s = time.perf_counter() - t0
            self._set("pending", "verifying")
            t0 = time.perf_counter()
            manifest = await asyncio.to_thread(verify_bundle_signature, staging, keys)
            if manifest.bundle_version != version:
                raise BundleTampered(version, f"bundle says it is {manifest.bundle_version}")
            final = self.paths.bundle_dir(version)
            await asyncio.to_thread(self.files.move_into_place, staging, final)
            t.verify_s = time.perf_counter() - t0
            return final
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)

    async def _rollback(self, old: IntentModel, version: str, bad: Path, reason: str) -> None:
        await self.host.swap_model(old)
        pointer = ActivePointer(str(old.bundle_dir), old.version, None)
        await asyncio.to_thread(self.paths.write_active, pointer)
        await asyncio.to_thread(self.files.discard, bad)
        message = f"rolled back to {old.version}: {reason}"
        log.warning("bundle %s %s", version, message)
        await self._fail(version, "rolled_back", message)

    def _set(self, status: str, message: str) -> None:
        self.status.bundle_status = status
        self.status.bundle_message = message

    async def _fail(self, version: str, status: str, message: str, permanent: bool = True) -> None:
        log.warning("bundle %s: %s: %s", version, status, message)
        self._set(status, message)
        if permanent and status in _PERMANENT:
            await self.failed.remember(version, status, message)
        await self.reporter.bundle(version, status, message, self.host.model.version)
