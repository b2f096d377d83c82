"""API tokens: scopes nest (admin ⊇ operator ⊇ client); only sha256 hashes are stored.

A token reads `aivos_<id>_<secret>` and is shown once, at creation. Each token row has a
stable random `id` (what sessions, jobs and runs record as their owner: a revoked name
reused later is another owner) and may carry `bound` attributes set by the site at creation
(`aivos tokens create --bind account_id=ACC-1001`): the trusted values workflows read for
inputs declared `source = "token"`, never from the client's request. `TokenStore.authenticate`
is synchronous and fast: a hit in the in-memory cache (keyed by hash) is trusted for
`recheck_s` (1 s) before the row is read again, so a revocation made by another process
(the CLI) takes effect within about a second; revocations made through this process take
effect at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import msgspec

from aivos.edge.store._codec import canonical_json, now_iso
from aivos.shared.errors import DataError, NotFound
from aivos.shared.ids import new_id
from aivos.shared.sqlite import decode_row

__all__ = [
    "SCOPES",
    "TokenInfo",
    "TokenStore",
    "hash_token",
    "create",
    "revoke",
    "scope_allows",
    "parse_bindings",
]

SCOPES = ("client", "operator", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
_CACHE_MAX = 10_000
_BIND_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MAX_BINDINGS = 16


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    scope: str
    created_at: str
    id: str = ""
    bound: dict[str, str] = {}


def scope_allows(have: str, need: str) -> bool:
    return _RANK.get(have, -1) >= _RANK[need]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_bindings(pairs: Iterable[str]) -> dict[str, str]:
    """`["account_id=ACC-1001", ...]` -> {"account_id": "ACC-1001"}; DataError when malformed."""
    bound: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise DataError("bind", f"expected key=value, got {pair!r}")
        bound[key.strip()] = value.strip()
    _check_bound(bound)
    return bound


def _check_bound(bound: Mapping[str, str]) -> None:
    if len(bound) > _MAX_BINDINGS:
        raise DataError("bind", f"at most {_MAX_BINDINGS} bound attributes")
    for key, value in bound.items():
        if not _BIND_KEY.match(key):
            raise DataError("bind", f"attribute name {key!r} must match {_BIND_KEY.pattern}")
        if not value or len(value) > 256 or not value.isprintable():
            raise DataError("bind", f"attribute {key!r}: a value is 1-256 printable characters")


def create(
    conn: sqlite3.Connection,
    name: str | None,
    scope: str,
    *,
    bound: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Create a token (writer transaction); returns (name, token). A revoked name may be reused.

    `bound`: attributes the site vouches for (e.g. {"account_id": "ACC-1001"})."""
    bound = dict(bound or {})
    _check_bound(bound)
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
        "INSERT INTO tokens(name, scope, hash, created_at, revoked_at, id, bound) "
        "VALUES (?, ?, ?, ?, NULL, ?, ?)",
        (name, scope, hash_token(token), now_iso(), new_id(), canonical_json(bound)),
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
                "SELECT name, scope, created_at, id, bound FROM tokens "
                "WHERE hash = ? AND revoked_at IS NULL",
                (digest,),
            )
            .fetchone()
        )
        with self._lock:
            if row is None:
                self._cache.pop(digest, None)
                return None
            info = decode_row(row, TokenInfo, json=("bound",))
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (info, now)
        return info

    def forget(self, name: str) -> None:
        """Drop cached entries for `name` (after a revocation through this process)."""
        with self._lock:
            for digest in [d for d, (info, _) in self._cache.items() if info.name == name]:
                del self._cache[digest]
