"""What the fleet client knows about its own progress; heartbeats report it."""

from __future__ import annotations

import msgspec

__all__ = ["FleetStatus"]


class FleetStatus(msgspec.Struct):
    """Mutable, single event loop. Bundle fields follow `shared.fleet.BundleStatus`."""

    config_version_applied: int = 0
    config_error: str | None = None
    bundle_status: str = "ok"
    bundle_message: str = ""
    bundle_target: str | None = None
    heartbeats_sent: int = 0
    heartbeats_denied: int = 0  # refused by the residency gate (telemetry not allowed)
    heartbeats_skipped: int = 0  # link down: not sent, not queued
