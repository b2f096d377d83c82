"""Heartbeats: the site's health on ``aivos.hb.<site>`` every `interval_s` seconds.

A heartbeat is telemetry: it passes the residency gate (`DataClass.TELEMETRY`) like any
data leaving the site, and is dropped (and counted) when the policy keeps telemetry on
site. While the link is down nothing is sent or queued: a stale heartbeat would make the
registry show an offline site as healthy.

When the link comes up (`link_up`, an uplink listener) a heartbeat goes out at once, and
again as soon as the hub answers a request: the site's leaf node may accept the agent's
connection before its own link to the hub is up, and a beat sent then is lost. So a newly
enrolled or reconnected site shows online within a second or so, not one period later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import msgspec
import psutil

from aivos.edge.fleet.host import FleetHost
from aivos.edge.fleet.status import FleetStatus
from aivos.shared import __version__ as _aivos_version
from aivos.shared.errors import ResidencyDenied
from aivos.shared.fleet import Decisions, Heartbeat, now_ms
from aivos.shared.natsconf.connect import backoff_delay
from aivos.shared.residency import DataClass
from aivos.shared.subjects import CONFIG_BUCKET, HUB_DOMAIN, heartbeat_subject

__all__ = ["HeartbeatPublisher", "build_heartbeat", "pending_approvals"]

log = logging.getLogger(__name__)

# A request only the hub's JetStream answers (a site may ask it): any reply, even
# "stream not found", proves that the path to the hub is up.
_HUB_PROBE = f"$JS.{HUB_DOMAIN}.API.STREAM.INFO.KV_{CONFIG_BUCKET}"


class _Sample(msgspec.Struct, frozen=True):
    outbox_depth: int
    job_backlog: int
    cpu_percent: float
    mem_percent: float
    disk_percent: float
    approvals_pending: int = 0
    approval_oldest_s: float = 0.0


# runs waiting on an approve step, and when the oldest wait began (ISO-8601 UTC text)
_PENDING_APPROVALS = (
    "SELECT count(DISTINCT r.id), min(s.started_at) FROM workflow_runs r "
    "JOIN workflow_steps s ON s.run_id = r.id WHERE r.state = 'waiting_approval' "
    "AND s.kind = 'approve' AND s.state = 'waiting'"
)


def pending_approvals(host: FleetHost) -> tuple[int, float]:
    """How many runs wait for an operator's approval and for how long (seconds) the oldest
    has waited: the console shows a site where someone must decide. Blocking (SQLite)."""
    count, oldest = host.store.readers.get().execute(_PENDING_APPROVALS).fetchone()
    if not count or oldest is None:
        return 0, 0.0
    waited = datetime.now(UTC) - datetime.fromisoformat(oldest)
    return int(count), round(max(0.0, waited.total_seconds()), 1)


def _sample(host: FleetHost) -> _Sample:
    """Blocking reads (psutil, SQLite): run in a worker thread."""
    try:
        disk = psutil.disk_usage(str(host.data_path)).percent
    except OSError:
        disk = 0.0
    backlog = host.backlog()
    approvals, oldest = pending_approvals(host)
    return _Sample(
        outbox_depth=backlog.outbox_depth,
        job_backlog=backlog.job_backlog,
        cpu_percent=psutil.cpu_percent(interval=None),
        mem_percent=psutil.virtual_memory().percent,
        disk_percent=disk,
        approvals_pending=approvals,
        approval_oldest_s=oldest,
    )


async def build_heartbeat(
    host: FleetHost, status: FleetStatus, interval_s: float, stats_window_s: float
) -> Heartbeat:
    sample = await asyncio.to_thread(_sample, host)
    snap = host.stats.snapshot(stats_window_s)
    model = host.model
    return Heartbeat(
        site_id=host.site_id,
        agent_version=_aivos_version,
        bundle_version=model.version,
        provider=model.provider,
        link_state=host.uplink.state,
        outbox_depth=sample.outbox_depth,
        job_backlog=sample.job_backlog,
        request_rate=snap.rate_per_s,
        decisions=Decisions(
            local=snap.decisions.get("local", 0),
            escalate=snap.decisions.get("escalate", 0),
            refuse=snap.decisions.get("refuse", 0),
        ),
        p50_ms=snap.p50_ms,
        p99_ms=snap.p99_ms,
        cpu_percent=sample.cpu_percent,
        mem_percent=sample.mem_percent,
        disk_percent=sample.disk_percent,
        config_version_applied=status.config_version_applied,
        config_error=status.config_error,
        sent_at_unix_ms=now_ms(),
        bundle_status=status.bundle_status,
        bundle_message=status.bundle_message,
        bundle_target=status.bundle_target,
        error_rate=round(snap.error_rate, 6),
        interval_s=interval_s,
        approvals_pending=sample.approvals_pending,
        approval_oldest_s=sample.approval_oldest_s,
    )


class HeartbeatPublisher:
    def __init__(
        self,
        host: FleetHost,
        status: FleetStatus,
        interval_s: float = 10.0,
        stats_window_s: float = 60.0,
    ) -> None:
        self.host = host
        self.status = status
        self.stats_window_s = stats_window_s
        self._interval_s = interval_s
        self._changed = asyncio.Event()
        self._link_up = asyncio.Event()
        self._subject = heartbeat_subject(host.site_id)
        registry = host.metrics_registry
        self._m_sent = registry.counter("aivos_fleet_heartbeats_total", "Heartbeats by outcome.")
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def set_interval(self, interval_s: float) -> None:
        """Change the period (remote config); the next beat follows the new period."""
        if interval_s != self._interval_s:
            self._interval_s = interval_s
            self._changed.set()

    async def publish_once(self) -> bool:
        """Send one heartbeat now; False when skipped (link down) or denied by the policy."""
        uplink = self.host.uplink
        nc = uplink.nc
        if nc is None or not uplink.connected:
            self.status.heartbeats_skipped += 1
            self._m_sent.inc(outcome="skipped_link_down")
            return False
        hb = await build_heartbeat(self.host, self.status, self._interval_s, self.stats_window_s)
        try:
            decision = self.host.gate.apply(DataClass.TELEMETRY, msgspec.to_builtins(hb))
        except ResidencyDenied:
            self.status.heartbeats_denied += 1
            self._m_sent.inc(outcome="denied")
            return False
        try:
            await nc.publish(self._subject, msgspec.json.encode(decision.payload))
        except Exception as exc:  # the link dropped between the check and the send
            log.info("heartbeat not sent: %s", type(exc).__name__)
            self.status.heartbeats_skipped += 1
            self._m_sent.inc(outcome="skipped_link_down")
            return False
        self.status.heartbeats_sent += 1
        self._m_sent.inc(outcome="sent")
        return True

    def link_up(self) -> None:
        """Uplink listener: the link (re)connected; beat now and once the hub answers."""
        self._link_up.set()

    async def _announce(self) -> None:
        while True:
            await self._link_up.wait()
            self._link_up.clear()
            self._changed.set()  # a beat now
            if await self._hub_answers():
                self._changed.set()  # and one that surely reaches the hub

    async def _hub_answers(self) -> bool:
        """Probe the hub until it answers, for at most one period; True when it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._interval_s
        attempt = 0
        while loop.time() < deadline:
            nc = self.host.uplink.nc
            if nc is not None and self.host.uplink.connected:
                try:
                    await nc.request(_HUB_PROBE, b"", timeout=0.5)
                    return True
                except Exception:  # no responders: the leaf has no hub (yet); timeouts
                    pass
            await asyncio.sleep(backoff_delay(attempt, 0.05, 0.5))
            attempt += 1
        return False

    async def run(self) -> None:
        announcer = asyncio.create_task(self._announce(), name="fleet-heartbeat-announce")
        try:
            await self._beat_forever()
        finally:
            announcer.cancel()
            with contextlib.suppress(BaseException):
                await announcer

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat failed")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._interval_s)
