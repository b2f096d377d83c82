"""The model catalogue as fleet config: pushed to a JetStream KV bucket, watched by the cloud.

`aivos cloud models push --catalogue FILE` validates the TOML (`parse_catalogue`: every
name, chain, pin and limit) and stores it under the key ``catalogue`` of the bucket
``aivos_catalogue`` (hub domain, history 10), as JSON ``{"version": N, "toml": TEXT}``:
the operator's text with its comments, and a version one above the stored one (a KV
`update` on the revision read, so two pushes at once cannot both claim a version).
A catalogue that does not validate is refused before anything is stored; the stored one
stays.

Each read and each write of a push is retried while JetStream cannot answer (timeouts,
503s; `aivos.shared.jsready`) for up to the store's `ready_timeout_s`. A write that was
applied but not answered fails its retry with "wrong last sequence"; the push then reads
again and, finding exactly the value it wrote (its version and its text), is done: the
value names its content, so even another push that wrote the same value leaves the state
both wanted. Without that check it would store its text once more at the next version,
and every router and pool would apply the same catalogue again.

Routers, workers and pools start from their ``--catalogue`` file (the bootstrap and the
default) and run a `CatalogueWatch`: each value stored, and the one present when it starts,
is parsed and validated again and handed to their ``apply`` when its version is newer
than what they run. A value that does not parse (written around `push`) is logged and
skipped; the last good catalogue stays. Until the bucket exists the watch polls for it,
so a cloud that never pushes runs on its file as before.

Its own bucket, not a key of ``aivos_config``: that bucket is per-site edge config whose
version stamping walks every key, and edges are allowed to read it; the catalogue is the
cloud's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from aivos.cloud.jetstream import open_key_value
from aivos.cloud.worker.catalogue import Catalogue, parse_catalogue
from aivos.shared.errors import ConfigError
from aivos.shared.jsready import connection_of, until_jetstream_answers
from aivos.shared.subjects import CATALOGUE_BUCKET, HUB_DOMAIN

__all__ = [
    "CATALOGUE_BUCKET",
    "CATALOGUE_KEY",
    "CatalogueStore",
    "CatalogueWatch",
    "decode_pushed",
    "read_pushed",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

CATALOGUE_KEY = "catalogue"
_MAX_RETRY_S = 10.0  # the longest wait between two tries


class _Stored(msgspec.Struct, frozen=True):
    version: int
    toml: str


def decode_pushed(value: bytes, source: str = "pushed catalogue") -> tuple[int, Catalogue, str]:
    """(version, catalogue, its TOML) of a stored value; ConfigError naming what is wrong."""
    try:
        stored = msgspec.json.decode(value, type=_Stored)
    except msgspec.MsgspecError as exc:
        raise ConfigError(source, f"not a stored catalogue: {exc}") from exc
    catalogue = parse_catalogue(stored.toml, f"{source} v{stored.version}")
    return stored.version, catalogue, stored.toml


class CatalogueStore:
    """Push and read the catalogue. ``js`` must address the hub domain. A push's reads and
    writes are retried for up to `ready_timeout_s` while JetStream cannot answer."""

    def __init__(self, kv: KeyValue, *, ready_timeout_s: float = 60.0) -> None:
        self.kv = kv
        self.ready_timeout_s = ready_timeout_s

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        create: bool = True,
        replicas: int = 1,
        ready_timeout_s: float = 60.0,
    ) -> CatalogueStore:
        """Open (or create, at `replicas`) the bucket; retried for up to `ready_timeout_s`
        while JetStream cannot answer (`open_key_value`), as are its pushes. Without
        `create`, a missing bucket raises BucketNotFoundError."""
        kv = await open_key_value(
            js,
            KeyValueConfig(bucket=CATALOGUE_BUCKET, history=10, replicas=replicas),
            create=create,
            ready_timeout_s=ready_timeout_s,
        )
        return cls(kv, ready_timeout_s=ready_timeout_s)

    async def current(self) -> tuple[int, int, Catalogue] | None:
        """(KV revision, version, catalogue) of what is stored; None when nothing is."""
        try:
            entry = await self.kv.get(CATALOGUE_KEY)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        version, catalogue, _ = decode_pushed(entry.value)
        return entry.revision or 0, version, catalogue

    async def push(self, text: str, source: str = "catalogue") -> int:
        """Validate `text` and store it; returns its version. ConfigError (nothing stored)
        when it does not validate."""
        parse_catalogue(text, source)  # refused here, before the bucket is touched
        written = b""  # the value of our last write that ended in a conflict
        for _ in range(5):  # lost a race with another push: read again
            revision, version, stored = await self._retried(self._read, "reading the catalogue")
            if written and stored == written:  # a write whose answer was lost was applied
                return _pushed(version)
            written = msgspec.json.encode(_Stored(version=version + 1, toml=text))
            try:
                await self._retried(
                    functools.partial(self._write, revision, written), "writing the catalogue"
                )
            except Exception as exc:
                if _is_conflict(exc):
                    continue
                raise
            return _pushed(version + 1)
        raise ConfigError(source, "another push kept winning; try again")

    async def _read(self) -> tuple[int, int, bytes]:
        """(KV revision, version, value) of what is stored; zeros and b"" when nothing is."""
        try:
            entry = await self.kv.get(CATALOGUE_KEY)
        except KeyNotFoundError:
            return 0, 0, b""
        version = 0
        if entry.value:
            with contextlib.suppress(msgspec.MsgspecError):
                version = msgspec.json.decode(entry.value, type=_Stored).version
        return entry.revision or 0, version, entry.value or b""

    async def _write(self, revision: int, value: bytes) -> None:
        """Compare-and-set on `revision` (0: create); a conflict when it moved."""
        if revision:
            await self.kv.update(CATALOGUE_KEY, value, last=revision)
        else:
            await self.kv.create(CATALOGUE_KEY, value)

    async def _retried(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        return await until_jetstream_answers(
            op, what=what, timeout_s=self.ready_timeout_s, logger=log, nc=connection_of(self.kv)
        )


async def read_pushed(nc: NATS) -> tuple[int, Catalogue] | None:
    """(version, catalogue) of what is pushed; None when nothing is (no bucket or no key).
    A stored value that does not validate raises ConfigError."""
    try:
        store = await CatalogueStore.open(nc.jetstream(domain=HUB_DOMAIN), create=False)
    except BucketNotFoundError:
        return None
    current = await store.current()
    return None if current is None else (current[1], current[2])


def _pushed(version: int) -> int:
    log.info("catalogue version %d pushed", version)
    return version


def _is_conflict(exc: Exception) -> bool:
    return isinstance(exc, KeyWrongLastSequenceError) or "wrong last sequence" in str(exc)


# (catalogue, version, its TOML text): a pool hands the text to the workers it starts
Apply = Callable[[Catalogue, int, str], Awaitable[None]]


class CatalogueWatch:
    """Hand every newer stored catalogue to `apply` (see the module docstring)."""

    def __init__(self, apply: Apply, *, version: int = 0, retry_s: float = 2.0) -> None:
        self.apply = apply
        self.version = version  # the version applied; 0: the bootstrap file
        self.retry_s = retry_s
        self.rejected: list[str] = []  # why stored values were skipped (tests, logs)
        self.failures = 0  # watches that could not be set up (besides "no bucket yet")
        self.watching = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, nc: NATS) -> None:
        self._task = asyncio.create_task(self._run(nc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self, nc: NATS) -> None:
        delay = self.retry_s
        while True:
            try:
                await self._watch(nc)
            except asyncio.CancelledError:
                raise
            except BucketNotFoundError:
                pass  # nothing pushed yet: the file stays the catalogue
            except Exception as exc:  # no permission, link down: keep the current one
                # once loudly (a secured hub without the KV grants times out here), then
                # quietly: the catalogue in use is still valid
                level = logging.DEBUG if self.failures else logging.WARNING
                self.failures += 1
                log.log(
                    level,
                    "catalogue watch: %s: %s; keeping catalogue v%d, retrying",
                    type(exc).__name__,
                    exc,
                    self.version,
                )
            if self.watching.is_set():  # it was up: try again soon
                delay = self.retry_s
            self.watching.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_S)  # a cloud that never pushes: rarely

    async def _watch(self, nc: NATS) -> None:
        kv = await nc.jetstream(domain=HUB_DOMAIN).key_value(CATALOGUE_BUCKET)
        watcher = await kv.watch(CATALOGUE_KEY)
        self.watching.set()
        try:
            async for entry in watcher:
                if entry is None or not entry.value:  # end of the initial values, deletes
                    continue
                await self._offer(entry.value)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def _offer(self, value: bytes) -> None:
        try:
            version, catalogue, text = decode_pushed(value)
        except ConfigError as exc:
            self.rejected.append(str(exc))
            log.error("catalogue not applied, keeping version %d: %s", self.version, exc)
            return
        if version <= self.version:
            return
        try:
            await self.apply(catalogue, version, text)
        except ConfigError as exc:  # e.g. a worker whose model the new catalogue lacks
            self.rejected.append(str(exc))
            log.error("catalogue v%d not applied: %s", version, exc)
            return
        self.version = version
        log.info("catalogue version %d applied", version)
