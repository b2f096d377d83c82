"""Time-ordered, unguessable unique ids (ULID-like, 26 chars of Crockford base32).

48 bits of milliseconds, then 80 random bits. Ids sort by creation within a process: an id
made in the same millisecond as the previous one (or when the clock steps back) is the
previous one plus a *random* 64-bit step, never plus one, so knowing one id does not let a
client guess its neighbours (ids name sessions' jobs and runs that other tokens must not
find). Ordering never needs more than that: the audit chain orders by its `seq` column.
"""

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
    step = 1 + int.from_bytes(os.urandom(8), "big")
    with _lock:
        value = fresh if fresh > _last else _last + step
        _last = value
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))
