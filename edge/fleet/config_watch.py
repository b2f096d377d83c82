"""The watch on a site's desired config in the hub's JetStream KV bucket ``aivos_config``:
the keys ``_defaults`` and ``<site>``, handed on as one pair once both have settled.

The watch runs on the uplink's connection; it is rebuilt after every reconnect (JetStream
consumers may not survive a long outage) and retried while the bucket does not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.kv import KV_DEL, KV_PURGE

from aivos.edge.uplink.link import Uplink
from aivos.shared.fleet import DEFAULTS_KEY
from aivos.shared.subjects import CONFIG_BUCKET, HUB_DOMAIN

__all__ = ["ConfigWatch", "OnValues"]

log = logging.getLogger(__name__)

# (defaults, site): the raw KV values, None where a key is absent or deleted
OnValues = Callable[[bytes | None, bytes | None], Awaitable[Any]]


class ConfigWatch:
    def __init__(
        self, uplink: Uplink, site_key: str, on_values: OnValues, *, retry_s: float = 2.0
    ) -> None:
        self.uplink = uplink
        self.site_key = site_key
        self.on_values = on_values
        self.retry_s = retry_s
        self.watching = asyncio.Event()  # set while a watch is established
        self._kick = asyncio.Event()

    def reconnected(self) -> None:
        """Uplink listener: rebuild the watch on the (re)connected link."""
        self._kick.set()

    async def run(self) -> None:
        uplink = self.uplink
        while True:
            while not await uplink.wait_up(5.0):
                pass
            nc = uplink.nc
            assert nc is not None
            self._kick.clear()
            watch = asyncio.create_task(self._watch(nc))
            kick = asyncio.create_task(self._kick.wait())
            try:
                done, _ = await asyncio.wait({watch, kick}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.watching.clear()
                for task in (watch, kick):
                    task.cancel()
                for task in (watch, kick):
                    with contextlib.suppress(BaseException):
                        await task
            if watch in done and not watch.cancelled():
                exc = watch.exception()
                log.info(
                    "config watch ended (%s); retrying in %.1fs",
                    type(exc).__name__ if exc else "closed",
                    self.retry_s,
                )
                await asyncio.sleep(self.retry_s)

    async def _watch(self, nc: NATS) -> None:
        js = nc.jetstream(domain=HUB_DOMAIN)
        kv = await js.key_value(CONFIG_BUCKET)  # BucketNotFoundError until the cloud makes it
        values: dict[str, bytes | None] = {DEFAULTS_KEY: None, self.site_key: None}
        initial: set[str] = set()
        updates: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        watchers = [await kv.watch(key) for key in values]
        pumps = [
            asyncio.create_task(self._pump(key, w, updates))
            for key, w in zip(values, watchers, strict=True)
        ]
        self.watching.set()
        try:
            while True:
                key, entry = await updates.get()
                if isinstance(entry, BaseException):
                    raise entry
                if entry is None:
                    initial.add(key)
                else:
                    deleted = entry.operation in (KV_DEL, KV_PURGE)
                    values[key] = None if deleted else entry.value
                    if entry.delta == 0:
                        initial.add(key)
                if len(initial) == len(values) and updates.empty():
                    await self.on_values(values[DEFAULTS_KEY], values[self.site_key])
        finally:
            for pump in pumps:
                pump.cancel()
            for w in watchers:
                with contextlib.suppress(Exception):
                    await w.stop()

    @staticmethod
    async def _pump(key: str, watcher: Any, out: asyncio.Queue[tuple[str, Any]]) -> None:
        try:
            async for entry in watcher:
                await out.put((key, entry))
            await out.put((key, ConnectionError("watch stopped")))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await out.put((key, exc))
