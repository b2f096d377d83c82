"""The fleet service's link to the hub, as an operator sees it: up, or down since when, and why.

`FleetLink` is told how each connect try of the fleet service ended (`failed`, `connected`)
and what the NATS connection does afterwards (`nats_state`), and decides what to log. A hub
that *refuses* this identity (`JetStreamRefused`: a missing grant, no JetStream for its
account) has a config fault that only an operator can fix, so the refusal is logged once at
ERROR (again when its message changes, and as a reminder every `REMIND_S`), its repeats at
DEBUG. Passing faults (hub unreachable, JetStream not ready) keep one WARNING per try, as
before. `status()` is what the console's /healthz, /api/health and page banner show."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import msgspec

from aivos.shared.errors import JetStreamRefused, LinkDown
from aivos.shared.jsready import NOT_READY

__all__ = ["REMIND_S", "FleetLink", "LinkStatus"]

log = logging.getLogger("aivos.cloud.fleet.service")  # the service's log, as before

REMIND_S = 600.0
"""How often a refusal that lasts is logged at ERROR again (repeats in between: DEBUG)."""

# nats://user:password@host in a LinkDown message: never shown or logged
_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")


class LinkStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The link's state. `state`: ``off`` (not started), ``connecting`` (no try finished
    yet), ``up``, ``reconnecting`` (set up, NATS connection lost; nats-py reconnects),
    ``down`` (the last try failed: hub unreachable, JetStream not ready, ...) or
    ``refused`` (the hub's config refuses this identity; retried slowly). `since`: epoch
    seconds when that state began (``down``/``refused``: the first failed try in a row).
    `failures`: failed tries in a row. `error`/`message`: the last failed try's exception
    class and message (credentials removed); `reason`: the same in plain words."""

    state: str
    since: float | None = None
    failures: int = 0
    error: str | None = None
    message: str | None = None
    reason: str | None = None


def _redact(text: str) -> str:
    return _USERINFO.sub(r"\1***@", text)


def _reason(exc: Exception) -> str:
    """`exc` in words an operator acts on (the message is redacted by the caller)."""
    if isinstance(exc, JetStreamRefused):
        return (
            f"the hub refuses this console's identity: {exc}. Fix the hub's config and "
            "reload the hub (the console needs no restart)"
        )
    if isinstance(exc, LinkDown):
        return "the hub is unreachable"
    if isinstance(exc, NOT_READY):
        return "the hub's JetStream is not answering yet (a cluster starting or missing a node)"
    return f"the hub refused the fleet setup ({type(exc).__name__}: {exc})"


def _log_line(exc: Exception) -> str:
    """The WARNING text of a passing fault (wording kept from the service's old log)."""
    if isinstance(exc, LinkDown):
        return "hub unreachable"
    if isinstance(exc, NOT_READY):
        return f"hub JetStream not ready ({type(exc).__name__})"
    return f"hub refused the fleet setup ({type(exc).__name__}: {exc})"


class FleetLink:
    """The state of the fleet service's hub link, and the one place that logs it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._status = LinkStatus(state="off")
        self._refusal_logged: tuple[str, float] | None = None  # (message, when)

    def status(self) -> LinkStatus:
        return self._status

    def starting(self) -> None:
        self._status = LinkStatus(state="connecting", since=self._clock())

    def stopped(self) -> None:
        self._status = LinkStatus(state="off", since=self._clock())

    def connected(self) -> None:
        failed = self._status.failures
        if failed:
            log.info(
                "fleet: link up after %d failed tries (last: %s)", failed, self._status.message
            )
        self._status = LinkStatus(state="up", since=self._clock())
        self._refusal_logged = None

    def nats_state(self, event: str) -> None:
        """`connect_nats`' ``on_state`` for the set-up connection: disconnected,
        reconnected, closed."""
        current = self._status.state
        if event == "disconnected" and current == "up":
            self._status = LinkStatus(state="reconnecting", since=self._clock())
        elif event == "reconnected" and current == "reconnecting":
            self._status = LinkStatus(state="up", since=self._clock())

    def failed(self, exc: Exception, retry_in_s: float) -> None:
        """Record a failed try and log it (a refusal once, see the module doc)."""
        now = self._clock()
        previous = self._status
        refused = isinstance(exc, JetStreamRefused)
        state = "refused" if refused else "down"
        in_a_row = previous.state in ("down", "refused")
        message = _redact(str(exc))
        self._status = LinkStatus(
            state=state,
            since=previous.since if in_a_row and previous.state == state else now,
            failures=previous.failures + 1 if in_a_row else 1,
            error=type(exc).__name__,
            message=message,
            reason=_redact(_reason(exc)),
        )
        tries = self._status.failures
        if refused:
            self._log_refusal(message, tries, retry_in_s, now)
        else:
            self._refusal_logged = None
            why = _redact(_log_line(exc))
            log.warning("fleet: %s (attempt %d); retrying", why, tries)

    def _log_refusal(self, message: str, tries: int, retry_in_s: float, now: float) -> None:
        logged = self._refusal_logged
        if logged is not None and logged[0] == message and now - logged[1] < REMIND_S:
            log.debug("fleet: still refused (attempt %d): %s", tries, message)
            return
        self._refusal_logged = (message, now)
        log.error(
            "fleet: the hub refuses this console's identity (attempt %d): %s; next try in "
            "%.1f s, and slowly on until the hub's config is fixed (repeats are logged at "
            "DEBUG, again at ERROR if the reason changes or after %.0f min)",
            tries,
            message,
            retry_in_s,
            REMIND_S / 60,
        )
