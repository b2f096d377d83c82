"""What the fleet client needs of the agent it runs in. The agent satisfies `FleetHost`; the
fleet code depends on this Protocol only, never on the agent module."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import msgspec

from aivos.edge.fleet.options import FleetOptions
from aivos.edge.intent.runtime import IntentModel
from aivos.edge.router import RouterPolicy
from aivos.edge.stats import RollingStats
from aivos.edge.store import Store
from aivos.edge.uplink.link import Uplink
from aivos.shared.metrics import Registry
from aivos.shared.residency import ExitGate, ResidencyPolicy

__all__ = ["Backlog", "FleetHost"]


class Backlog(msgspec.Struct, frozen=True):
    outbox_depth: int  # records waiting to leave the site
    job_backlog: int  # jobs waiting for the uplink


class FleetHost(Protocol):
    @property
    def site_id(self) -> str: ...
    @property
    def data_path(self) -> Path: ...
    @property
    def fleet_options(self) -> FleetOptions: ...
    @property
    def uplink(self) -> Uplink: ...
    @property
    def gate(self) -> ExitGate:
        """The live exit gate: heartbeats and reports are telemetry and pass through it."""
        ...

    @property
    def stats(self) -> RollingStats: ...
    @property
    def store(self) -> Store:
        """The site's store: rejected remote config is written to its audit log."""
        ...

    @property
    def metrics_registry(self) -> Registry: ...
    @property
    def model(self) -> IntentModel:
        """The live model."""
        ...

    @property
    def policy(self) -> RouterPolicy:
        """The router policy in force (at the fleet client's start: the site's own)."""
        ...

    @property
    def residency(self) -> ResidencyPolicy: ...

    def load_model(self, bundle: Path) -> IntentModel:
        """Load a bundle the way the agent loads its own (blocking: call from a thread)."""
        ...

    async def swap_model(self, model: IntentModel) -> IntentModel:
        """Make `model` live; returns the model it replaced."""
        ...

    def apply_remote_config(
        self, router: RouterPolicy | None = None, residency: ResidencyPolicy | None = None
    ) -> None:
        """Validate, then apply without a restart; raises (and changes nothing) when invalid."""
        ...

    def backlog(self) -> Backlog:
        """Blocking (SQLite): call from a thread."""
        ...
