"""The running fleet tier: NATS connection, registry, heartbeat ingest, config store and the
rollout controller, started and stopped together (by the console or ``aivos cloud fleet``)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

from nats.aio.client import Client as NATS

from cloud.fleet.config import ConfigStore
from cloud.fleet.ingest import HeartbeatIngest
from cloud.fleet.registry import Registry, SqliteRegistry
from cloud.fleet.rollout import RolloutController
from shared.natsconf.connect import connect_nats
from shared.subjects import HUB_DOMAIN

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
    ) -> None:
        self.data_dir = Path(data_dir)
        self.nats_url = nats_url
        self.domain = domain
        self.tick_s = tick_s
        self.registry: Registry = SqliteRegistry.open(self.data_dir)
        self.ingest = HeartbeatIngest(self.registry, flush_interval_s=flush_interval_s)
        self.nc: NATS | None = None
        self.config: ConfigStore | None = None
        self.controller: RolloutController | None = None

    async def start(self) -> FleetService:
        self.nc = await connect_nats(self.nats_url, name="aivos-fleet")
        js = self.nc.jetstream(domain=self.domain)
        self.config = await ConfigStore.open(js)
        await self.ingest.start(self.nc)
        self.controller = RolloutController(self.registry, self.config, tick_s=self.tick_s)
        self.controller.start()
        log.info("fleet service up (data dir %s)", self.data_dir)
        return self

    async def stop(self) -> None:
        if self.controller is not None:
            await self.controller.stop()
        await self.ingest.stop()
        if self.nc is not None:
            await self.nc.drain()
            self.nc = None
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
