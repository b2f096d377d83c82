"""Job completion callbacks: only to allow-listed hosts, signed like inbound webhooks.

`jobs.callback_allow_hosts` lists the targets: `host` (any port) or `host:port`
(`[::1]:9000` for IPv6). Nothing else is allowed, loopback included: a client token must not
be able to reach other services on the box. A URL is checked when the job is submitted
(`validate_callback_url`: 400 for a malformed URL or a host not listed) and again before
every delivery, so a job stored under an older allow-list is not sent past the current one.

Each delivery is a POST of the job's status (JSON) with the four webhook headers of scheme
`v1` (edge/workflows/signatures.py): `X-Aivos-Event: job.<status>`, a delivery id that
stays the same across the retries of one notification, the timestamp and
`X-Aivos-Signature: v1=<hmac-sha256>` over ``v1:<timestamp>:<delivery>:<event>:<body>``
with the site's callback key. A receiver verifies it with the same `verify()`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from aivos.edge.workflows.signatures import signed_headers
from aivos.shared.errors import CallbackHostNotAllowed, InvalidCallbackUrl
from aivos.shared.ids import new_id

__all__ = ["validate_callback_url", "load_callback_secret", "CallbackSender"]

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _norm_host(host: str) -> str:
    """Lower-case; IP literals in their canonical form (so `::0001` matches `::1`)."""
    host = host.lower().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _allowed(host: str, port: int, allow_hosts: list[str]) -> bool:
    for entry in allow_hosts:
        try:
            parts = urlsplit(f"//{entry.strip()}")
            entry_host, entry_port = parts.hostname, parts.port
        except ValueError:
            continue  # a malformed entry allows nothing
        if entry_host and _norm_host(entry_host) == host and entry_port in (None, port):
            return True
    return False


def validate_callback_url(url: str, allow_hosts: list[str]) -> None:
    """Raises InvalidCallbackUrl (not an absolute http(s) URL httpx can send to: control
    characters, spaces, a bad port or IPv6 literal) or CallbackHostNotAllowed."""
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidCallbackUrl(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        host = _norm_host(parts.hostname or "")
        httpx.URL(url)  # what the sender will parse: anything it refuses is refused here
    except (ValueError, httpx.InvalidURL) as exc:
        raise InvalidCallbackUrl(url) from exc
    if parts.scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        raise InvalidCallbackUrl(url)
    if not _allowed(host, port or _DEFAULT_PORTS[parts.scheme], allow_hosts):
        raise CallbackHostNotAllowed(host)


def load_callback_secret(path: Path) -> str:
    """The callback signing key kept at `path`; created (random, mode 0600) if missing."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    log.info("created the job callback signing key at %s", path)
    return key


class CallbackSender:
    def __init__(
        self, timeout_s: float, *, secret: str = "", allow_hosts: list[str] | None = None
    ) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self.secret = secret  # set by the agent at start (load_callback_secret)
        self.allow_hosts = list(allow_hosts or [])
        self.sent = 0
        self.failed = 0
        self.refused = 0  # deliveries not attempted: the URL is not (or no longer) allowed

    async def send(self, url: str, body: Any, attempts: int = 3) -> bool:
        """POST `body` (signed) to `url`, retrying server errors; never raises."""
        try:
            validate_callback_url(url, self.allow_hosts)
        except (InvalidCallbackUrl, CallbackHostNotAllowed) as exc:
            self.refused += 1
            log.warning("callback not sent: %s", exc.code)
            return False
        payload = msgspec.json.encode(body)
        status = getattr(body, "status", None) or "status"
        headers = {
            "content-type": "application/json",
            **signed_headers(self.secret, f"job.{status}", payload, delivery_id=new_id()),
        }
        for attempt in range(attempts):
            try:
                resp = await self._client.post(url, content=payload, headers=headers)
                if resp.status_code < 500:
                    self.sent += 1
                    return resp.is_success
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                log.info("callback attempt %d failed (%s)", attempt + 1, type(exc).__name__)
                continue
            log.info("callback attempt %d failed (server error)", attempt + 1)
        self.failed += 1
        return False

    async def close(self) -> None:
        await self._client.aclose()
