"""Replication of the hub's JetStream assets on a hub cluster.

The cloud services create ``AIVOS_SYNC``, the config KV bucket (stream ``KV_aivos_config``)
and the model object store (``OBJ_aivos_models``) when missing; on an N-node cluster they
should run at R3 (``--js-replicas``). `scale_stream` raises the replica count of a stream
that exists at fewer replicas (JetStream copies it to the new peers online); it never
lowers it, so a service started with the default (1) leaves a replicated stream alone.
"""

from __future__ import annotations

import dataclasses
import logging

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from aivos.shared.subjects import CONFIG_BUCKET, MODELS_BUCKET

__all__ = ["HUB_STREAMS", "scale_stream", "scale_streams"]

log = logging.getLogger(__name__)

HUB_STREAMS = (f"KV_{CONFIG_BUCKET}", f"OBJ_{MODELS_BUCKET}")
"""The streams behind the hub's KV bucket and object store."""


async def scale_stream(js: JetStreamContext, stream: str, replicas: int) -> int | None:
    """Raise `stream` to `replicas` if it has fewer; returns its replica count now (None:
    the stream does not exist)."""
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


async def scale_streams(
    js: JetStreamContext, replicas: int, streams: tuple[str, ...] = HUB_STREAMS
) -> dict[str, int | None]:
    """`scale_stream` for each of `streams` (default: the KV bucket and the object store)."""
    return {name: await scale_stream(js, name, replicas) for name in streams}
