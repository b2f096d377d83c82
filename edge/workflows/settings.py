"""Site configuration of the workflow engine: where workflows and secrets live, and the
connector allow-list (the only base URLs an `http` or webhook `emit` step may reach)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from aivos.shared.errors import ConfigError

__all__ = ["ConnectorSettings", "WorkflowSettings", "load_workflow_settings"]


class ConnectorSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One allow-listed site system. `credential` names an entry of the secrets file."""

    base_url: Annotated[str, Meta(pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")]
    credential: str | None = None
    max_timeout_s: Annotated[float, Meta(gt=0, le=300)] = 30.0


class WorkflowSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    directory: str | None = None  # *.toml workflow files (not recursive)
    files: list[str] = msgspec.field(default_factory=list)
    secrets_file: str | None = None
    site_id: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")] = "site-1"
    connectors: dict[str, ConnectorSettings] = msgspec.field(default_factory=dict)
    default_wait_s: Annotated[float, Meta(ge=0, le=120)] = 2.0
    webhook_tolerance_s: Annotated[float, Meta(gt=0, le=3600)] = 300.0
    max_http_connections: Annotated[int, Meta(ge=1, le=10_000)] = 2000
    nats_retry_s: Annotated[float, Meta(gt=0)] = 5.0

    def workflow_paths(self) -> list[Path]:
        paths = [Path(p) for p in self.files]
        if self.directory:
            paths.extend(sorted(Path(self.directory).glob("*.toml")))
        return paths


def load_workflow_settings(config: Path | None, **overrides: Any) -> WorkflowSettings:
    """The `[workflows]` table of an agent config file (other tables are ignored)."""
    raw: dict[str, Any] = {}
    if config is not None:
        try:
            with open(config, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(str(config), str(exc)) from exc
        raw = dict(doc.get("workflows", {}))
        if "site_id" not in raw and isinstance(doc.get("site_id"), str):
            raw["site_id"] = doc["site_id"]
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, WorkflowSettings)
    except msgspec.ValidationError as exc:
        raise ConfigError("workflows", str(exc)) from exc
