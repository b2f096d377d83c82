"""The local secrets file: connector credentials and webhook signing secrets.

Workflow files name a connector; the connector names a credential; only this file holds
the value. The file should be readable by the agent's user only (a warning is logged
otherwise). Values are never logged, audited or shown in run timelines.

    [credentials.corebank]
    header = "Authorization"
    value = "Bearer s3cr3t"

    [webhooks.corebank]
    secret = "hmac-signing-secret"
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from pathlib import Path

import msgspec

from aivos.shared.errors import ConfigError

__all__ = ["Credential", "WebhookSecret", "Secrets"]

log = logging.getLogger(__name__)


class Credential(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    value: str
    header: str = "Authorization"

    def __repr__(self) -> str:
        return f"Credential(header={self.header!r}, value=<redacted>)"


class WebhookSecret(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    secret: str

    def __repr__(self) -> str:
        return "WebhookSecret(<redacted>)"


class Secrets(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    credentials: dict[str, Credential] = msgspec.field(default_factory=dict)
    webhooks: dict[str, WebhookSecret] = msgspec.field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None) -> Secrets:
        if path is None:
            return cls()
        path = Path(path)
        try:
            mode = path.stat().st_mode
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(str(path), f"cannot read secrets file: {exc}") from exc
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("secrets file %s is readable by other users; chmod 600 it", path)
        try:
            return msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(str(path), str(exc)) from exc
