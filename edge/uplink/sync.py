"""Store-and-forward sync: drain the outbox straight into the hub stream ``AIVOS_SYNC``.

    drainer = OutboxDrainer(store, gate, site="branch-7")
    task = asyncio.create_task(drainer.run(nc))   # nc: connected to the site leaf or the hub
    ...; drainer.wake()                           # after writes that enqueue records
    ...; drainer.wake(link=True)                  # on NATS "reconnected"
    await drainer.stop(); await task

Each round drains up to `max_batches` batches of at most `batch` records in outbox (seq)
order: every record passes the exit gate for its data class, the allowed ones are published
with ``publish_async`` (one pipelined burst per batch, PubAcks gathered with a timeout),
and only the records whose PubAck came back are marked sent. While the hub acknowledges
one batch, the next one is read and masked in a worker thread. ``Nats-Msg-Id`` is
``<site>:<record id>``, so a resend inside the stream's duplicate window is dropped by
JetStream, and one after it is absorbed by the cloud ingest's upsert by ``(site, id)``.

Records of a `local-only` data class are deleted from the outbox and counted in
`stats.denied`: they never reach the wire. A destination region the policy does not allow
is treated as a configuration fault instead: the records stay queued (in order) and every
round fails (`stats.errors`, `last_error`) until the policy or region is fixed. When
the hub cannot be reached (leaf link down: NATS answers "no responders" at once; or acks
time out) the drainer retries with capped exponential backoff (`retry_cap_s`, default
0.5 s) and a small probe batch (16 records: retries cost little while the link is down),
so sync resumes within about half a second of the link coming back; full batches follow.

A backlog that takes more than a few seconds to drain (after an outage) is logged every
`progress_every_s` seconds: records pending, sent so far, rate and ETA (`sync: catching
up ...`), and once more when it is gone (`sync: caught up ...`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from aivos.edge.store import OutboxRecord, Store
from aivos.shared.errors import ResidencyDenied
from aivos.shared.metrics import Registry
from aivos.shared.progress import CatchUp, clock
from aivos.shared.residency import ExitGate
from aivos.shared.subjects import HUB_DOMAIN, sync_subject, validate_site
from aivos.shared.syncwire import SyncEnvelope, encode_envelope, ensure_sync_stream, msg_id
from aivos.shared.tracing import inject_headers, tracer

__all__ = ["OutboxDrainer", "SyncStats", "ensure_sync_stream"]

log = logging.getLogger(__name__)
_tracer = tracer(__name__)
_JSON = msgspec.json.Decoder()
_PROBE_BATCH = 16
_ATOMIC_MAX = 1000  # nats-server's default limit of messages per atomic batch
_ERR_ATOMIC_DISABLED = 10174
_ERR_ATOMIC_DUPLICATE = 10201


class SyncStats(msgspec.Struct, kw_only=True):
    """Drainer counters since start. `lag` = outbox records still pending after the last
    round; `last_sync_ts` = unix time of the last round that got acks (None before)."""

    sent: int = 0
    denied: int = 0
    errors: int = 0
    batches: int = 0
    last_sync_ts: float | None = None
    lag: int = 0
    connected: bool = False
    last_error: str | None = None


class _Prepared(msgspec.Struct, frozen=True):
    id: str
    subject: str
    body: bytes


class _Batch(msgspec.Struct, frozen=True):
    items: list[_Prepared]
    denied: list[str]
    last_seq: int
    blocked: str | None = None  # why reading stopped early (a region the policy forbids)


class OutboxDrainer:
    def __init__(
        self,
        store: Store,
        gate: ExitGate,
        site: str,
        *,
        batch: int = 500,
        region: str | None = None,
        domain: str | None = HUB_DOMAIN,
        ack_timeout_s: float = 5.0,
        retry_base_s: float = 0.05,
        retry_cap_s: float = 0.5,
        idle_poll_s: float = 1.0,
        max_batches: int = 20,
        atomic: bool = True,
        registry: Registry | None = None,
        progress_every_s: float = 5.0,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.store = store
        self.gate = gate
        self.site = validate_site(site)
        self.batch = batch
        self.region = region
        self.domain = domain
        self.ack_timeout_s = ack_timeout_s
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.idle_poll_s = idle_poll_s
        self.max_batches = max_batches
        self.atomic = atomic
        self._nc: NATS | None = None
        self._replies = _Replies()
        self.stats = SyncStats()
        self._ok = True  # the last publish round succeeded
        self._wake = asyncio.Event()
        self._link_wake = asyncio.Event()
        self._stopping = False
        self._drained = asyncio.Event()
        self._catchup = CatchUp(progress_every_s)
        self._m: dict[str, Any] = {}
        if registry is not None:
            self._m = {
                "sent": registry.counter(
                    "aivos_sync_sent_total", "Outbox records acknowledged by the hub stream."
                ),
                "denied": registry.counter(
                    "aivos_sync_denied_total",
                    "Outbox records the residency policy kept on site (dropped).",
                ),
                "errors": registry.counter(
                    "aivos_sync_errors_total", "Sync rounds that failed (hub unreachable)."
                ),
                "lag": registry.gauge(
                    "aivos_sync_lag_records",
                    "Outbox records waiting to sync.",
                    read=lambda: float(self.stats.lag),
                ),
                "last": registry.gauge(
                    "aivos_sync_last_success_timestamp_seconds",
                    "Unix time of the last acknowledged sync batch.",
                    read=lambda: float(self.stats.last_sync_ts or 0.0),
                ),
            }

    # -- control -------------------------------------------------------------------------
    def wake(self, *, link: bool = False) -> None:
        """Poke the drainer: new records were written (`link=False`; ignored while it backs
        off from a failure) or the link came back (`link=True`; retries at once)."""
        self._wake.set()
        if link:
            self._link_wake.set()

    async def stop(self) -> None:
        """Ask `run` to return after the current round."""
        self._stopping = True
        self._wake.set()
        self._link_wake.set()

    async def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until a round finds nothing pending (tests, benchmarks). False on timeout."""
        self._drained.clear()
        self.wake()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- loop ----------------------------------------------------------------------------
    async def run(self, nc: NATS) -> None:
        """Drain until `stop()`: rounds back to back while records are pending, then sleep
        until `wake()` (or `idle_poll_s`). Never raises for link failures."""
        js = nc.jetstream(domain=self.domain, publish_async_max_pending=max(4 * self.batch, 1000))
        self._nc = nc
        await self._replies.start(nc)
        failures = 0
        while not self._stopping:
            self._wake.clear()
            if not _link_ok(nc):
                self.stats.connected = False
                self._ok = False
                await self._sleep(self.retry_cap_s, self._link_wake)
                continue
            try:
                handled = await self.drain_once(js)
            except _RoundFailed as exc:
                failures += 1
                self._catchup.reset()
                self._fail(str(exc))
                delay = _backoff(failures, self.retry_base_s, self.retry_cap_s)
                self._link_wake.clear()
                await self._sleep(delay, self._link_wake)
                continue
            except Exception as exc:  # a store or gate bug must not kill the loop silently
                failures += 1
                log.exception("sync: drain round failed")
                self._fail(type(exc).__name__)
                await self._sleep(_backoff(failures, 0.5, 5.0), self._link_wake)
                continue
            failures = 0
            self.stats.connected = True
            self._log_catchup()
            if handled == 0:
                self._drained.set()
                await self._sleep(self.idle_poll_s, self._wake)
        log.info("sync: drainer stopped (sent=%d denied=%d)", self.stats.sent, self.stats.denied)

    def _log_catchup(self) -> None:
        handled = self.stats.sent + self.stats.denied
        report = self._catchup.observe(time.monotonic(), self.stats.lag, handled)
        if report is None:
            return
        extra = {"fields": {"progress": "outbox catch-up", **msgspec.structs.asdict(report)}}
        if report.phase == "caught_up":
            log.info(
                "sync: caught up: %d records in %s (%.0f/s)",
                report.done,
                clock(report.elapsed_s),
                report.rate_per_s,
                extra=extra,
            )
            return
        eta = "not shrinking" if report.eta_s is None else f"about {clock(report.eta_s)} left"
        log.info(
            "sync: catching up: %d records pending, %d sent in %s (%.0f/s), %s",
            report.depth,
            report.done,
            clock(report.elapsed_s),
            report.rate_per_s,
            eta,
            extra=extra,
        )

    async def _sleep(self, timeout_s: float, event: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    def _fail(self, reason: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = reason
        self.stats.connected = False
        if "errors" in self._m:
            self._m["errors"].inc()

    # -- one round -----------------------------------------------------------------------
    async def drain_once(self, js: JetStreamContext) -> int:
        """One round of up to `max_batches` bounded batches, pipelined: the next batch is read
        and passed through the gate while the hub acknowledges the current one. Returns how
        many records it took off the outbox (sent + denied). Raises `_RoundFailed` when a
        batch could not be published at all (nothing acked)."""
        handled = 0
        # after a failure, probe with a small first batch: cheap retries while the link is
        # down, and a quick first ack when it is back; full batches follow at once
        first = self.batch if self._ok else min(self.batch, _PROBE_BATCH)
        batch = await asyncio.to_thread(self._prepare, 0, first)
        for _ in range(self.max_batches):
            handled += await self._drop(batch.denied)
            if not batch.items:
                if batch.blocked is not None:
                    self._ok = False
                    self.stats.lag = self.store.outbox_depth()
                    raise _RoundFailed(batch.blocked)
                break
            upcoming = asyncio.ensure_future(asyncio.to_thread(self._prepare, batch.last_seq))
            with _tracer.start_as_current_span(
                "sync.publish_batch",
                attributes={"aivos.site": self.site, "aivos.records": len(batch.items)},
            ):
                acked, failure = await self._publish(js, batch.items, dict(inject_headers({})))
            self._ok = failure is None
            if acked:
                await self.store.mark_sent(acked)
                self._count_sent(len(acked))
                handled += len(acked)
            failure = failure or batch.blocked
            if failure is not None:
                upcoming.cancel()
                self.stats.lag = self.store.outbox_depth()
                if not acked:
                    raise _RoundFailed(failure)
                self._fail(failure)  # partial: the rest is retried in the next round
                return handled
            batch = await upcoming
        self.stats.lag = self.store.outbox_depth()
        return handled

    async def _drop(self, denied: list[str]) -> int:
        """Delete records the policy keeps on site from the outbox (counted, never sent)."""
        if not denied:
            return 0
        await self.store.transact(lambda c: _delete(c, denied))
        self.stats.denied += len(denied)
        if "denied" in self._m:
            self._m["denied"].inc(len(denied))
        return len(denied)

    def _count_sent(self, n: int) -> None:
        self.stats.sent += n
        self.stats.batches += 1
        self.stats.last_sync_ts = time.time()
        if "sent" in self._m:
            self._m["sent"].inc(n)

    def _prepare(self, after_seq: int, limit: int | None = None) -> _Batch:
        """Read a batch after `after_seq` and pass it through the gate (runs in a worker
        thread: masking is CPU work)."""
        records = self.store.outbox_pending(limit=limit or self.batch, after_seq=after_seq)
        items: list[_Prepared] = []
        denied: list[str] = []
        for record in records:
            try:
                decision = self.gate.apply(
                    record.data_class, _JSON.decode(record.payload), region=self.region
                )
            except ResidencyDenied as exc:
                if self.gate.policy.rule(record.data_class) == "local-only":
                    denied.append(record.id)  # never leaves: dropped (counted) by the caller
                    continue
                # a destination region the policy forbids is a configuration problem, not
                # data that must stay: keep this record and the later ones queued, in order
                return _Batch(items, denied, record.seq - 1, f"residency: {exc.reason}")
            items.append(
                _Prepared(
                    record.id,
                    sync_subject(self.site, record.data_class),
                    encode_envelope(self._envelope(record, decision.payload)),
                )
            )
        last_seq = records[-1].seq if records else after_seq
        return _Batch(items, denied, last_seq)

    def _envelope(self, record: OutboxRecord, payload: Any) -> SyncEnvelope:
        trace_id = payload.get("trace_id") if isinstance(payload, dict) else None
        return SyncEnvelope(
            id=record.id,
            site=self.site,
            data_class=record.data_class,
            kind=record.subject,
            seq=record.seq,
            created_at=record.created_at,
            payload=payload,
            trace_id=trace_id if isinstance(trace_id, str) else None,
        )

    async def _publish(
        self, js: JetStreamContext, items: list[_Prepared], headers_base: dict[str, str]
    ) -> tuple[list[str], str | None]:
        """Publish one batch; returns the ids the hub acknowledged and the failure, if any.

        Atomic batch first (one commit, one fsync at the hub); when the batch holds a record
        the stream already has (a resend inside the duplicate window) or the stream does not
        allow atomic batches, per-record ``publish_async`` with gathered acks instead."""
        if self.atomic and self._nc is not None and len(items) <= _ATOMIC_MAX:
            outcome = await self._send_atomic(self._nc, items, headers_base)
            if outcome is not None:
                return outcome
        futures, failure = await self._send(js, items, headers_base)
        return await self._acks(futures, failure)

    async def _send_atomic(
        self, nc: NATS, items: list[_Prepared], headers_base: dict[str, str]
    ) -> tuple[list[str], str | None] | None:
        """One JetStream atomic batch (server >= 2.12, stream ``allow_atomic``); None means
        "publish these records one by one instead"."""
        batch_id = uuid.uuid4().hex
        token, reply, fut = self._replies.new()
        last = len(items)
        try:
            for i, item in enumerate(items, 1):
                headers = {
                    **headers_base,
                    "Nats-Msg-Id": msg_id(self.site, item.id),
                    "Nats-Batch-Id": batch_id,
                    "Nats-Batch-Sequence": str(i),
                }
                if i == last:
                    headers["Nats-Batch-Commit"] = "1"
                    await nc.publish(item.subject, item.body, reply=reply, headers=headers)
                else:
                    await nc.publish(item.subject, item.body, headers=headers)
            msg = await asyncio.wait_for(fut, self.ack_timeout_s)
        except TimeoutError:
            return [], "ack timeout (atomic batch)"
        except Exception as exc:  # connection closing/reconnecting mid-batch
            return [], f"publish: {type(exc).__name__}"
        finally:
            self._replies.forget(token)
        if msg.headers and msg.headers.get("Status") == "503":
            return [], "publish: no responders (hub unreachable)"
        try:
            response = json.loads(msg.data or b"{}")
        except ValueError:
            return [], "publish: bad reply"
        error = response.get("error")
        if error:
            code = error.get("err_code")
            if code == _ERR_ATOMIC_DUPLICATE:
                return None  # a resend: per record, the hub acks the duplicates as such
            if code == _ERR_ATOMIC_DISABLED:
                log.info(
                    "sync: the hub stream does not allow atomic batches; publishing per record"
                )
                self.atomic = False
                return None
            return [], f"publish: {error.get('description', 'error')}"
        if response.get("count") != last:
            return [], "publish: atomic batch count mismatch"
        return [item.id for item in items], None

    async def _send(
        self, js: JetStreamContext, items: list[_Prepared], headers_base: dict[str, str]
    ) -> tuple[list[tuple[str, asyncio.Future[api.PubAck]]], str | None]:
        futures: list[tuple[str, asyncio.Future[api.PubAck]]] = []
        try:
            for item in items:
                headers = {**headers_base, "Nats-Msg-Id": msg_id(self.site, item.id)}
                fut = await js.publish_async(item.subject, item.body, headers=headers)
                futures.append((item.id, fut))
        except Exception as exc:  # connection closing/reconnecting mid-batch
            return futures, f"publish: {type(exc).__name__}"
        return futures, None

    async def _acks(
        self, futures: list[tuple[str, asyncio.Future[api.PubAck]]], failure: str | None
    ) -> tuple[list[str], str | None]:
        """Wait for the PubAcks (up to `ack_timeout_s`); the ids acked, in order."""
        if futures:
            _, pending = await asyncio.wait([f for _, f in futures], timeout=self.ack_timeout_s)
            for fut in pending:
                fut.cancel()
            if pending:
                failure = failure or f"ack timeout ({len(pending)} records)"
        acked: list[str] = []
        for record_id, fut in futures:
            if fut.cancelled():
                continue
            error = fut.exception()
            if error is None:
                acked.append(record_id)
            elif failure is None:
                failure = f"publish: {type(error).__name__}"
        return acked, failure


class _RoundFailed(Exception):
    pass


class _Replies:
    """One wildcard reply subscription for batch commits (its interest crosses the leaf
    once, not per batch); futures keyed by token."""

    def __init__(self) -> None:
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[Msg]] = {}

    async def start(self, nc: NATS) -> None:
        if self._prefix:
            return
        self._prefix = nc.new_inbox()
        await nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._futures.get(msg.subject.rpartition(".")[2])
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def new(self) -> tuple[str, str, asyncio.Future[Msg]]:
        token = uuid.uuid4().hex
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._futures[token] = fut
        return token, f"{self._prefix}.{token}", fut

    def forget(self, token: str) -> None:
        self._futures.pop(token, None)


def _delete(conn: Any, ids: list[str]) -> None:
    conn.executemany("DELETE FROM outbox WHERE id = ? AND sent_at IS NULL", [(i,) for i in ids])


def _link_ok(nc: NATS) -> bool:
    return bool(nc.is_connected) and not nc.is_reconnecting and not nc.is_closed


def _backoff(attempt: int, base: float, cap: float) -> float:
    ceiling = min(cap, base * (2 ** min(attempt, 20)))
    return random.uniform(ceiling / 2, ceiling)
