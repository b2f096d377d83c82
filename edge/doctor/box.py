"""What the doctor examines (`Box`: a data dir, its settings, its site kit) and what it
reports (`Finding`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from aivos.edge.fleet.layout import active_bundle_dir
from aivos.edge.settings import EdgeSettings, load_edge_settings

__all__ = ["Box", "Finding", "Status", "ok", "warn", "fail"]

Status = Literal["ok", "warn", "fail"]


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    # disk, store, audit, outbox, retention, bundle, provider, router, nats, clock,
    # certificates
    check: str
    status: Status
    message: str
    detail: dict[str, Any] = {}


def ok(check: str, message: str, **detail: Any) -> Finding:
    return Finding(check=check, status="ok", message=message, detail=detail)


def warn(check: str, message: str, **detail: Any) -> Finding:
    return Finding(check=check, status="warn", message=message, detail=detail)


def fail(check: str, message: str, **detail: Any) -> Finding:
    return Finding(check=check, status="fail", message=message, detail=detail)


@dataclass(frozen=True)
class Box:
    data_dir: Path
    settings: EdgeSettings
    kit: Path | None  # the site kit `aivos fleet enroll` wrote (certificates, leaf.conf)

    @classmethod
    def load(cls, data_dir: Path, config: Path | None = None, kit: Path | None = None) -> Box:
        """Settings from `config`, else the data dir's ``config.toml`` (what `aivos up`
        writes), else the kit's ``edge.toml``; the data dir given here always wins."""
        data_dir = Path(data_dir)
        kit = kit or _find_kit(data_dir)
        if config is None:
            for candidate in (data_dir / "config.toml", *([kit / "edge.toml"] if kit else [])):
                if candidate.is_file():
                    config = candidate
                    break
        settings = load_edge_settings(config, data_dir=str(data_dir))
        return cls(data_dir=data_dir, settings=settings, kit=kit)

    @property
    def bundle(self) -> Path:
        """The bundle the agent loads: the fleet's active one, else the configured one."""
        return active_bundle_dir(self.data_dir) or self.settings.bundle_path

    @property
    def fleet_installed(self) -> bool:
        return active_bundle_dir(self.data_dir) is not None


def _find_kit(data_dir: Path) -> Path | None:
    """`aivos up` keeps the kit beside the edge dir (``D/site-kit``, edge in ``D/edge``);
    an enrolled box runs with its data dir inside the kit (``KIT/edge-data``)."""
    for candidate in (data_dir / "site-kit", data_dir.parent / "site-kit", data_dir.parent):
        if (candidate / "leaf.conf").is_file():
            return candidate
    return None
