"""Tables ``operators`` (console logins: password hashes), ``operator_tokens`` (API tokens:
sha256 hashes, never the token) and ``sessions`` (console sessions with their CSRF token)."""

from __future__ import annotations

import sqlite3
import time

__all__ = [
    "SCHEMA",
    "add_session",
    "add_token",
    "drop_session",
    "operator_hash",
    "put_operator",
    "session",
    "token_name",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS operator_tokens (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


def put_operator(conn: sqlite3.Connection, username: str, password_hash: str) -> None:
    """Add an operator, or set a known operator's password hash."""
    conn.execute(
        "INSERT INTO operators(username, password_hash, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash",
        (username, password_hash, time.time()),
    )


def operator_hash(conn: sqlite3.Connection, username: str) -> str | None:
    row = conn.execute(
        "SELECT password_hash FROM operators WHERE username = ?", (username,)
    ).fetchone()
    return None if row is None else str(row["password_hash"])


def add_token(conn: sqlite3.Connection, token_hash: str, name: str) -> None:
    conn.execute(
        "INSERT INTO operator_tokens(token_hash, name, created_at) VALUES (?, ?, ?)",
        (token_hash, name, time.time()),
    )


def token_name(conn: sqlite3.Connection, token_hash: str) -> str | None:
    row = conn.execute(
        "SELECT name FROM operator_tokens WHERE token_hash = ?", (token_hash,)
    ).fetchone()
    return None if row is None else str(row["name"])


def add_session(
    conn: sqlite3.Connection, token_hash: str, username: str, csrf: str, expires_at: float
) -> None:
    """Store a new session, dropping expired ones."""
    conn.execute("DELETE FROM sessions WHERE expires_at < ?", (time.time(),))
    conn.execute(
        "INSERT INTO sessions(token_hash, username, csrf, expires_at) VALUES (?, ?, ?, ?)",
        (token_hash, username, csrf, expires_at),
    )


def session(conn: sqlite3.Connection, token_hash: str) -> tuple[str, str] | None:
    """(username, csrf) of an unexpired session."""
    row = conn.execute(
        "SELECT username, csrf FROM sessions WHERE token_hash = ? AND expires_at > ?",
        (token_hash, time.time()),
    ).fetchone()
    return None if row is None else (row["username"], row["csrf"])


def drop_session(conn: sqlite3.Connection, token_hash: str) -> None:
    conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
