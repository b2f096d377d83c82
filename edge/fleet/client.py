"""`EdgeFleetClient`: the edge side of fleet management, started by the agent when an
uplink is configured. It runs three loops on the agent's uplink connection:

* heartbeats (`HeartbeatPublisher`),
* the remote config watch (`RemoteConfig`),
* bundle rollouts (`BundleManager`), driven by the config's ``bundle_version``.

Each loop runs under a `Supervisor` (the agent's, when it passes one): a loop that raises
is restarted with back-off and shows as `restarting` in `/readyz` meanwhile.
"""

from __future__ import annotations

import asyncio
import logging

from aivos.edge.fleet.bundles import BundleManager
from aivos.edge.fleet.config_apply import ResolvedConfig
from aivos.edge.fleet.heartbeat import HeartbeatPublisher
from aivos.edge.fleet.host import FleetHost
from aivos.edge.fleet.layout import FleetPaths
from aivos.edge.fleet.options import FleetOptions
from aivos.edge.fleet.remote_config import RemoteConfig
from aivos.edge.fleet.reports import Reporter
from aivos.edge.fleet.status import FleetStatus
from aivos.edge.supervise import Supervisor

__all__ = ["EdgeFleetClient"]

log = logging.getLogger(__name__)


class EdgeFleetClient:
    def __init__(
        self,
        host: FleetHost,
        options: FleetOptions | None = None,
        *,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.host = host
        self.options = options or host.fleet_options
        self.paths = FleetPaths(host.data_path, self.options.trusted_keys_dir)
        self.status = FleetStatus()
        self.reporter = Reporter(host)
        self.supervisor = supervisor or Supervisor()
        self._tasks: list[str] = []  # the supervised loops' names
        # Built in start(): they read the live agent (model, policies).
        self.heartbeats: HeartbeatPublisher
        self.config: RemoteConfig
        self.bundles: BundleManager

    async def start(self) -> None:
        """Start after `Agent.start` has loaded the model and store."""
        host, opts = self.host, self.options
        await asyncio.to_thread(self.paths.fleet.mkdir, parents=True, exist_ok=True)
        self.heartbeats = HeartbeatPublisher(
            host, self.status, opts.heartbeat_interval_s, opts.stats_window_s
        )
        self.bundles = BundleManager(host, self.status, self.reporter, self.paths, opts)
        self.config = RemoteConfig(
            host,
            self.status,
            self.reporter,
            self.paths,
            self._on_config,
            retry_s=opts.retry_s,
            options=opts,
        )
        await self.config.apply_persisted()
        host.uplink.on_up(self._on_link_up)
        if host.uplink.connected:  # connected before the listener was registered
            self.heartbeats.link_up()
        loops = {"fleet-bundles": self.bundles.run}
        if host.uplink.url:
            loops |= {"fleet-heartbeats": self.heartbeats.run, "fleet-config": self.config.run}
        for name, loop in loops.items():
            self.supervisor.start(name, loop)
        self._tasks = list(loops)
        log.info("fleet client started for site %s", host.site_id)

    async def stop(self) -> None:
        for name in self._tasks:
            await self.supervisor.stop(name)
        self._tasks = []

    def _on_link_up(self) -> None:
        self.heartbeats.link_up()
        self.config.reconnected()
        self.bundles.poke()

    async def _on_config(self, resolved: ResolvedConfig) -> None:
        if resolved.heartbeat_interval_s is not None:
            self.heartbeats.set_interval(resolved.heartbeat_interval_s)
        else:
            self.heartbeats.set_interval(self.options.heartbeat_interval_s)
        self.bundles.set_desired(resolved.bundle_version)
