"""Time-ordered unique ids (ULID-like, 26 chars of Crockford base32).

Monotonic within a process: ids made in the same millisecond increment the previous
one's random part instead of drawing a new one, so sorting ids sorts by creation."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last = 0


def new_id() -> str:
    global _last
    fresh = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    with _lock:
        value = fresh if fresh > _last else _last + 1
        _last = value
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))
