"""The ingest consumer: a durable JetStream pull consumer on ``AIVOS_SYNC`` that upserts
each fetched batch into the cloud store, then acks it.

Ack after commit: a crash between the commit and the acks only causes a redelivery (after
`ack_wait_s`), which the upsert by ``(site, id)`` turns into a no-op. Messages are handled
in stream order, one batch at a time. A body that does not decode is terminated (``+TERM``)
and counted, never retried forever.

In-process (as `aivos up` does):

    store = CloudStore.open(data_dir)
    ingest = SyncIngest(store)
    await ingest.start(nc)      # nc connected to the hub; creates the stream if missing
    ...
    await ingest.stop(); store.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api

from aivos.cloud.ingest.store import CloudStore, IngestStore
from aivos.shared.natsconf.connect import connect_nats
from aivos.shared.subjects import SYNC_ALL, SYNC_STREAM
from aivos.shared.syncwire import SyncEnvelope, decode_envelope, ensure_sync_stream
from aivos.shared.tracing import extract_context, tracer

__all__ = ["IngestStats", "SyncIngest", "run_ingest", "DEFAULT_DURABLE"]

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

DEFAULT_DURABLE = "aivos-ingest"


class IngestStats(msgspec.Struct, kw_only=True):
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    misattributed: int = 0  # the envelope's site differs from the site in the subject


class SyncIngest:
    def __init__(
        self,
        store: IngestStore,
        *,
        durable: str = DEFAULT_DURABLE,
        batch: int = 500,
        ack_wait_s: float = 30.0,
        domain: str | None = None,
        duplicate_window_s: float = 120.0,
        create_stream: bool = True,
    ) -> None:
        self.store = store
        self.durable = durable
        self.batch = batch
        self.ack_wait_s = ack_wait_s
        self.domain = domain
        self.duplicate_window_s = duplicate_window_s
        self.create_stream = create_stream
        self.stats = IngestStats()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # one thread owns the store's writes, off the event loop
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aivos-ingest")

    async def start(self, nc: NATS) -> None:
        """Subscribe (creating the stream/consumer if needed) and run in a background task."""
        psub = await self._subscribe(nc)
        self._task = asyncio.create_task(self._loop(psub), name="aivos-ingest")

    async def run(self, nc: NATS) -> None:
        """Consume until `stop()` (foreground variant of `start`)."""
        await self._loop(await self._subscribe(nc))

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pool.shutdown(wait=True)

    async def _subscribe(self, nc: NATS):  # type: ignore[no-untyped-def]
        js = nc.jetstream(domain=self.domain)
        if self.create_stream:
            await ensure_sync_stream(js, duplicate_window_s=self.duplicate_window_s, update=False)
        return await js.pull_subscribe(
            SYNC_ALL,
            durable=self.durable,
            stream=SYNC_STREAM,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait_s,
                max_ack_pending=max(4 * self.batch, 1000),
                deliver_policy=api.DeliverPolicy.ALL,
            ),
        )

    async def _loop(self, psub) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                msgs = await psub.fetch(self.batch, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:  # reconnecting, consumer recreated, ...
                log.info("ingest: fetch failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            await self._handle(loop, msgs)

    async def _handle(self, loop: asyncio.AbstractEventLoop, msgs: list[Msg]) -> None:
        good: list[Msg] = []
        envelopes: list[SyncEnvelope] = []
        for msg in msgs:
            try:
                envelope = decode_envelope(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.stats.rejected += 1
                log.warning("ingest: rejecting undecodable record on %s", msg.subject)
                await msg.term()
                continue
            if _subject_site(msg.subject) != envelope.site:
                # a site may publish only its own subjects (hub permissions), so the
                # subject is the attested sender; a different site inside is a forgery
                self.stats.rejected += 1
                self.stats.misattributed += 1
                log.warning("ingest: rejecting record on %s claiming another site", msg.subject)
                await msg.term()
                continue
            envelopes.append(envelope)
            good.append(msg)
        self.stats.received += len(msgs)
        if not envelopes:
            return
        parent = extract_context(good[0].headers)
        with _tracer.start_as_current_span(
            "ingest.upsert_batch", context=parent, attributes={"aivos.records": len(envelopes)}
        ):
            result = await loop.run_in_executor(self._pool, self.store.upsert_many, envelopes)
        self.stats.inserted += result.inserted
        self.stats.duplicates += result.duplicates
        self.stats.batches += 1
        for msg in good:  # ack only after the commit
            await msg.ack()


def _subject_site(subject: str) -> str:
    """The site token of ``aivos.sync.<site>.<data_class>``."""
    parts = subject.split(".")
    return parts[2] if len(parts) >= 4 else ""


async def run_ingest(
    nats_url: str,
    data_dir: str | Path | None,
    stop: asyncio.Event,
    *,
    durable: str = DEFAULT_DURABLE,
    batch: int = 500,
    ack_wait_s: float = 30.0,
    duplicate_window_s: float = 120.0,
    ready: asyncio.Event | None = None,
) -> IngestStats:
    """Connect to the hub, ensure the stream, ingest until `stop` is set (the CLI's body)."""
    store = CloudStore.open(data_dir)
    nc = await connect_nats(nats_url, name="aivos-ingest")
    ingest = SyncIngest(
        store,
        durable=durable,
        batch=batch,
        ack_wait_s=ack_wait_s,
        duplicate_window_s=duplicate_window_s,
    )
    try:
        await ingest.start(nc)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await ingest.stop()
        await nc.drain()
        store.close()
    return ingest.stats
