"""`aivos install cloud`: a cloud node (the secured hub, ingest, console, N workers).

The hub's state (CA, hub or node certificates, service certificates, users file) is made
by the same code `aivos up`, `aivos nats config --secure` and `aivos fleet enroll` use
(`aivos.install.hub`: one hub, N nodes on this host, or one node per machine) in
``/var/lib/aivos/cloud``, owned by the service account: `aivos fleet enroll --data-dir
/var/lib/aivos/cloud` run as that account then reloads the running hub (every node this
machine runs). The services get every node's URL (they fail over on their own) and
JetStream R3 from 3 nodes. A database URL (it holds a password) goes to
``/etc/aivos/cloud.env`` (0640), never into a unit file (0644)."""

from __future__ import annotations

from pathlib import Path

from aivos.cloud.fleet.enroll import service_env
from aivos.install.account import Account
from aivos.install.edge import install_common
from aivos.install.errors import InstallError
from aivos.install.hub import (
    HubLayout,
    adopt_ca,
    client_url,
    hub_configs,
    is_server_state,
    keeping_state,
    node_conf,
    runtime_paths,
)
from aivos.install.layout import CLOUD_DIR, CONFIG_DIR, STATE_DIR, UNIT_DIR, Runtime
from aivos.install.tree import Owner, Tree
from aivos.install.units import CLOUD_UNITS, render
from aivos.up_scale import js_replicas_for

__all__ = ["CLOUD_DIR", "install_cloud"]

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
    layout: HubLayout = HubLayout(),
    cluster_port: int = 6222,
    ca_dir: Path | None = None,
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
    with keeping_state(data_dir) as changed:
        if ca_dir is not None:
            adopt_ca(data_dir, ca_dir)
        confs = hub_configs(
            data_dir,
            layout,
            host=hub_host,
            port=hub_port,
            leaf_port=leaf_port,
            monitor_port=monitor_port,
            cluster_port=cluster_port,
            public_host=public_host,
        )
        envs = {unit: service_env(data_dir, role) for unit, role in _ROLES.items()}
    tree.record("updated" if changed else "unchanged", f"{CLOUD_DIR}/{{pki,nats,keys}}")
    for node in layout.local:
        conf = node_conf(confs[node - 1], data_dir)
        tree.file(f"{CLOUD_DIR}/nats/{layout.conf_name(node)}", conf.encode(), 0o640, svc)
    tree.owned(CLOUD_DIR, 0o750, svc, skip=is_server_state)
    env = "# aivos cloud services' environment (written by `aivos install cloud`)\n"
    if db:
        env += f"AIVOS_CLOUD_DB={db}\n"
    tree.file(f"{CONFIG_DIR}/cloud.env", env.encode(), 0o640, cfg)
    # every node's URL, this machine's first: a service reconnects to a surviving node
    local = [confs[i - 1] for i in layout.local]
    urls = dict.fromkeys(client_url(c) for c in [*local, *confs])
    values = {
        "user": account.name,
        "group": account.group,
        "bin_dir": runtime.bin_dir,
        "nats_server": runtime.nats_server,
        "config_dir": CONFIG_DIR,
        "state_dir": STATE_DIR,
        "cloud_dir": CLOUD_DIR,
        "hub_url": ",".join(urls),
        "hub_units": " ".join(layout.units),
        "js_replicas": str(js_replicas_for(layout.nodes)),
        "console_host": console_host,
        "console_port": str(console_port),
        "workers": str(workers),
        "worker_units": " ".join(f"aivos-worker@{i}.service" for i in range(1, workers + 1)),
    }
    for unit, variables in envs.items():
        lines = [
            f"Environment={k}={runtime_paths(v, data_dir)}" for k, v in sorted(variables.items())
        ]
        values[f"service_env_{unit}"] = "\n".join(lines)
    root = Owner(0, 0) if cfg.uid is not None else Owner()
    for unit in [layout.unit_template, *CLOUD_UNITS]:
        tree.file(f"{UNIT_DIR}/{unit}", render(unit, **values).encode(), 0o644, root)
