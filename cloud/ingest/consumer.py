"""The ingest consumer: a durable JetStream pull consumer on ``AIVOS_SYNC`` that upserts
each fetched batch into the cloud store, then acks it.

Batches are pulled with `_Puller` (plain pull requests answered into one inbox) rather
than nats-py's ``fetch``, which awaits every message with its own timeout and capped the
ingest near 3k records/s; the next batch is requested before the current one is written,
so the fetch and the database commit overlap.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.errors import NotFoundError

from aivos.cloud.db import StoreUnavailable
from aivos.cloud.ingest.store import CloudStore, IngestStore
from aivos.cloud.jetstream import scale_stream
from aivos.shared.jsready import until_jetstream_answers
from aivos.shared.natsconf.connect import close_nats, connect_nats
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


class _Puller:
    """Batches from a durable pull consumer: pull requests (``CONSUMER.MSG.NEXT``) answered
    into one inbox, whose callback appends each message to a list. A status message (404
    no messages, 408 request expired, 409, 503) ends a request. Messages delivered but not
    yet taken stay in the list for the next `fetch`; none is dropped (one never acked is
    redelivered by the stream after ``ack_wait``)."""

    def __init__(self, nc: NATS, next_subject: str) -> None:
        self._nc = nc
        self._next = next_subject
        self._inbox = nc.new_inbox()
        self._buf: list[Msg] = []
        self._ended = 0  # status messages seen: requests the server has finished
        self._changed = asyncio.Event()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get(api.Header.STATUS):
            self._ended += 1
        else:
            self._buf.append(msg)
        self._changed.set()

    async def _request(self, batch: int, *, expires_s: float | None = None) -> None:
        body: dict[str, Any] = {"batch": batch}
        if expires_s is None:
            body["no_wait"] = True  # what the stream has now, then a 404 if short
        else:
            body["expires"] = int(expires_s * 1e9)  # lingering, then a 408
        await self._nc.publish(self._next, msgspec.json.encode(body), reply=self._inbox)

    async def _wait(self, done: Callable[[], object], timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def fetch(self, batch: int, timeout_s: float) -> list[Msg]:
        """Up to `batch` messages: those already delivered, then what the stream has at
        once; when it has none, the first that arrive within `timeout_s`. After a full
        batch the next one is requested at once (it arrives while this one is written)."""
        if len(self._buf) < batch:
            ended = self._ended
            await self._request(batch - len(self._buf))
            await self._wait(lambda: len(self._buf) >= batch or self._ended > ended, timeout_s)
        if not self._buf:
            ended = self._ended
            await self._request(batch, expires_s=timeout_s)
            await self._wait(lambda: self._buf or self._ended > ended, timeout_s + 1.0)
        out, self._buf = self._buf[:batch], self._buf[batch:]
        if len(out) == batch and not self._buf:
            await self._request(batch)  # prefetch: a backlog is being drained
        return out

    async def close(self) -> None:
        """Unsubscribe; messages delivered but not taken are nak'ed, so another replica
        gets them at once instead of after ``ack_wait``."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        left, self._buf = self._buf, []
        for msg in left:
            with contextlib.suppress(Exception):
                await msg.nak()


class SyncIngest:
    def __init__(
        self,
        store: IngestStore,
        *,
        durable: str = DEFAULT_DURABLE,
        batch: int = 1000,
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
        self._psub: _Puller | None = None
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
            await self._psub.close()  # the connection may already be gone: best effort
            self._psub = None
        self._pool.shutdown(wait=True)

    async def _subscribe_retrying(self, nc: NATS, timeout_s: float = 60.0) -> _Puller:
        """`_subscribe`, retried while JetStream cannot answer yet (a hub cluster electing
        a new leader after a node died answers with timeouts or 503 for a few seconds). Each
        step of `_subscribe` looks up before it creates, so a step that timed out but was
        applied is found by the next try."""
        return await until_jetstream_answers(
            lambda: self._subscribe(nc), what="ingest", timeout_s=timeout_s, logger=log
        )

    async def _subscribe(self, nc: NATS) -> _Puller:
        """One try (its steps make no retries of their own: `_subscribe_retrying` does)."""
        js = nc.jetstream(domain=self.domain)
        if self.create_stream:
            await ensure_sync_stream(
                js,
                duplicate_window_s=self.duplicate_window_s,
                replicas=self.replicas,
                update=False,
                ready_timeout_s=0,
            )
            await scale_stream(js, SYNC_STREAM, self.replicas, ready_timeout_s=0)
        try:
            await js.consumer_info(SYNC_STREAM, self.durable)
        except NotFoundError:  # replicas racing here all ask for the same config: one wins
            await js.add_consumer(
                SYNC_STREAM,
                api.ConsumerConfig(
                    durable_name=self.durable,
                    filter_subject=SYNC_ALL,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait_s,
                    # two batches per replica in flight (one written, one prefetched)
                    max_ack_pending=max(4 * self.batch, 1000),
                    deliver_policy=api.DeliverPolicy.ALL,
                ),
            )
        api_prefix = "$JS.API" if self.domain is None else f"$JS.{self.domain}.API"
        puller = _Puller(nc, f"{api_prefix}.CONSUMER.MSG.NEXT.{SYNC_STREAM}.{self.durable}")
        await puller.start()
        return puller

    async def _loop(self, puller: _Puller) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            try:
                msgs = await puller.fetch(self.batch, 1.0)
            except Exception as exc:  # reconnecting, ...
                log.info("ingest: fetch failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            if msgs:
                await self._handle(loop, msgs)
            elif loop.time() - started < 0.5:
                # refused at once (JetStream electing a leader, no responders): no busy loop
                await asyncio.sleep(0.5)

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
    batch: int = 1000,
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
        await close_nats(nc)  # drains: acks written after the last commit go out
        store.close()
    return ingest.stats
