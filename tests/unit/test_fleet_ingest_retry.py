"""A heartbeat batch that fails to write keeps every part of the batch for the next flush.

On PostgreSQL a batch can be a deadlock's victim; the config and bundle reports flushed with
it must not be dropped when the heartbeat write raises before they are written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from aivos.cloud.fleet.ingest import HeartbeatIngest
from aivos.cloud.fleet.registry import open_registry
from aivos.shared.fleet import ConfigReport, Heartbeat
from tests.fixtures.fleet import heartbeat


class _FailsOnce:
    """Wraps a real registry: the first heartbeat write raises (an injected fault)."""

    def __init__(self, registry: object) -> None:
        self._registry = registry
        self.failed = False

    def ingest_heartbeats(self, beats: Sequence[tuple[Heartbeat, float]]) -> int:
        if not self.failed:
            self.failed = True
            raise RuntimeError("injected: the batch's transaction was aborted")
        return self._registry.ingest_heartbeats(beats)  # type: ignore[attr-defined,no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._registry, name)


@pytest.mark.asyncio
async def test_reports_survive_a_failed_heartbeat_write(tmp_path: Path) -> None:
    registry = open_registry(None, tmp_path / "fleet")
    try:
        registry.register_site("site-a")
        flaky = _FailsOnce(registry)
        ingest = HeartbeatIngest(flaky, flush_interval_s=1.0, max_batch=10)  # type: ignore[arg-type]
        ingest._beats.append((heartbeat("site-a"), 1.0))
        ingest._cfg.append((ConfigReport(site="site-a", version=3, status="applied"), 1.0))
        with pytest.raises(RuntimeError):
            await ingest.flush()
        assert ingest.pending() == 2  # the heartbeat and the report wait for the retry
        await ingest.flush()
        assert ingest.pending() == 0
        site = registry.site("site-a")
        assert site.config_applied == 3 and site.config_error is None
        assert registry.heartbeat("site-a") is not None
    finally:
        registry.close()
