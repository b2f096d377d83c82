"""The ingest consumer: a durable JetStream pull consumer on ``AIVOS_SYNC`` that upserts
each fetched batch into the cloud store, then acks it.

Ack after commit: a crash between the commit and the acks only causes a redelivery (after
`ack_wait_s`), which the upsert by ``(site, id)`` turns into a no-op. A batch the store
cannot commit (`StoreUnavailable`: the database restarting) is nak'ed with a delay and
fetched again. Several ingest processes may share the durable consumer (replicas against
one PostgreSQL database): JetStream hands each message to one of them. Messages are handled
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
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import ServiceUnavailableError

from aivos.cloud.db import StoreUnavailable
from aivos.cloud.ingest.store import CloudStore, IngestStore
from aivos.cloud.jetstream import scale_stream
from aivos.shared.natsconf.connect import connect_nats
from aivos.shared.subjects import SYNC_ALL, SYNC_STREAM
from aivos.shared.syncwire import SyncEnvelope, decode_envelope, ensure_sync_stream
from aivos.shared.tracing import extract_context, tracer

__all__ = [
    "IngestStats",
    "SyncIngest",
    "run_ingest",
    "read_misattributed",
    "DEFAULT_DURABLE",
    "MISATTRIBUTED_FILE",
]

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

DEFAULT_DURABLE = "aivos-ingest"
# DATA_DIR/<this>: misattributed records, cumulative over restarts (the console shows it)
MISATTRIBUTED_FILE = "ingest_misattributed.json"


class _Misattributed(msgspec.Struct, kw_only=True):
    count: int = 0
    last_subject: str = ""
    last_claimed_site: str = ""
    last_at_ms: int = 0


def read_misattributed(data_dir: Path) -> int:
    """How many records the ingest has rejected for naming a site not in their subject."""
    try:
        return msgspec.json.decode(
            (data_dir / MISATTRIBUTED_FILE).read_bytes(), type=_Misattributed
        ).count
    except (OSError, msgspec.DecodeError):
        return 0


def _note_misattributed(data_dir: Path, subject: str, claimed: str) -> None:
    path = data_dir / MISATTRIBUTED_FILE
    try:
        state = msgspec.json.decode(path.read_bytes(), type=_Misattributed)
    except (OSError, msgspec.DecodeError):
        state = _Misattributed()
    state.count += 1
    state.last_subject, state.last_claimed_site = subject, claimed
    state.last_at_ms = int(time.time() * 1000)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(state))
    os.replace(tmp, path)


class IngestStats(msgspec.Struct, kw_only=True):
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    misattributed: int = 0  # the envelope's site differs from the site in the subject
    store_errors: int = 0  # batches the store could not commit (nak'ed, fetched again)


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
        replicas: int = 1,
        stats_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.stats_dir = stats_dir  # where misattributed records are counted for the console
        self.replicas = replicas  # of AIVOS_SYNC when this creates it (3 on a hub cluster)
        self.durable = durable
        self.batch = batch
        self.ack_wait_s = ack_wait_s
        self.domain = domain
        self.duplicate_window_s = duplicate_window_s
        self.create_stream = create_stream
        self.stats = IngestStats()
        self._task: asyncio.Task[None] | None = None
        self._psub: Any = None
        self._stopping = False
        self._failures = 0  # store failures in a row (backoff)
        # one thread owns the store's writes, off the event loop
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aivos-ingest")

    async def start(self, nc: NATS) -> None:
        """Subscribe (creating the stream/consumer if needed) and run in a background task."""
        self._psub = psub = await self._subscribe_retrying(nc)
        self._task = asyncio.create_task(self._loop(psub), name="aivos-ingest")

    async def run(self, nc: NATS) -> None:
        """Consume until `stop()` (foreground variant of `start`)."""
        self._psub = psub = await self._subscribe_retrying(nc)
        await self._loop(psub)

    async def stop(self) -> None:
        """Stop fetching and let go of the subscription at once. A fetch cancelled midway
        leaves messages in the subscription's queue, so a later `nc.drain()` would wait its
        whole timeout for them; they are unacked and the stream redelivers them."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._psub is not None:
            with contextlib.suppress(Exception):  # the connection may already be gone
                await self._psub.unsubscribe()
            self._psub = None
        self._pool.shutdown(wait=True)

    async def _subscribe_retrying(self, nc: NATS, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
        """`_subscribe`, retried while JetStream cannot answer yet (a hub cluster electing
        a new leader after a node died answers with timeouts or 503 for a few seconds)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        attempt = 0
        while True:
            try:
                return await self._subscribe(nc)
            except (NatsTimeoutError, ServiceUnavailableError) as exc:
                attempt += 1
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.info("ingest: JetStream not ready (%s); retrying", type(exc).__name__)
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))

    async def _subscribe(self, nc: NATS):  # type: ignore[no-untyped-def]
        js = nc.jetstream(domain=self.domain)
        if self.create_stream:
            await ensure_sync_stream(
                js,
                duplicate_window_s=self.duplicate_window_s,
                replicas=self.replicas,
                update=False,
            )
            await scale_stream(js, SYNC_STREAM, self.replicas)
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
                if self.stats_dir is not None:
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(
                            _note_misattributed, self.stats_dir, msg.subject, envelope.site
                        )
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
            try:
                result = await loop.run_in_executor(self._pool, self.store.upsert_many, envelopes)
            except StoreUnavailable as exc:
                self.stats.store_errors += 1
                self._failures += 1
                log.warning("ingest: store unavailable (%s); batch will be redelivered", exc)
                for msg in good:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=1.0)
                await asyncio.sleep(min(5.0, 0.25 * self._failures))
                return
        self._failures = 0
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
    db: str | None = None,
    replicas: int = 1,
) -> IngestStats:
    """Connect to the hub, ensure the stream, ingest until `stop` is set (the CLI's body).
    `db`: a ``postgresql://`` URL (else the SQLite file in `data_dir`); `nats_url` may
    list several hub nodes, comma-separated."""
    store = CloudStore.open(data_dir, db=db)
    nc = await connect_nats(nats_url.split(","), name="aivos-ingest")
    ingest = SyncIngest(
        store,
        durable=durable,
        batch=batch,
        ack_wait_s=ack_wait_s,
        duplicate_window_s=duplicate_window_s,
        replicas=replicas,
        stats_dir=Path(data_dir) if data_dir is not None else None,
    )
    try:
        await ingest.start(nc)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await ingest.stop()
        with contextlib.suppress(Exception):  # acks written after the last commit go out
            await nc.flush(timeout=2)
        await nc.close()
        store.close()
    return ingest.stats
