"""Job completion callbacks: only to loopback or allow-listed hosts."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from aivos.shared.errors import CallbackHostNotAllowed, InvalidCallbackUrl

__all__ = ["validate_callback_url", "CallbackSender"]

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_callback_url(url: str, allow_hosts: list[str]) -> None:
    """Raises InvalidCallbackUrl or CallbackHostNotAllowed."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidCallbackUrl(url)
    if not (_is_loopback(host) or host in {h.lower() for h in allow_hosts}):
        raise CallbackHostNotAllowed(host)


class CallbackSender:
    def __init__(self, timeout_s: float) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self.sent = 0
        self.failed = 0

    async def send(self, url: str, body: Any, attempts: int = 3) -> bool:
        payload = msgspec.json.encode(body)
        for attempt in range(attempts):
            try:
                resp = await self._client.post(
                    url, content=payload, headers={"content-type": "application/json"}
                )
                if resp.status_code < 500:
                    self.sent += 1
                    return resp.is_success
            except httpx.HTTPError:
                pass
            log.info("callback attempt %d failed", attempt + 1)
        self.failed += 1
        return False

    async def close(self) -> None:
        await self._client.aclose()
