"""The watch on a site's desired config in the hub's JetStream KV bucket ``aivos_config``:
the keys ``_defaults`` and ``<site>``, handed on as one pair once both have settled.

Each key is watched by its own ephemeral push consumer (`watch_key`). It is *named*, so
nats-py creates it with ``$JS.API.CONSUMER.CREATE.KV_aivos_config.<name>.<filter>``: the
key's subject is part of the API subject, and the hub's permissions
(`shared.natsconf.permissions.site_permissions`) allow that form only for the site's own
key and the defaults key. The server checks that the filter in the request matches the one
in the subject, so a site cannot open a consumer that reads another site's config
(nats-py's own ``KeyValue.watch`` creates unnamed consumers, which cannot be pinned).

The watch runs on the uplink's connection; it is rebuilt after every reconnect (JetStream
consumers may not survive a long outage) and retried while the bucket does not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from aivos.edge.uplink.link import Uplink
from aivos.shared.fleet import DEFAULTS_KEY
from aivos.shared.subjects import CONFIG_BUCKET, HUB_DOMAIN

__all__ = ["ConfigWatch", "KeyEntry", "OnValues", "watch_key"]

log = logging.getLogger(__name__)

# (defaults, site): the raw KV values, None where a key is absent or deleted
OnValues = Callable[[bytes | None, bytes | None], Awaitable[Any]]

_KV_STREAM = f"KV_{CONFIG_BUCKET}"
_INACTIVE_S = 30.0  # a consumer nobody listens to any more is removed by the server


class KeyEntry(msgspec.Struct, frozen=True):
    """One event of a key watch. `marker`: no value (yet), only "settled" news."""

    key: str
    value: bytes | None  # None: deleted or purged
    settled: bool  # nothing older is still pending: the initial state is known
    marker: bool = False


async def watch_key(
    js: JetStreamContext, key: str, out: asyncio.Queue[KeyEntry]
) -> JetStreamContext.PushSubscription:
    """Watch one key of ``aivos_config``: its last value, then every change, into `out`.

    The caller unsubscribes; the server drops the consumer once nobody listens."""
    subject = f"$KV.{CONFIG_BUCKET}.{key}"
    config = ConsumerConfig(
        name=f"cfg-{uuid.uuid4().hex}",  # named: the filter travels in the API subject
        filter_subject=subject,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=_INACTIVE_S,
        mem_storage=True,
        num_replicas=1,
    )

    async def on_msg(msg: Msg) -> None:
        op = (msg.headers or {}).get("KV-Operation")
        value = None if op in ("DEL", "PURGE") else msg.data
        await out.put(KeyEntry(key, value, msg.metadata.num_pending == 0))

    sub = await js.subscribe(subject, stream=_KV_STREAM, cb=on_msg, config=config)
    info = await sub.consumer_info()
    delivered = info.delivered.consumer_seq if info.delivered is not None else 0
    if info.num_pending == 0 and not delivered:
        await out.put(KeyEntry(key, None, True, marker=True))  # the key has no value yet
    return sub


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
        await js.key_value(CONFIG_BUCKET)  # BucketNotFoundError until the cloud makes it
        values: dict[str, bytes | None] = {DEFAULTS_KEY: None, self.site_key: None}
        settled: set[str] = set()
        updates: asyncio.Queue[KeyEntry] = asyncio.Queue()
        subs: list[JetStreamContext.PushSubscription] = []
        try:
            for key in values:
                subs.append(await watch_key(js, key, updates))
            self.watching.set()
            while True:
                entry = await updates.get()
                if not entry.marker:
                    values[entry.key] = entry.value
                if entry.settled:
                    settled.add(entry.key)
                if len(settled) == len(values) and updates.empty():
                    await self.on_values(values[DEFAULTS_KEY], values[self.site_key])
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
