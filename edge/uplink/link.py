"""The site's one NATS connection, opened in the background so the box starts (and keeps
answering locally) while the WAN link is down.

States: `offline` (no URL configured), `connecting`, `up`, `down` (was up, reconnecting).
Listeners registered with `on_up` run every time the link (re)connects: the job runner
and the outbox drainer use that to resume at once instead of waiting for a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS

from aivos.shared.natsconf.connect import backoff_delay, close_nats, connect_nats
from aivos.shared.natsconf.permissions import site_inbox_prefix

__all__ = ["Uplink"]

log = logging.getLogger(__name__)

Listener = Callable[[], Awaitable[None] | None]


class Uplink:
    def __init__(self, url: str | None, site: str) -> None:
        self.url = url
        self.site = site
        self.nc: NATS | None = None
        self.state = "offline" if not url else "connecting"
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()

    @property
    def connected(self) -> bool:
        nc = self.nc
        return nc is not None and nc.is_connected and not nc.is_reconnecting

    def on_up(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        if self.url:
            self._task = asyncio.create_task(self._connect_forever())

    async def wait_up(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout_s)
        return self.connected

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.nc is not None:
            # drain is refused while reconnecting (the WAN is down): close_nats closes then
            await close_nats(self.nc)
        self.state = "offline" if not self.url else "closed"

    async def _connect_forever(self) -> None:
        assert self.url
        attempt = 0
        while self.nc is None:
            try:
                self.nc = await connect_nats(
                    self.url,
                    name=f"aivos-edge-{self.site}",
                    on_state=self._on_state,
                    connect_timeout_s=5.0,
                    # replies come back only to the site's own inbox (hub permissions)
                    inbox_prefix=site_inbox_prefix(self.site),
                )
            except Exception as exc:  # LinkDown after its own retries; keep trying quietly
                delay = backoff_delay(attempt, 0.5, 10.0)
                attempt += 1
                log.info(
                    "uplink to %s not reachable (%s); retrying in %.1fs",
                    self.url,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
        await self._on_state("connected")

    async def _on_state(self, state: str) -> None:
        if state in ("connected", "reconnected"):
            self.state = "up"
            self._up.set()
            for listener in self._listeners:
                try:
                    result = listener()
                    if result is not None:
                        await result
                except Exception:
                    log.exception("uplink listener failed")
        elif state == "disconnected":
            self.state = "down"
            self._up.clear()
        elif state == "closed":
            self.state = "closed"
            self._up.clear()
