"""Publishing config and bundle reports to the fleet registry (telemetry, through the gate)."""

from __future__ import annotations

import logging

import msgspec

from aivos.edge.fleet.host import FleetHost
from aivos.shared.errors import ResidencyDenied
from aivos.shared.fleet import (
    BundleReport,
    ConfigReport,
    bundle_report_subject,
    config_report_subject,
    now_ms,
)
from aivos.shared.residency import DataClass

__all__ = ["Reporter"]

log = logging.getLogger(__name__)


class Reporter:
    """Best effort: a report lost while the link is down is covered by the next heartbeat,
    which carries the same state (applied config version and error, bundle status)."""

    def __init__(self, host: FleetHost) -> None:
        self.host = host
        self.site = host.site_id

    async def config(self, version: int, status: str, error: str | None = None) -> None:
        report = ConfigReport(
            site=self.site,
            version=version,
            status=status,  # type: ignore[arg-type]
            error=error,
            sent_at_unix_ms=now_ms(),
        )
        await self._send(config_report_subject(self.site), report)

    async def bundle(
        self,
        version: str,
        status: str,
        message: str = "",
        previous: str | None = None,
        canary_accuracy: float | None = None,
    ) -> None:
        report = BundleReport(
            site=self.site,
            bundle_version=version,
            status=status,
            message=message,
            previous_version=previous,
            canary_accuracy=canary_accuracy,
            sent_at_unix_ms=now_ms(),
        )
        await self._send(bundle_report_subject(self.site), report)

    async def _send(self, subject: str, report: msgspec.Struct) -> None:
        uplink = self.host.uplink
        if uplink.nc is None or not uplink.connected:
            return
        try:
            decision = self.host.gate.apply(DataClass.TELEMETRY, msgspec.to_builtins(report))
            await uplink.nc.publish(subject, msgspec.json.encode(decision.payload))
        except ResidencyDenied:
            return
        except Exception as exc:
            log.info("report on %s not sent: %s", subject, type(exc).__name__)
