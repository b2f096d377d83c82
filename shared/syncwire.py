"""The wire format of store-and-forward sync (edge outbox -> hub stream ``AIVOS_SYNC``).

One NATS message per outbox record, published to ``aivos.sync.<site>.<data_class>``:

* body: `SyncEnvelope` as JSON; `payload` is the record *after* the site's exit gate
  (masked or allowed, never a `local-only` record);
* headers: ``Nats-Msg-Id`` = `msg_id(site, record_id)` (JetStream dedup within the stream's
  duplicate window), plus W3C ``traceparent`` of the drain batch.

The cloud keys records by ``(site, id)``: resends after the duplicate window are absorbed
by the ingest's upsert, so the effect is exactly once.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import msgspec
import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext

from aivos.shared.jsready import NOT_READY, STREAM_NAME_IN_USE, until_jetstream_answers
from aivos.shared.subjects import SYNC_ALL, SYNC_STREAM

__all__ = [
    "SyncEnvelope",
    "msg_id",
    "encode_envelope",
    "decode_envelope",
    "sync_stream_config",
    "ensure_sync_stream",
]

log = logging.getLogger(__name__)


class SyncEnvelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: str  # the outbox record's stable id
    site: str
    data_class: str  # "audit", "memory", ...
    kind: str  # the record's subject within its class (audit kind, "turn", "fact")
    seq: int  # outbox order at the site (strictly increasing per site)
    created_at: str  # ISO time the record was written at the site
    payload: Any  # JSON value, after the exit gate
    trace_id: str | None = None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(SyncEnvelope)


def msg_id(site: str, record_id: str) -> str:
    """``Nats-Msg-Id`` of a record: site-qualified, so equal ids at two sites never collide."""
    return f"{site}:{record_id}"


def encode_envelope(envelope: SyncEnvelope) -> bytes:
    return _ENCODER.encode(envelope)


def decode_envelope(data: bytes) -> SyncEnvelope:
    """Decode a message body; raises msgspec.DecodeError / ValidationError on bad input."""
    return _DECODER.decode(data)


def sync_stream_config(
    *,
    duplicate_window_s: float = 120.0,
    max_age_s: float | None = None,
    replicas: int = 1,
    allow_atomic: bool = True,
) -> api.StreamConfig:
    """``AIVOS_SYNC`` on ``aivos.sync.>``: file storage, limits retention, dedup window,
    atomic batch publishing allowed (nats-server >= 2.12)."""
    return api.StreamConfig(
        name=SYNC_STREAM,
        subjects=[SYNC_ALL],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=duplicate_window_s,
        max_age=max_age_s,
        num_replicas=replicas,
        allow_atomic=allow_atomic or None,
    )


async def ensure_sync_stream(
    js: JetStreamContext,
    *,
    duplicate_window_s: float = 120.0,
    max_age_s: float | None = None,
    replicas: int = 1,
    allow_atomic: bool = True,
    update: bool = True,
    ready_timeout_s: float = 60.0,
) -> api.StreamInfo:
    """Create the hub stream ``AIVOS_SYNC`` if missing. When it exists: with `update`,
    apply this config (e.g. a new duplicate window); without, keep it as it is.
    From a site connection pass the hub's context (``nc.jetstream(domain="hub")``).

    Retried for up to `ready_timeout_s` while JetStream cannot answer yet: a hub cluster
    that has just elected its meta leader, or lost a node, answers an R3 create with a
    timeout or 503 for a few seconds (`until_jetstream_answers`; 0: one try). A create that
    timed out may still have been applied; the retry then finds the stream and (with
    `update`) applies the same config again."""
    return await until_jetstream_answers(
        lambda: _ensure_sync_stream_once(
            js,
            duplicate_window_s=duplicate_window_s,
            max_age_s=max_age_s,
            replicas=replicas,
            allow_atomic=allow_atomic,
            update=update,
        ),
        what="sync stream",
        timeout_s=ready_timeout_s,
        logger=log,
    )


async def _ensure_sync_stream_once(
    js: JetStreamContext,
    *,
    duplicate_window_s: float,
    max_age_s: float | None,
    replicas: int,
    allow_atomic: bool,
    update: bool,
) -> api.StreamInfo:
    config = sync_stream_config(
        duplicate_window_s=duplicate_window_s,
        max_age_s=max_age_s,
        replicas=replicas,
        allow_atomic=allow_atomic,
    )
    try:
        info = await js.stream_info(SYNC_STREAM)
    except NOT_READY:
        raise  # not an answer: the caller retries
    except Exception:  # nats.js.errors.NotFoundError (or a domain that is not there yet)
        try:
            return await _add_stream(js, config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            # created meanwhile (another process, with another config): it exists now
            info = await js.stream_info(SYNC_STREAM)
    if not update:
        return info
    log.info("sync stream exists; applying config")
    try:
        return await js.update_stream(config)
    except nats.js.errors.BadRequestError:
        return await js.update_stream(_without_atomic(config))


async def _add_stream(js: JetStreamContext, config: api.StreamConfig) -> api.StreamInfo:
    try:
        return await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code == STREAM_NAME_IN_USE:
            raise
        return await js.add_stream(_without_atomic(config))  # a server < 2.12: no atomic


def _without_atomic(config: api.StreamConfig) -> api.StreamConfig:
    return dataclasses.replace(config, allow_atomic=None)
