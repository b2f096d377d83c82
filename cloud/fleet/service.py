"""The running fleet tier: NATS connection, registry, heartbeat ingest, config store and the
rollout controller, started and stopped together (by the console or ``aivos cloud fleet``).

On PostgreSQL (`db`) several replicas may run against one database; the rollout controller
then ticks only on the replica holding the coordinator lease (`lease.Lease`, NATS KV), and
another takes over when it dies. On SQLite (the default) there is one replica and no lease.
`js_replicas` > 1 (a hub cluster) creates the config bucket at that many replicas and raises
the config bucket and the model store to it when they exist at fewer. Heartbeats and reports
arrive in a queue group (`ingest.QUEUE_GROUP`), so replicas write each one once.

Opening the buckets waits up to `js_ready_timeout_s` for a hub cluster that cannot answer
yet (just started, or a node lost). Started with ``wait_for_hub=False`` (the console), the
service keeps trying in the background for as long as it runs, whatever stopped a try
(hub unreachable, JetStream not ready, refused). `link` (`link.FleetLink`) holds the link's
state for the console and logs the failures: a hub whose config refuses this identity
(`JetStreamRefused`) is retried every `retry_cap_s` at once and logged at ERROR once, not
every try."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from pathlib import Path
from types import TracebackType

from nats.aio.client import Client as NATS

from aivos.cloud.fleet.config import ConfigStore
from aivos.cloud.fleet.ingest import HeartbeatIngest
from aivos.cloud.fleet.lease import ROLLOUT_LEASE, Lease
from aivos.cloud.fleet.link import FleetLink
from aivos.cloud.fleet.registry import Registry, open_registry
from aivos.cloud.fleet.rollout import RolloutController
from aivos.cloud.jetstream import scale_streams
from aivos.shared.errors import JetStreamRefused
from aivos.shared.natsconf.connect import backoff_delay, close_nats, connect_nats
from aivos.shared.subjects import HUB_DOMAIN

__all__ = ["FleetService"]

log = logging.getLogger(__name__)


class FleetService:
    def __init__(
        self,
        data_dir: str | Path,
        nats_url: str,
        *,
        tick_s: float = 1.0,
        flush_interval_s: float = 0.2,
        domain: str | None = HUB_DOMAIN,
        db: str | None = None,
        js_replicas: int = 1,
        coordinator_lease: bool | None = None,
        lease_ttl_s: float = 5.0,
        lease_name: str = ROLLOUT_LEASE,
        js_ready_timeout_s: float = 60.0,
        retry_cap_s: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.nats_url = nats_url
        self.domain = domain
        self.tick_s = tick_s
        self.js_replicas = js_replicas
        self.js_ready_timeout_s = js_ready_timeout_s
        self.retry_cap_s = retry_cap_s  # the longest wait between two background tries
        # None: a lease exactly when replicas can share the database (PostgreSQL)
        self.use_lease = bool(db) if coordinator_lease is None else coordinator_lease
        self.lease_ttl_s = lease_ttl_s
        self.lease_name = lease_name
        self.lease: Lease | None = None
        self.registry: Registry = open_registry(db, self.data_dir)
        self.ingest = HeartbeatIngest(self.registry, flush_interval_s=flush_interval_s)
        self.nc: NATS | None = None
        self.config: ConfigStore | None = None
        self.controller: RolloutController | None = None
        self._connector: asyncio.Task[None] | None = None
        self.connect_failures = 0  # background tries that failed (wait_for_hub=False)
        self.link = FleetLink()

    async def start(self, *, wait_for_hub: bool = True) -> FleetService:
        """Connect and start ingest + controller. With ``wait_for_hub=False`` an unreachable
        hub does not fail the start: the connection is retried in the background (the
        console serves the registry meanwhile; config and rollout actions report LinkDown)."""
        self.link.starting()
        if wait_for_hub:
            await self._connect(connect_timeout_s=30.0)
        else:
            self._connector = asyncio.create_task(self._connect_forever(), name="fleet-connect")
        return self

    async def _connect(self, connect_timeout_s: float) -> None:
        """One try: all of it (connection, buckets, lease, ingest) or, on any error, none
        of it, so the next try starts clean."""
        nc = await connect_nats(
            self.nats_url.split(","),
            name="aivos-fleet",
            connect_timeout_s=connect_timeout_s,
            on_state=self.link.nats_state,
        )
        lease: Lease | None = None
        try:
            js = nc.jetstream(domain=self.domain)
            ready = self.js_ready_timeout_s
            config = await ConfigStore.open(
                js, data_dir=self.data_dir, replicas=self.js_replicas, ready_timeout_s=ready
            )
            if self.js_replicas > 1:
                await scale_streams(js, self.js_replicas, ready_timeout_s=ready)
            if self.use_lease:
                lease = Lease(
                    js,
                    self.lease_name,
                    ttl_s=self.lease_ttl_s,
                    replicas=self.js_replicas,
                    ready_timeout_s=ready,
                )
                await lease.start()
            await self.ingest.start(nc)
        except BaseException:
            if lease is not None:
                await lease.stop()
            await self.ingest.stop()
            await close_nats(nc)
            raise
        self.nc, self.config, self.lease = nc, config, lease
        self.controller = RolloutController(
            self.registry, config, tick_s=self.tick_s, leadership=lease
        )
        self.controller.start()
        self.link.connected()
        log.info("fleet service up (data dir %s)", self.data_dir)

    async def _connect_forever(self) -> None:
        """`_connect` until it succeeds or the service stops: whatever failed a try (the
        hub unreachable, JetStream not answering in time, a refusal) is recorded in `link`
        (which logs it) and tried again; the console serves the registry meanwhile."""
        while True:
            try:
                await self._connect(connect_timeout_s=10.0)
                return
            except Exception as exc:
                self.connect_failures += 1
                delay = self._retry_delay(exc)
                self.link.failed(exc, retry_in_s=delay)
                await asyncio.sleep(delay)

    def _retry_delay(self, exc: Exception) -> float:
        """Backoff from 1 s to `retry_cap_s`; a refusal waits the cap at once (with jitter):
        only a change of the hub's config (a reload) can end it, and fast tries only fill
        the log."""
        if isinstance(exc, JetStreamRefused):
            return self.retry_cap_s * random.uniform(0.8, 1.0)
        return backoff_delay(self.connect_failures, base=1.0, cap=self.retry_cap_s)

    async def stop(self) -> None:
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self.controller is not None:
            await self.controller.stop()
        if self.lease is not None:
            await self.lease.stop()
        await self.ingest.stop()
        if self.nc is not None:
            await close_nats(self.nc)
            self.nc = None
        self.link.stopped()
        self.registry.close()

    async def __aenter__(self) -> FleetService:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
