"""An exclusive, expiring lease in the hub's JetStream KV bucket ``aivos_leases``: exactly
one of several fleet replicas (consoles, ``aivos cloud fleet``) runs the rollout controller.

The bucket has a TTL (`ttl_s`): an entry not renewed within it disappears. A replica takes
the lease with a create-if-absent (``kv.create``) and keeps it by compare-and-set renewals
(``kv.update(last=revision)``) every `ttl_s` / 4. A replica that dies (SIGKILL, a partition)
stops renewing, and another one takes over within `ttl_s`. `held` is true only until
`ttl_s` * `safety` after the last successful renewal began, so a replica whose renewals
stall stops acting before its entry can expire and a successor can start.

A write the server refuses (wrong last sequence) is not taken as a lost lease by itself:
a write of ours that the server applied but whose answer was lost (a timeout) moved the
revision on. The entry is read: if it holds this replica's holder id (unique per `Lease`),
the lease is renewed from the entry's revision in the same step; if it holds another
holder's id, or is gone, the lease is lost at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time

from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from aivos.cloud.jetstream import open_key_value

__all__ = ["LEASE_BUCKET", "ROLLOUT_LEASE", "Lease"]

log = logging.getLogger(__name__)

LEASE_BUCKET = "aivos_leases"
ROLLOUT_LEASE = "rollout-coordinator"


def _default_holder() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Lease:
    """``await lease.start()``, then `held` says whether this replica holds it now;
    ``await lease.stop()`` releases it at once (a successor need not wait for the TTL).

    `holder` is what the entry stores; it must be unique to this `Lease` (the default is
    host, pid and 6 random hex digits): an entry holding it is taken as this one's own."""

    def __init__(
        self,
        js: JetStreamContext,
        name: str = ROLLOUT_LEASE,
        *,
        holder: str | None = None,
        ttl_s: float = 5.0,
        safety: float = 0.75,
        replicas: int = 1,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.js = js
        self.name = name
        self.holder = holder or _default_holder()
        self.ttl_s = ttl_s
        self.safety = safety
        self.replicas = replicas
        self.ready_timeout_s = ready_timeout_s  # opening the bucket on a cluster not ready
        self.acquired = 0  # how many times this replica took the lease
        self._kv: KeyValue | None = None
        self._revision: int | None = None
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    async def start(self) -> Lease:
        self._kv = await self._bucket()
        await self.renew()
        self._task = asyncio.create_task(self._run(), name=f"lease-{self.name}")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._kv is not None and self._revision is not None and self.held:
            with contextlib.suppress(Exception):  # only while still ours (compare-and-set)
                await self._kv.delete(self.name, last=self._revision)
                log.info("lease %s released by %s", self.name, self.holder)
        self._revision = None
        self._valid_until = 0.0

    async def wait_held(self) -> None:
        """Block until this replica holds the lease."""
        while not self.held:
            self._changed.clear()
            await self._changed.wait()

    async def current_holder(self) -> str | None:
        """Who holds the lease now (None: nobody)."""
        kv = self._kv or await self._bucket()
        try:
            entry = await kv.get(self.name)
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def _bucket(self) -> KeyValue:
        config = KeyValueConfig(
            bucket=LEASE_BUCKET, history=1, ttl=self.ttl_s, replicas=self.replicas
        )
        return await open_key_value(self.js, config, ready_timeout_s=self.ready_timeout_s)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 4)
            await self.renew()

    async def renew(self) -> None:
        """Take the lease, or renew it, now (the background task does this every
        `ttl_s` / 4); `held` says the outcome."""
        assert self._kv is not None
        began = time.monotonic()
        was_held = self.held
        try:
            revision = await self._write(self._kv)
        except Exception as exc:  # hub unreachable, timeout: the lease lapses on its own
            log.info("lease %s: renewal failed (%s)", self.name, type(exc).__name__)
        else:
            self._revision = revision
            if revision is None:  # someone else holds it, or held it meanwhile
                self._valid_until = 0.0
            else:
                # from the start of this step: the write that answered landed after it
                self._valid_until = began + self.ttl_s * self.safety
                if not was_held:
                    self.acquired += 1
                    log.info("lease %s taken by %s", self.name, self.holder)
        if was_held and not self.held:
            log.warning("lease %s lost by %s", self.name, self.holder)
        self._changed.set()

    async def _write(self, kv: KeyValue) -> int | None:
        """The revision of this holder's entry after taking or renewing it; None if the
        lease is not ours."""
        value = self.holder.encode()
        try:
            if self._revision is None:
                return await kv.create(self.name, value)
            return await kv.update(self.name, value, last=self._revision)
        except KeyWrongLastSequenceError:
            return await self._renew_from_stored(kv)

    async def _renew_from_stored(self, kv: KeyValue) -> int | None:
        """After a refused write: renew from the stored entry if it is still this holder's
        (a write of ours was applied but its answer lost); None if it is another holder's
        or gone (expired or released: another replica may have led meanwhile)."""
        try:
            entry = await kv.get(self.name)
        except KeyNotFoundError:
            return None
        if entry.value != self.holder.encode() or entry.revision is None:
            return None
        # ours at this revision even if the renewal below gets no answer
        self._revision = entry.revision
        try:
            revision = await kv.update(self.name, self.holder.encode(), last=entry.revision)
        except KeyWrongLastSequenceError:  # taken over between the read and the write
            return None
        log.info(
            "lease %s: kept by %s (an earlier write's answer was lost)", self.name, self.holder
        )
        return revision
