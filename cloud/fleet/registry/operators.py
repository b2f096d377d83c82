"""Tables ``operators`` (console logins: password hashes and roles), ``operator_tokens``
(API tokens: sha256 hashes, never the token, with role, expiry and revocation) and
``sessions`` (console sessions with their CSRF token).

Roles, weakest first: ``viewer`` (reads), ``operator`` (also changes the fleet: config,
rollouts), ``admin`` (also reads the cloud audit records). Rows written before roles
existed are ``admin``: they had full access then (`migrate` adds the columns).
"""

from __future__ import annotations

import time

from aivos.cloud.db import Conn
from aivos.shared.errors import ConfigError

__all__ = [
    "SCHEMA",
    "ROLES",
    "DEFAULT_TOKEN_TTL_S",
    "add_session",
    "add_token",
    "drop_session",
    "migrate",
    "operator_hash",
    "put_operator",
    "revoke_tokens",
    "session",
    "token_info",
    "token_name",
]

ROLES = ("viewer", "operator", "admin")
DEFAULT_TOKEN_TTL_S = 90 * 24 * 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at REAL NOT NULL,
    role TEXT NOT NULL DEFAULT 'admin'
);
CREATE TABLE IF NOT EXISTS operator_tokens (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL,
    role TEXT NOT NULL DEFAULT 'admin', expires_at REAL, revoked_at REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


_ADDED_COLUMNS = {
    "operators": ("role TEXT NOT NULL DEFAULT 'admin'",),
    "operator_tokens": (
        "role TEXT NOT NULL DEFAULT 'admin'",
        "expires_at REAL",
        "revoked_at REAL",
    ),
}


def migrate(conn: Conn) -> list[str]:
    """Migration ``operator_roles_expiry``: add the role, expiry and revocation columns to
    tables created before them (idempotent). Returns the columns added."""
    added = []
    for table, columns in _ADDED_COLUMNS.items():
        have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            name = column.split()[0]
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
                added.append(f"{table}.{name}")
    return added


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError("role", f"unknown role {role!r}; one of {', '.join(ROLES)}")
    return role


def put_operator(conn: Conn, username: str, password_hash: str, role: str | None = None) -> None:
    """Add an operator (role `role`, default admin), or set a known operator's password
    hash (and its role, when `role` is given)."""
    conn.execute(
        "INSERT INTO operators(username, password_hash, created_at, role) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash, "
        "role = CASE WHEN CAST(? AS TEXT) IS NULL THEN operators.role ELSE excluded.role END",
        (username, password_hash, time.time(), _check_role(role or "admin"), role),
    )


def operator_hash(conn: Conn, username: str) -> str | None:
    row = conn.execute(
        "SELECT password_hash FROM operators WHERE username = ?", (username,)
    ).fetchone()
    return None if row is None else str(row["password_hash"])


def add_token(
    conn: Conn,
    token_hash: str,
    name: str,
    role: str = "admin",
    expires_at: float | None = None,
) -> None:
    """Store a token hash; `expires_at` None means `DEFAULT_TOKEN_TTL_S` from now."""
    now = time.time()
    conn.execute(
        "INSERT INTO operator_tokens(token_hash, name, created_at, role, expires_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (token_hash, name, now, _check_role(role), expires_at or now + DEFAULT_TOKEN_TTL_S),
    )


def token_info(conn: Conn, token_hash: str) -> tuple[str, str] | None:
    """(name, role) of a token that is neither expired nor revoked."""
    row = conn.execute(
        "SELECT name, role FROM operator_tokens WHERE token_hash = ? AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > ?)",
        (token_hash, time.time()),
    ).fetchone()
    return None if row is None else (str(row["name"]), str(row["role"]))


def token_name(conn: Conn, token_hash: str) -> str | None:
    """The name of a valid (unexpired, unrevoked) token."""
    info = token_info(conn, token_hash)
    return None if info is None else info[0]


def revoke_tokens(conn: Conn, name: str) -> int:
    """Revoke every live token called `name`; returns how many."""
    cur = conn.execute(
        "UPDATE operator_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
        (time.time(), name),
    )
    return int(cur.rowcount)


def add_session(conn: Conn, token_hash: str, username: str, csrf: str, expires_at: float) -> None:
    """Store a new session, dropping expired ones."""
    conn.execute("DELETE FROM sessions WHERE expires_at < ?", (time.time(),))
    conn.execute(
        "INSERT INTO sessions(token_hash, username, csrf, expires_at) VALUES (?, ?, ?, ?)",
        (token_hash, username, csrf, expires_at),
    )


def session(conn: Conn, token_hash: str) -> tuple[str, str, str] | None:
    """(username, csrf, role) of an unexpired session of a known operator (the role is
    read at every request, so a changed role applies at once)."""
    row = conn.execute(
        "SELECT s.username, s.csrf, o.role FROM sessions s "
        "JOIN operators o ON o.username = s.username "
        "WHERE s.token_hash = ? AND s.expires_at > ?",
        (token_hash, time.time()),
    ).fetchone()
    return None if row is None else (row["username"], row["csrf"], row["role"])


def drop_session(conn: Conn, token_hash: str) -> None:
    conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
