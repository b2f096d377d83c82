"""Inbound webhook signatures: HMAC-SHA256 over ``<timestamp>.<raw body>``.

Headers: ``X-Aivos-Timestamp: <unix seconds>`` and ``X-Aivos-Signature: sha256=<hex>``.
The timestamp must be within the tolerance of the agent's clock (replay window), and a
signature already seen inside that window is refused (replay within the window).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict

__all__ = [
    "sign",
    "SignatureError",
    "ReplayGuard",
    "verify",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
]

SIGNATURE_HEADER = "x-aivos-signature"
TIMESTAMP_HEADER = "x-aivos-timestamp"


class SignatureError(Exception):
    """Why a webhook was refused (`reason` is a short code, safe to audit)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The header value for `body` sent at `timestamp`: ``sha256=<hex>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class ReplayGuard:
    """Remembers signatures seen within the tolerance window (bounded)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries

    def check_and_add(self, signature: str, now: float, tolerance_s: float) -> bool:
        while self._seen and (
            len(self._seen) >= self._max or next(iter(self._seen.values())) < now - 2 * tolerance_s
        ):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        self._seen[signature] = now
        return True


def verify(
    secret: str | None,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    tolerance_s: float,
    guard: ReplayGuard | None = None,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless the request is signed by `secret`, fresh and not replayed."""
    if secret is None:
        raise SignatureError("unknown_source")
    if not signature or not timestamp:
        raise SignatureError("unsigned")
    try:
        ts = int(timestamp)
    except ValueError as exc:
        raise SignatureError("bad_timestamp") from exc
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureError("stale_timestamp")
    if not hmac.compare_digest(sign(secret, ts, body), signature.strip()):
        raise SignatureError("bad_signature")
    if guard is not None and not guard.check_and_add(signature.strip(), current, tolerance_s):
        raise SignatureError("replayed")
