"""Open a nats-py connection with explicit state callbacks and capped exponential
backoff with jitter (for the first connect and for every reconnect).

Identity on a secured hub (docs/security.md): a client certificate issued by the aivos
CA, passed as `identity` or taken from ``AIVOS_NATS_CERT``/``AIVOS_NATS_KEY``/
``AIVOS_NATS_CA``; ``AIVOS_NATS_INBOX`` sets the inbox prefix the identity may
receive replies on (e.g. ``_INBOX.svc-worker``). Without either, connections are
plain, as before."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS

from aivos.shared.errors import LinkDown
from aivos.shared.natsconf.render import CertFiles

__all__ = [
    "await_close",
    "backoff_delay",
    "close_nats",
    "connect_nats",
    "identity_from_env",
    "tls_context",
]

log = logging.getLogger(__name__)

StateCallback = Callable[[str], Awaitable[None] | None]

# Each `connect_nats` connection's once-only "closed" report, for `close_nats` to call:
# nats-py skips its closed callback when its close ends in CancelledError (see `close_nats`).
_report_closed: weakref.WeakKeyDictionary[NATS, Callable[[], Awaitable[None]]] = (
    weakref.WeakKeyDictionary()
)


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Full-jitter exponential backoff: uniform(base/2, min(cap, base * 2**attempt))."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return random.uniform(min(base / 2, ceiling), ceiling)


def tls_context(identity: CertFiles) -> ssl.SSLContext:
    """A client TLS context: trust only the aivos CA, present the identity's certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=identity.ca)
    ctx.load_cert_chain(identity.cert, identity.key)
    return ctx


def identity_from_env() -> CertFiles | None:
    """The client certificate named by ``AIVOS_NATS_CERT``/``_KEY``/``_CA``, if set."""
    cert = os.environ.get("AIVOS_NATS_CERT")
    if not cert:
        return None
    key = os.environ.get("AIVOS_NATS_KEY") or cert.removesuffix(".crt") + ".key"
    ca = os.environ.get("AIVOS_NATS_CA") or os.path.join(os.path.dirname(cert), "ca.crt")
    return CertFiles(cert=cert, key=key, ca=ca)


async def connect_nats(
    url: str | list[str],
    *,
    name: str,
    on_state: StateCallback | None = None,
    connect_timeout_s: float = 30.0,
    backoff_base: float = 0.1,
    backoff_cap: float = 5.0,
    identity: CertFiles | None = None,
    **options: Any,
) -> NATS:
    """Connect (retrying with backoff up to `connect_timeout_s`, then LinkDown), keep
    reconnecting forever afterwards. `on_state` receives ``"disconnected"``,
    ``"reconnected"`` and ``"closed"`` (once, when closed through `close_nats`, however
    that close ends); subscriptions are restored by nats-py itself."""

    async def _notify(state: str) -> None:
        log.info("nats %s: %s", name, state)
        if on_state is not None:
            result = on_state(state)
            if result is not None:
                await result

    async def _disconnected() -> None:
        await _notify("disconnected")

    async def _reconnected() -> None:
        await _notify("reconnected")

    async def _error(exc: Exception) -> None:
        log.debug("nats %s: %s", name, exc)

    def _pick(servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        attempts = max((s.reconnects for s in servers), default=0)
        return None, backoff_delay(attempts, backoff_base, backoff_cap)

    if isinstance(url, str) and "," in url:  # "nats://a:4222,nats://b:4222": a cluster
        url = [u.strip() for u in url.split(",") if u.strip()]
    identity = identity or identity_from_env()
    if identity is not None and "tls" not in options:
        options["tls"] = tls_context(identity)
    inbox = os.environ.get("AIVOS_NATS_INBOX")
    if inbox and "inbox_prefix" not in options:
        options["inbox_prefix"] = inbox

    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout_s
    attempt = 0
    while True:
        # "closed" from whichever comes first: nats-py's callback or `close_nats`
        closed = _once(lambda: _notify("closed"))
        try:
            # A bounded attempt per call: nats-py would retry the first connect forever with
            # max_reconnect_attempts=-1, without our backoff or deadline. Unlimited
            # reconnects are switched on once connected (nats-py reads options dynamically).
            nc = await nats.connect(
                url,
                name=name,
                disconnected_cb=_disconnected,
                reconnected_cb=_reconnected,
                closed_cb=closed,
                error_cb=_error,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                reconnect_to_server_handler=_pick,
                connect_timeout=2,
                **options,
            )
            nc.options["allow_reconnect"] = True
            nc.options["max_reconnect_attempts"] = -1
            _report_closed[nc] = closed
            return nc
        except Exception as exc:  # nats-py raises several unrelated types here
            delay = backoff_delay(attempt, backoff_base, backoff_cap)
            attempt += 1
            if loop.time() + delay > deadline:
                raise LinkDown(name, f"cannot connect to NATS at {url}: {exc}") from exc
            log.info(
                "nats %s: connect failed (%s), retrying in %.2fs", name, type(exc).__name__, delay
            )
            await asyncio.sleep(delay)


def _once(report: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """`report`, run by the first call only."""
    done = False

    async def call() -> None:
        nonlocal done
        if not done:
            done = True
            await report()

    return call


async def close_nats(nc: NATS) -> None:
    """Close a connection in whatever state it is in, and only raise if our own task is
    being cancelled. A `connect_nats` connection's ``on_state("closed")`` has run when
    this returns or raises, if the connection is closed by then.

    Connected: drain first, so what was published goes out and subscriptions finish.
    Reconnecting: nats-py refuses to drain, so close. nats-py 2.16 cancels its reconnect
    task while that task may be awaiting the transport's close future; cancelling the task
    cancels that shared future, and the close that awaits it next raises CancelledError
    although nobody cancelled the caller (reproduced with a link cut during a reconnect).
    The transport is closed by then, so that error is the library's and is dropped.

    nats-py runs its closed callback last in its close, so any CancelledError (its own, or
    our caller's cancellation) skips it; consumers would keep showing a live link. The
    callback is reported here after the close instead, once only, so not twice when nats-py
    did run it; a cancellation of our caller still propagates after that."""
    try:
        if nc.is_closed:
            return
        if nc.is_connected:
            with contextlib.suppress(Exception):
                await nc.drain()
            if nc.is_closed:
                return
        try:
            await await_close(nc.close())
        except Exception as exc:  # a transport error while closing leaves it closed anyway
            log.debug("nats: close raised %r", exc)
    finally:
        report = _report_closed.get(nc)
        if report is not None and nc.is_closed:
            await report()


async def await_close(closing: Awaitable[None]) -> None:
    """Await a nats-py close, dropping the CancelledError that the library raises on its
    own (see `close_nats`); it is raised only when our own task is being cancelled."""
    try:
        await closing
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("nats: close finished with the library's own cancelled close future")
