"""Heartbeat and report ingest: subscribe on the hub, batch-write to the registry.

Messages are decoded on the event loop (cheap) and buffered; a flusher writes each batch
in one SQLite transaction in a worker thread, every `flush_interval_s` or as soon as
`max_batch` messages wait. A malformed message is counted and dropped, never fatal.

The subscriptions are in the queue group `QUEUE_GROUP`: several fleet replicas on one
(PostgreSQL) registry share the messages, so each heartbeat and report is written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from aivos.cloud.fleet.registry import Registry
from aivos.shared.errors import AivosError
from aivos.shared.fleet import (
    BundleReport,
    ConfigReport,
    Heartbeat,
    bundle_report_all,
    config_report_all,
    decode_bundle_report,
    decode_config_report,
    decode_heartbeat,
    now_ms,
)
from aivos.shared.subjects import heartbeat_all

__all__ = ["QUEUE_GROUP", "IngestCounters", "HeartbeatIngest"]

log = logging.getLogger(__name__)

QUEUE_GROUP = "aivos-fleet"
"""Queue group of the heartbeat and report subscriptions (one writer per message)."""


class IngestCounters(msgspec.Struct):
    received: int = 0
    written: int = 0
    invalid: int = 0
    batches: int = 0
    # send -> committed lag of the last batch (ms, from the heartbeat's sent_at_unix_ms)
    last_lag_ms: float = 0.0
    max_lag_ms: float = 0.0


class HeartbeatIngest:
    def __init__(
        self, registry: Registry, *, flush_interval_s: float = 0.2, max_batch: int = 2000
    ) -> None:
        self.registry = registry
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.counters = IngestCounters()
        self._beats: list[tuple[Heartbeat, float]] = []
        self._cfg: list[tuple[ConfigReport, float]] = []
        self._bundle: list[tuple[BundleReport, float]] = []
        self._subs: list[Subscription] = []
        self._writing = 0  # messages of the batch being written
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, nc: NATS) -> None:
        q = QUEUE_GROUP
        self._subs = [
            await nc.subscribe(
                heartbeat_all(), queue=q, cb=self._on_heartbeat, pending_msgs_limit=200_000
            ),
            await nc.subscribe(config_report_all(), queue=q, cb=self._on_config_report),
            await nc.subscribe(bundle_report_all(), queue=q, cb=self._on_bundle_report),
        ]
        await nc.flush()
        self._task = asyncio.create_task(self._flusher(), name="fleet-ingest")

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    def pending(self) -> int:
        """Messages received and not written yet: queued in the subscriptions, buffered, or
        in the batch being written."""
        queued = sum(sub.pending_msgs for sub in self._subs) + self._writing
        return queued + len(self._beats) + len(self._cfg) + len(self._bundle)

    async def _on_heartbeat(self, msg: Msg) -> None:
        self.counters.received += 1
        try:
            hb = decode_heartbeat(msg.data)
        except AivosError:
            self.counters.invalid += 1
            return
        if msg.subject.rsplit(".", 1)[-1] != hb.site_id:
            self.counters.invalid += 1  # a site may only speak for itself
            return
        self._beats.append((hb, time.time()))
        if len(self._beats) >= self.max_batch:
            self._wake.set()

    async def _on_config_report(self, msg: Msg) -> None:
        try:
            report = decode_config_report(msg.data)
        except AivosError:
            self.counters.invalid += 1
            return
        self._cfg.append((report, time.time()))
        self._wake.set()

    async def _on_bundle_report(self, msg: Msg) -> None:
        try:
            report = decode_bundle_report(msg.data)
        except AivosError:
            self.counters.invalid += 1
            return
        self._bundle.append((report, time.time()))
        self._wake.set()

    async def _flusher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("fleet ingest: batch write failed; retrying")
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        beats, self._beats = self._beats, []
        cfg, self._cfg = self._cfg, []
        bundle, self._bundle = self._bundle, []
        self._writing = len(beats) + len(cfg) + len(bundle)
        try:
            await self._write(beats, cfg, bundle)
        finally:
            self._writing = 0

    async def _write(
        self,
        beats: list[tuple[Heartbeat, float]],
        cfg: list[tuple[ConfigReport, float]],
        bundle: list[tuple[BundleReport, float]],
    ) -> None:
        if beats:
            try:
                await asyncio.to_thread(self.registry.ingest_heartbeats, beats)
            except Exception:
                # nothing of this batch is written: every part goes back for the retry
                # (a deadlock victim on PostgreSQL must not drop the reports behind it)
                self._beats[:0] = beats
                self._cfg[:0] = cfg
                self._bundle[:0] = bundle
                raise
            done = now_ms()
            lags = [done - hb.sent_at_unix_ms for hb, _ in beats if hb.sent_at_unix_ms]
            if lags:
                self.counters.last_lag_ms = float(max(lags))
                self.counters.max_lag_ms = max(self.counters.max_lag_ms, float(max(lags)))
            self.counters.written += len(beats)
            self.counters.batches += 1
        if cfg:
            try:
                await asyncio.to_thread(self.registry.add_config_reports, cfg)
            except Exception:
                self._cfg[:0] = cfg
                self._bundle[:0] = bundle
                raise
        if bundle:
            try:
                await asyncio.to_thread(self.registry.add_bundle_reports, bundle)
            except Exception:
                self._bundle[:0] = bundle
                raise
