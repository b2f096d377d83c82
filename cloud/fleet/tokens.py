"""Operator credentials: passwords (scrypt) and API bearer tokens (stored as sha256).

Tokens are 32 random bytes (``aop_`` + urlsafe base64): high entropy, so a plain sha256 is
the right hash for them; passwords are low entropy and get scrypt with a per-user salt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from aivos.cloud.fleet.registry import Registry, SqliteRegistry
from aivos.shared.errors import ConfigError

__all__ = [
    "TOKEN_PREFIX",
    "hash_password",
    "verify_password",
    "hash_token",
    "new_token",
    "add_operator",
    "create_operator_token",
    "check_token",
]

TOKEN_PREFIX = "aop_"
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    actual = hashlib.scrypt(
        password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(actual.hex(), digest)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def add_operator(registry: Registry, username: str, password: str) -> None:
    if not username or len(username) > 64 or not username.isprintable():
        raise ConfigError("username", "use 1-64 printable characters")
    if len(password) < 8:
        raise ConfigError("password", "use at least 8 characters")
    registry.put_operator(username, hash_password(password))
    registry.record_action("cli", "operator.add", username)


def create_operator_token(data_dir: str | Path, name: str = "operator") -> str:
    """Create an operator API token in the registry of `data_dir`; returns the token."""
    registry = SqliteRegistry.open(data_dir)
    try:
        token = new_token()
        registry.add_token(hash_token(token), name)
        registry.record_action("cli", "operator_token.create", name)
        return token
    finally:
        registry.close()


def check_token(registry: Registry, token: str) -> str | None:
    """The token's name if it is valid, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return registry.token_name(hash_token(token))
