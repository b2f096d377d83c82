"""Inbound webhook signatures, scheme `v1`: HMAC-SHA256 with the source's secret over

    v1:<timestamp>:<delivery id>:<event>:<raw body>

sent as four headers, all required:

    X-Aivos-Delivery: <id>        unique per delivery; [A-Za-z0-9._-]{1,128}
    X-Aivos-Event: <type>         the event type; [A-Za-z0-9._-]{1,128}
    X-Aivos-Timestamp: <unix s>   within the tolerance of the agent's clock
    X-Aivos-Signature: v1=<hex>   64 lowercase hex digits

The event name and delivery id are signed, so a body signed for one event cannot be re-sent
as another, and neither field may contain `:` (the fields cannot be shifted). `verify()`
checks everything a pure function can; the replay check (a delivery id is accepted once
until its timestamp leaves the window) needs the store and is done by the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

import msgspec

from aivos.shared.ids import new_id

__all__ = [
    "SCHEME",
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "SignedDelivery",
    "sign",
    "signed_headers",
    "verify",
]

SCHEME = "v1"
DELIVERY_HEADER = "x-aivos-delivery"
EVENT_HEADER = "x-aivos-event"
TIMESTAMP_HEADER = "x-aivos-timestamp"
SIGNATURE_HEADER = "x-aivos-signature"

_TOKEN_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE = re.compile(r"v1=[0-9a-f]{64}")


class SignatureError(Exception):
    """Why a webhook was refused. `reason` is a short code for metrics and logs only: the
    caller always gets the same answer, whatever the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SignedDelivery(msgspec.Struct, frozen=True):
    """What a verified request proved: these fields were signed with the source's secret."""

    delivery_id: str
    event: str
    timestamp: int


def sign(secret: str, *, timestamp: int | str, delivery_id: str, event: str, body: bytes) -> str:
    """The `X-Aivos-Signature` value: ``v1=<hex>``."""
    prefix = f"{SCHEME}:{timestamp}:{delivery_id}:{event}:".encode()
    return f"{SCHEME}=" + hmac.new(secret.encode(), prefix + body, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str,
    event: str,
    body: bytes,
    *,
    delivery_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The four headers of one delivery of `body` as `event` (a fresh delivery id and the
    current time unless given)."""
    ts = int(time.time()) if timestamp is None else timestamp
    delivery = delivery_id or new_id()
    return {
        "X-Aivos-Delivery": delivery,
        "X-Aivos-Event": event,
        "X-Aivos-Timestamp": str(ts),
        "X-Aivos-Signature": sign(
            secret, timestamp=ts, delivery_id=delivery, event=event, body=body
        ),
    }


def _field(headers: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str:
    value = headers.get(name)
    if value is None:
        raise SignatureError("unsigned")
    value = value.strip()
    # fullmatch on an ASCII pattern also refuses non-ASCII values (no exception later)
    if not pattern.fullmatch(value):
        raise SignatureError("malformed")
    return value


def verify(
    secret: str | None,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float,
    now: float | None = None,
) -> SignedDelivery:
    """The signed fields of the request, or SignatureError: unknown source (no secret),
    a header missing or malformed, a timestamp outside the window, a wrong signature."""
    if secret is None:
        raise SignatureError("unknown_source")
    headers = {k.lower(): v for k, v in headers.items()}
    signature = _field(headers, SIGNATURE_HEADER, _SIGNATURE_RE)
    delivery = _field(headers, DELIVERY_HEADER, _TOKEN_RE)
    event = _field(headers, EVENT_HEADER, _TOKEN_RE)
    ts = int(_field(headers, TIMESTAMP_HEADER, _TIMESTAMP_RE))
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureError("stale_timestamp")
    expected = sign(secret, timestamp=ts, delivery_id=delivery, event=event, body=body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureError("bad_signature")
    return SignedDelivery(delivery_id=delivery, event=event, timestamp=ts)
