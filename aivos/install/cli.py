"""`aivos install edge | cloud`: install a branch box or a cloud node as systemd services."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from aivos.install.account import ensure_account
from aivos.install.errors import InstallError
from aivos.install.layout import CONFIG_DIR, STATE_DIR, Runtime
from aivos.install.tree import Change, Tree

__all__ = ["edge_cmd", "cloud_cmd"]


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--prefix",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("/"),
            show_default=True,
            help="Install under this root (units in P/etc/systemd/system, config in "
            "P/etc/aivos, data in P/var/lib/aivos). The system user is created only for /.",
        ),
        click.option("--user", default="aivos", show_default=True, help="Service account."),
        click.option(
            "--bin-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where the units find `aivos` and `nats-server` [default: this aivos's].",
        ),
        click.option(
            "--journal-max-use",
            default=None,
            help="Disk the services' journal may use [default: edge 512M, cloud 1G].",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _tree(prefix: Path) -> Tree:
    def report(change: Change) -> None:
        click.echo(f"  {change.action:<9} {change.path}")

    return Tree(prefix.absolute(), report)


def _summary(tree: Tree, prefix: Path, next_steps: list[str]) -> None:
    counts = tree.counts()
    click.echo(", ".join(f"{n} {action}" for action, n in counts.items()))
    if counts["created"] + counts["updated"] + counts["removed"] == 0:
        click.echo("nothing to do: the installation is up to date")
    if prefix.absolute() == Path("/"):
        click.echo("next: systemctl daemon-reload && " + " && ".join(next_steps))
    else:
        click.echo(f"installed under {prefix}; on the target: " + " && ".join(next_steps))


@click.command("edge")
@click.option(
    "--kit",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The site kit written by `aivos fleet enroll` [default: the one in --from-bundle].",
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="An intent bundle to serve (copied to /var/lib/aivos/bundles/default).",
)
@click.option(
    "--from-bundle",
    "offline",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An `aivos offline-bundle` archive: installs its runtime into --venv with no "
    "network, and its kit and intent bundle.",
)
@click.option(
    "--venv",
    default="/opt/aivos/venv",
    show_default=True,
    help="With --from-bundle: the virtualenv to install into (under --prefix).",
)
@_common
def edge_cmd(
    kit: Path | None,
    bundle: Path | None,
    offline: Path | None,
    venv: str,
    prefix: Path,
    user: str,
    bin_dir: Path | None,
    journal_max_use: str | None,
) -> None:
    """Install a branch box: the leaf node and the edge agent as systemd units, the kit's
    config and credentials, the data dir. Running it again changes nothing."""
    tree = _tree(prefix)
    with tempfile.TemporaryDirectory(prefix="aivos-offline-") as tmp:
        if offline is not None:
            from aivos.install.from_bundle import install_runtime, unpack

            staging = Path(tmp)
            click.echo(f"checking {offline}")
            unpack(offline, staging)
            bin_dir = install_runtime(staging, tree.path(venv), click.echo)
            kit = kit or (staging / "kit" if (staging / "kit").is_dir() else None)
            bundle = bundle or (staging / "bundle" if (staging / "bundle").is_dir() else None)
        if kit is None:
            raise click.UsageError("give --kit (or a --from-bundle archive that holds one)")
        from aivos.install.edge import install_edge

        runtime = Runtime.find(bin_dir)
        from aivos.install.kit import load_kit

        load_kit(kit)  # a bad kit fails here, before the account or any file is made
        account = ensure_account(user, STATE_DIR, prefix)
        click.echo(account.message)
        site = install_edge(
            tree, account, kit, runtime, bundle=bundle, journal_max_use=journal_max_use or "512M"
        )
    click.echo(f"branch box for site {site}")
    _summary(tree, prefix, ["systemctl enable --now aivos-edge.service", *_restarts(tree)])


# which unit reads which installed files only when it starts: a running nats-server keeps
# the key it read (a retired one, after a rotation); the agent reads edge.toml once
_READ_AT_START = (
    ("aivos-leaf.service", (f"{CONFIG_DIR}/leaf.conf", f"{CONFIG_DIR}/credentials/")),
    ("aivos-edge.service", (f"{CONFIG_DIR}/edge.toml",)),
)


def _restarts(tree: Tree) -> list[str]:
    """A restart of each unit whose start-time files an earlier install had and this one
    changed or removed (a first install creates them: `enable --now` starts the units)."""
    return [
        f"systemctl restart {unit}"
        for unit, files in _READ_AT_START
        if any(
            change.action in ("updated", "removed") and change.path.startswith(files)
            for change in tree.changes
        )
    ]


@click.command("cloud")
@click.option("--hub-host", default="0.0.0.0", show_default=True, help="Hub listen address.")
@click.option(
    "--public-host",
    default=None,
    help="The hub's name as sites reach it (in its certificate and in new kits).",
)
@click.option("--hub-port", default=4222, show_default=True, help="Hub client port.")
@click.option("--leaf-port", default=7422, show_default=True, help="Hub leaf-node port.")
@click.option(
    "--monitor-port",
    default=8222,
    show_default=True,
    help="Hub monitor port, on 127.0.0.1 only (revoke and rotate use it).",
)
@click.option(
    "--hub-nodes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 9),
    help="Hub nodes on this host; N > 1: a secured routed cluster (aivos-hub@1..N, ports "
    "counted up from the given ones, JetStream R3 from 3 nodes).",
)
@click.option(
    "--cluster-port",
    default=6222,
    show_default=True,
    help="The route port of node 1 (node i on this host: +i-1; with --node-hosts: every node's).",
)
@click.option(
    "--node-hosts",
    default=None,
    help="One hub node per machine: every node's address, comma-separated, in the same "
    "order on every machine (node i at the i-th; same ports on each).",
)
@click.option(
    "--node",
    "this_node",
    default=None,
    type=click.IntRange(min=1),
    help="With --node-hosts: the node this machine runs (1-based).",
)
@click.option(
    "--ca",
    "ca_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The cluster's CA: a directory with ca.crt and ca.key (the first node's "
    "/var/lib/aivos/cloud/pki), for every other machine of the cluster.",
)
@click.option(
    "--db",
    default=None,
    help="A postgresql:// URL for the cloud stores [default: SQLite in the data dir]; "
    "kept in /etc/aivos/cloud.env (0640), not in the units.",
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=0), help="Workers."
)
@click.option("--console-host", default="127.0.0.1", show_default=True)
@click.option("--console-port", default=8600, show_default=True)
@_common
def cloud_cmd(
    hub_host: str,
    public_host: str | None,
    hub_port: int,
    leaf_port: int,
    monitor_port: int,
    hub_nodes: int,
    cluster_port: int,
    node_hosts: str | None,
    this_node: int | None,
    ca_dir: Path | None,
    db: str | None,
    workers: int,
    console_host: str,
    console_port: int,
    prefix: Path,
    user: str,
    bin_dir: Path | None,
    journal_max_use: str | None,
) -> None:
    """Install a cloud node: the secured hub (or --hub-nodes N routed nodes), ingest,
    console and generation workers as systemd units under aivos-cloud.target. Running it
    again changes nothing."""
    try:
        from aivos.install.cloud import install_cloud
    except ModuleNotFoundError as exc:  # the edge-only install has no cloud tier
        raise InstallError(
            f"the cloud tier is not installed ({exc.name}): pip install 'aivos[cloud]'"
        ) from exc
    from aivos.install.hub import HubLayout

    hosts = tuple(h.strip() for h in node_hosts.split(",")) if node_hosts else ()
    layout = HubLayout.build(hub_nodes, hosts, this_node)  # refused before anything is made
    runtime = Runtime.find(bin_dir)
    account = ensure_account(user, STATE_DIR, prefix)
    click.echo(account.message)
    tree = _tree(prefix)
    install_cloud(
        tree,
        account,
        runtime,
        hub_host=hub_host,
        public_host=public_host,
        hub_port=hub_port,
        leaf_port=leaf_port,
        monitor_port=monitor_port,
        layout=layout,
        cluster_port=cluster_port,
        ca_dir=ca_dir,
        db=db,
        workers=workers,
        console_host=console_host,
        console_port=console_port,
        journal_max_use=journal_max_use or "1G",
    )
    _summary(tree, prefix, ["systemctl enable --now aivos-cloud.target"])
