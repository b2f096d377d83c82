"""API tokens: scopes nest (admin ⊇ operator ⊇ client); only sha256 hashes are stored.

A token reads `aivos_<id>_<secret>` and is shown once, at creation. `TokenStore.authenticate`
is synchronous and fast: a hit in the in-memory cache (keyed by hash) is trusted for
`recheck_s` (1 s) before the row is read again, so a revocation made by another process
(the CLI) takes effect within about a second; revocations made through this process take
effect at once.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable

import msgspec

from aivos.edge.store._codec import now_iso
from aivos.shared.errors import DataError, NotFound
from aivos.shared.sqlite import decode_row

__all__ = ["SCOPES", "TokenInfo", "TokenStore", "hash_token", "create", "revoke", "scope_allows"]

SCOPES = ("client", "operator", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
_CACHE_MAX = 10_000


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    scope: str
    created_at: str


def scope_allows(have: str, need: str) -> bool:
    return _RANK.get(have, -1) >= _RANK[need]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn: sqlite3.Connection, name: str | None, scope: str) -> tuple[str, str]:
    """Create a token (writer transaction); returns (name, token). A revoked name may be reused."""
    if scope not in SCOPES:
        raise DataError("scope", f"unknown scope {scope!r}; expected one of {SCOPES}")
    tid = secrets.token_hex(4)
    name = name or f"{scope}-{tid}"
    if not name or len(name) > 64 or not name.isprintable():
        raise DataError("name", "a token name is 1-64 printable characters")
    row = conn.execute("SELECT revoked_at FROM tokens WHERE name = ?", (name,)).fetchone()
    if row is not None:
        if row["revoked_at"] is None:
            raise DataError("name", f"a token named {name!r} already exists")
        conn.execute("DELETE FROM tokens WHERE name = ?", (name,))
    token = f"aivos_{tid}_{secrets.token_urlsafe(32)}"
    conn.execute(
        "INSERT INTO tokens(name, scope, hash, created_at, revoked_at) VALUES (?, ?, ?, ?, NULL)",
        (name, scope, hash_token(token), now_iso()),
    )
    return name, token


def revoke(conn: sqlite3.Connection, name: str) -> None:
    cur = conn.execute(
        "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now_iso(), name)
    )
    if cur.rowcount == 0:
        raise NotFound(f"no active token named {name!r}")


class TokenStore:
    """Authentication with a small cache; `connect` returns a read connection for the thread."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], *, recheck_s: float = 1.0
    ) -> None:
        self._connect = connect
        self._recheck_s = recheck_s
        self._cache: dict[str, tuple[TokenInfo, float]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> TokenInfo | None:
        """The token's holder, or None when the token is unknown or revoked."""
        if not token.startswith("aivos_") or len(token) > 200:
            return None
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[1] < self._recheck_s:
            return hit[0]
        row = (
            self._connect()
            .execute(
                "SELECT name, scope, created_at FROM tokens WHERE hash = ? AND revoked_at IS NULL",
                (digest,),
            )
            .fetchone()
        )
        with self._lock:
            if row is None:
                self._cache.pop(digest, None)
                return None
            info = decode_row(row, TokenInfo)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (info, now)
        return info

    def forget(self, name: str) -> None:
        """Drop cached entries for `name` (after a revocation through this process)."""
        with self._lock:
            for digest in [d for d, (info, _) in self._cache.items() if info.name == name]:
                del self._cache[digest]
