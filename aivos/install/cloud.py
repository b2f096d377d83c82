"""`aivos install cloud`: a cloud node (the secured hub, ingest, console, N workers).

The hub's state (CA, hub and service certificates, users file) is made by the same code
`aivos up` and `aivos fleet enroll` use (`secure_hub_config`) in ``/var/lib/aivos/cloud``,
owned by the service account: `aivos fleet enroll --data-dir /var/lib/aivos/cloud` run as
that account then reloads the running hub. A database URL (it holds a password) goes to
``/etc/aivos/cloud.env`` (0640), never into a unit file (0644)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from aivos.cloud.fleet.enroll import secure_hub_config, service_env
from aivos.install.account import Account
from aivos.install.edge import install_common
from aivos.install.errors import InstallError
from aivos.install.layout import CONFIG_DIR, STATE_DIR, UNIT_DIR, Runtime
from aivos.install.tree import Owner, Tree
from aivos.install.units import CLOUD_UNITS, render
from aivos.shared.natsconf.render import render_hub

__all__ = ["CLOUD_DIR", "install_cloud"]

CLOUD_DIR = f"{STATE_DIR}/cloud"
_ROLES = {"ingest": "ingest", "fleet": "fleet", "worker": "worker"}  # unit env -> cert role


def install_cloud(
    tree: Tree,
    account: Account,
    runtime: Runtime,
    *,
    hub_host: str = "0.0.0.0",
    public_host: str | None = None,
    hub_port: int = 4222,
    leaf_port: int = 7422,
    monitor_port: int = 8222,
    db: str | None = None,
    workers: int = 1,
    console_host: str = "127.0.0.1",
    console_port: int = 8600,
    journal_max_use: str = "1G",
) -> None:
    if db is not None and ("\n" in db or not db.startswith(("postgresql://", "postgres://"))):
        raise InstallError("--db must be one postgresql:// URL")
    if workers < 0:
        raise InstallError("--workers must be 0 or more")
    install_common(tree, account, journal_max_use)
    svc, cfg = account.service, account.config
    tree.directory(CLOUD_DIR, 0o750, svc)
    data_dir = tree.path(CLOUD_DIR)
    hosts = {hub_host, "127.0.0.1", "localhost", *([public_host] if public_host else [])}
    with _keeping_unchanged_mtimes(data_dir) as changed, _keeping_hub_cert(data_dir, hosts):
        conf = secure_hub_config(
            data_dir,
            host=hub_host,
            port=hub_port,
            leaf_port=leaf_port,
            monitor_port=monitor_port,
            public_host=public_host,
        )
        envs = {unit: service_env(data_dir, role) for unit, role in _ROLES.items()}
    tree.record("updated" if changed else "unchanged", f"{CLOUD_DIR}/{{pki,nats,keys}}")
    hub_conf = _runtime_paths(render_hub(conf), data_dir)
    if monitor_port:
        # the monitor endpoint has no authentication: loopback only, even when the hub
        # listens on every address (revoke/rotate reach it from this node)
        hub_conf = hub_conf.replace(
            f'http: "{hub_host}:{monitor_port}"', f'http: "127.0.0.1:{monitor_port}"'
        )
    tree.file(f"{CLOUD_DIR}/nats/hub.conf", hub_conf.encode(), 0o640, svc)
    tree.owned(CLOUD_DIR, 0o750, svc)
    env = "# aivos cloud services' environment (written by `aivos install cloud`)\n"
    if db:
        env += f"AIVOS_CLOUD_DB={db}\n"
    tree.file(f"{CONFIG_DIR}/cloud.env", env.encode(), 0o640, cfg)
    local = "127.0.0.1" if hub_host in ("0.0.0.0", "::", "127.0.0.1") else hub_host
    values = {
        "user": account.name,
        "group": account.group,
        "bin_dir": runtime.bin_dir,
        "nats_server": runtime.nats_server,
        "config_dir": CONFIG_DIR,
        "state_dir": STATE_DIR,
        "cloud_dir": CLOUD_DIR,
        "hub_url": f"tls://{local}:{hub_port}",
        "console_host": console_host,
        "console_port": str(console_port),
        "workers": str(workers),
        "worker_units": " ".join(f"aivos-worker@{i}.service" for i in range(1, workers + 1)),
    }
    for unit, variables in envs.items():
        lines = [
            f"Environment={k}={_runtime_paths(v, data_dir)}" for k, v in sorted(variables.items())
        ]
        values[f"service_env_{unit}"] = "\n".join(lines)
    root = Owner(0, 0) if cfg.uid is not None else Owner()
    for unit in CLOUD_UNITS:
        tree.file(f"{UNIT_DIR}/{unit}", render(unit, **values).encode(), 0o644, root)


@contextlib.contextmanager
def _keeping_hub_cert(data_dir: Path, hosts: set[str]) -> Iterator[None]:
    """`secure_hub_config` issues a new hub certificate on every call; keep the old one
    when it already names every host asked for (a rerun then changes nothing)."""
    cert, key = data_dir / "pki" / "hub.crt", data_dir / "pki" / "hub.key"
    old = (cert.read_bytes(), key.read_bytes()) if cert.is_file() and key.is_file() else None
    yield
    if old is not None and hosts <= _names(old[0]):
        cert.write_bytes(old[0])
        key.write_bytes(old[1])


def _names(pem: bytes) -> set[str]:
    from cryptography import x509

    try:
        ext = x509.load_pem_x509_certificate(pem).extensions
        san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def _runtime_paths(text: str, data_dir: Path) -> str:
    """`text` with the data dir's path under the prefix replaced by its path on the box."""
    return text.replace(str(data_dir), CLOUD_DIR)


class _keeping_unchanged_mtimes:
    """`secure_hub_config` rewrites its state files on every call; put back the times of
    those whose bytes did not change, so a second install leaves the tree as it was.
    ``bool(changed)`` after the block: whether any file there is new or different."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.changed: list[str] = []

    def _snapshot(self) -> dict[Path, tuple[str, int, int, int, int]]:
        """Every file's sha256 and every directory's listing, with their times."""
        out = {}
        for dirpath, dirs, files in os.walk(self.root):
            directory = Path(dirpath)
            st = directory.stat()
            listing = "\0".join(sorted(dirs + files))
            out[directory] = (
                f"dir:{listing}",
                st.st_atime_ns,
                st.st_mtime_ns,
                st.st_uid,
                st.st_gid,
            )
            for name in files:
                path = directory / name
                st = path.stat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[path] = (digest, st.st_atime_ns, st.st_mtime_ns, st.st_uid, st.st_gid)
        return out

    def __enter__(self) -> list[str]:
        self.before = self._snapshot()
        return self.changed

    def __exit__(self, *exc: object) -> None:
        for path, (digest, *_) in self._snapshot().items():
            old = self.before.get(path)
            if old is not None and old[0] == digest:
                os.chown(path, old[3], old[4])  # a rewritten file belongs to the installer
                os.utime(path, ns=(old[1], old[2]))
            else:
                self.changed.append(str(path))
