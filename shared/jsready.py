"""Retry a JetStream API call while JetStream cannot answer yet.

A hub cluster that has just elected its meta leader, or has lost a node (or a quorum),
answers stream, bucket and consumer requests with a timeout (``nats.errors.TimeoutError``:
no answer within the request's own timeout) or a 503 (``ServiceUnavailableError``) for a
few seconds, then normally again. `until_jetstream_answers` calls `op` again, with capped
exponential backoff and jitter, until it answers or `timeout_s` has passed; every other
error (not found, bad request, permissions) is an answer and is raised at once, and so is
the one 503 that is permanent: JetStream not enabled for the caller's account (``err_code``
10039, `JetStreamNotEnabled`).

`op` must be safe to run again: a create that timed out may still have been applied, so
the op looks the thing up first (or tolerates "already exists") rather than creating
blindly::

    async def once() -> KeyValue:
        try:
            return await js.key_value("b")
        except BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(bucket="b", replicas=3))

    kv = await until_jetstream_answers(once, what="KV bucket b")

Writes are retried the same way when a second try cannot do harm: a KV put of the same
value (one more revision, same content), a compare-and-set whose retry re-reads first, an
object put under the same name (it replaces); each call site says why its retry is safe.

On a secured hub a request the identity may not publish is not refused but unanswered, so
it too times out. The server does tell the client, though, in a ``-ERR 'Permissions
Violation for Publish to "$JS.API..."'`` that nats-py keeps as the connection's last
error: given the connection (`nc`, e.g. ``connection_of(js)``), a try that times out after
such a violation on a JetStream subject (or on the reply inbox) raises
`JetStreamPermissionDenied` at once, naming the subject. A denial on a leaf link (a site's
request forwarded to the hub) is not reported to the client: that still times out. Both
errors are a `JetStreamRefused` (shared/errors.py) and are importable from here too.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from aivos.shared.errors import JetStreamNotEnabled, JetStreamPermissionDenied
from aivos.shared.natsconf.connect import backoff_delay

__all__ = [
    "JETSTREAM_NOT_ENABLED",
    "NOT_READY",
    "STREAM_NAME_IN_USE",
    "JetStreamNotEnabled",
    "JetStreamPermissionDenied",
    "connection_of",
    "until_jetstream_answers",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_READY: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
)
"""What JetStream says while it cannot answer yet: no answer in time, or a 503."""

JETSTREAM_NOT_ENABLED = 10039
"""``err_code`` of the 503 a server with JetStream answers when the caller's account has no
JetStream: a 503 like "not ready", but permanent (`JetStreamNotEnabled`). A server without
JetStream at all has no responder on the API: nats-py reports that as a 503 without an
``err_code``, which stays "not ready" (a node whose JetStream is still starting looks the
same)."""

STREAM_NAME_IN_USE = 10058
"""``err_code`` of the 400 answering a create of a stream (bucket, object store) that exists
with another config: someone else created it meanwhile; look it up instead."""

# nats-py's text of the server's -ERR (kept as `NATS.last_error`, handed to error_cb); it
# lower-cases the whole line, subject included
_VIOLATION = re.compile(
    r'permissions violation for (publish|subscription) to "([^"]+)"', re.IGNORECASE
)
# what a JetStream call publishes to (API, KV and object-store writes) and replies on
_JETSTREAM_SUBJECTS = {"publish": ("$js.", "$kv.", "$o."), "subscription": ("_inbox",)}


def connection_of(handle: Any) -> NATS | None:
    """The connection behind a JetStream context, KV bucket or object store (nats-py keeps
    it private: ``_nc`` of the context, ``_js`` of a bucket or store); None if not found."""
    js = getattr(handle, "_js", handle)
    nc = getattr(js, "_nc", None)
    return nc if isinstance(nc, NATS) else None


def _denial(nc: NATS | None, before: Exception | None) -> tuple[str, str] | None:
    """(action, subject) of a JetStream permissions violation `nc` got since `before` was
    its last error; None if it got none."""
    if nc is None:
        return None
    err = nc.last_error
    if err is None or err is before:
        return None
    found = _VIOLATION.search(str(err))
    if found is None:
        return None
    action, subject = found.group(1).lower(), found.group(2)
    return (action, subject) if subject.lower().startswith(_JETSTREAM_SUBJECTS[action]) else None


_BASE_S = 0.1  # the first wait
_CAP_S = 2.0  # the longest wait between two tries (a try that times out adds its own 5 s)


async def until_jetstream_answers(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    timeout_s: float = 60.0,
    logger: logging.Logger | None = None,
    nc: NATS | None = None,
) -> T:
    """The result of ``await op()``, called again while it fails with `NOT_READY` and
    `timeout_s` has not passed (0: one try). Each retry is logged at INFO on `logger`
    (default: this module's) as ``"<what>: JetStream not ready (...); retrying ..."``; at
    the deadline the last error is raised. Any other error is raised at once, and a 503
    with ``err_code`` 10039 as `JetStreamNotEnabled`. With `nc`
    (the connection `op` uses), a timeout that follows a permissions violation on a
    JetStream subject raises `JetStreamPermissionDenied` instead of retrying."""
    out = logger or log
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    attempt = 0
    while True:
        before = nc.last_error if nc is not None else None
        try:
            return await op()
        except NOT_READY as exc:
            if getattr(exc, "err_code", None) == JETSTREAM_NOT_ENABLED:
                raise JetStreamNotEnabled(what) from exc
            denied = _denial(nc, before)
            if denied is not None:
                raise JetStreamPermissionDenied(what, *denied) from exc
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
