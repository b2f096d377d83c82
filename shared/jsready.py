"""Retry a JetStream API call while JetStream cannot answer yet.

A hub cluster that has just elected its meta leader, or has lost a node (or a quorum),
answers stream, bucket and consumer requests with a timeout (``nats.errors.TimeoutError``:
no answer within the request's own timeout) or a 503 (``ServiceUnavailableError``) for a
few seconds, then normally again. `until_jetstream_answers` calls `op` again, with capped
exponential backoff and jitter, until it answers or `timeout_s` has passed; every other
error (not found, bad request, permissions) is an answer and is raised at once.

`op` must be safe to run again: a create that timed out may still have been applied, so
the op looks the thing up first (or tolerates "already exists") rather than creating
blindly::

    async def once() -> KeyValue:
        try:
            return await js.key_value("b")
        except BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(bucket="b", replicas=3))

    kv = await until_jetstream_answers(once, what="KV bucket b")

On a secured hub a request the identity may not publish is not refused but unanswered, so
it too times out: such an op fails after `timeout_s` rather than after one request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

from aivos.shared.natsconf.connect import backoff_delay

__all__ = ["NOT_READY", "STREAM_NAME_IN_USE", "until_jetstream_answers"]

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_READY: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
)
"""What JetStream says while it cannot answer yet: no answer in time, or a 503."""

STREAM_NAME_IN_USE = 10058
"""``err_code`` of the 400 answering a create of a stream (bucket, object store) that exists
with another config: someone else created it meanwhile; look it up instead."""

_BASE_S = 0.1  # the first wait
_CAP_S = 2.0  # the longest wait between two tries (a try that times out adds its own 5 s)


async def until_jetstream_answers(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    timeout_s: float = 60.0,
    logger: logging.Logger | None = None,
) -> T:
    """The result of ``await op()``, called again while it fails with `NOT_READY` and
    `timeout_s` has not passed (0: one try). Each retry is logged at INFO on `logger`
    (default: this module's) as ``"<what>: JetStream not ready (...); retrying ..."``; at
    the deadline the last error is raised. Any other error is raised at once."""
    out = logger or log
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    attempt = 0
    while True:
        try:
            return await op()
        except NOT_READY as exc:
            attempt += 1
            left = deadline - loop.time()
            if left <= 0:
                raise
            delay = min(backoff_delay(attempt, base=_BASE_S, cap=_CAP_S), left)
            out.info(
                "%s: JetStream not ready (%s, try %d); retrying in %.1f s",
                what,
                type(exc).__name__,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)
