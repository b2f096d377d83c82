"""The hub's JetStream assets: open-or-create of KV buckets and object stores, and their
replication on a hub cluster.

The cloud services create ``AIVOS_SYNC``, the config KV bucket (stream ``KV_aivos_config``)
and the model object store (``OBJ_aivos_models``) when missing; on an N-node cluster they
should run at R3 (``--js-replicas``). `scale_stream` raises the replica count of a stream
that exists at fewer replicas (JetStream copies it to the new peers online); it never
lowers it, so a service started with the default (1) leaves a replicated stream alone.

All of them run right after a hub cluster starts (``aivos up --hub-nodes 3``) or while it
has lost a node, when JetStream answers with timeouts or 503 for a few seconds: they are
retried for up to `ready_timeout_s` (`aivos.shared.jsready`; 0: one try). Each try looks
the asset up before creating it, so a create that timed out but was applied is found by
the next try, and one created meanwhile by another process ("already in use") is opened.
On a secured hub an identity without the grant gets `JetStreamPermissionDenied` at once.
"""

from __future__ import annotations

import dataclasses
import logging

from nats.js.api import KeyValueConfig, ObjectStoreConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from aivos.shared.jsready import STREAM_NAME_IN_USE, connection_of, until_jetstream_answers
from aivos.shared.subjects import CONFIG_BUCKET, MODELS_BUCKET

__all__ = [
    "HUB_STREAMS",
    "open_key_value",
    "open_object_store",
    "scale_stream",
    "scale_streams",
]

log = logging.getLogger(__name__)

HUB_STREAMS = (f"KV_{CONFIG_BUCKET}", f"OBJ_{MODELS_BUCKET}")
"""The streams behind the hub's KV bucket and object store."""


async def open_key_value(
    js: JetStreamContext,
    config: KeyValueConfig,
    *,
    create: bool = True,
    ready_timeout_s: float = 60.0,
) -> KeyValue:
    """The KV bucket ``config.bucket``; created with `config` when missing and `create`
    (else BucketNotFoundError). An existing bucket is opened as it is."""

    async def once() -> KeyValue:
        try:
            return await js.key_value(config.bucket)
        except BucketNotFoundError:
            if not create:
                raise
        try:
            return await js.create_key_value(config)
        except BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            return await js.key_value(config.bucket)  # created meanwhile, another config

    return await until_jetstream_answers(
        once,
        what=f"KV bucket {config.bucket}",
        timeout_s=ready_timeout_s,
        logger=log,
        nc=connection_of(js),
    )


async def open_object_store(
    js: JetStreamContext,
    bucket: str,
    config: ObjectStoreConfig,
    *,
    create: bool = True,
    ready_timeout_s: float = 60.0,
) -> ObjectStore:
    """The object store `bucket`; created with `config` when missing and `create` (else
    BucketNotFoundError). An existing store is opened as it is."""

    async def once() -> ObjectStore:
        try:
            return await js.object_store(bucket)
        except BucketNotFoundError:
            if not create:
                raise
        try:
            # a copy: nats-py writes the bucket name into the config it is given
            return await js.create_object_store(bucket, config=dataclasses.replace(config))
        except BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            return await js.object_store(bucket)  # created meanwhile, another config

    return await until_jetstream_answers(
        once,
        what=f"object store {bucket}",
        timeout_s=ready_timeout_s,
        logger=log,
        nc=connection_of(js),
    )


async def scale_stream(
    js: JetStreamContext, stream: str, replicas: int, *, ready_timeout_s: float = 60.0
) -> int | None:
    """Raise `stream` to `replicas` if it has fewer; returns its replica count now (None:
    the stream does not exist)."""
    return await until_jetstream_answers(
        lambda: _scale_once(js, stream, replicas),
        what=f"scaling {stream}",
        timeout_s=ready_timeout_s,
        logger=log,
        nc=connection_of(js),
    )


async def scale_streams(
    js: JetStreamContext,
    replicas: int,
    streams: tuple[str, ...] = HUB_STREAMS,
    *,
    ready_timeout_s: float = 60.0,
) -> dict[str, int | None]:
    """`scale_stream` for each of `streams` (default: the KV bucket and the object store),
    retried together within one `ready_timeout_s`."""

    async def once() -> dict[str, int | None]:
        return {name: await _scale_once(js, name, replicas) for name in streams}

    return await until_jetstream_answers(
        once,
        what="scaling hub streams",
        timeout_s=ready_timeout_s,
        logger=log,
        nc=connection_of(js),
    )


async def _scale_once(js: JetStreamContext, stream: str, replicas: int) -> int | None:
    """One try; a retry after an update that timed out but was applied finds it done."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return None
    have = info.config.num_replicas or 1
    if have >= replicas:
        return have
    log.info("jetstream: %s from R%d to R%d", stream, have, replicas)
    updated = await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
    return updated.config.num_replicas
