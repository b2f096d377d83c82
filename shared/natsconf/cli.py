"""`aivos nats config`: write the hub and site-leaf nats-server configurations.

With ``--cluster N`` (N > 1) the hub is N nodes, ``hub-1.conf`` ... ``hub-N.conf`` (ports
counted up from the given ones, routes on ``--hub-cluster-port`` and up), and every leaf
lists every node's leaf URL.

With ``--secure DATA_DIR`` the hub (or every node) is secured with the CA in
``DATA_DIR/pki`` (created when missing): TLS and certificate-mapped users on the client
and leaf listeners, and for a cluster mutual TLS with the route identity on the routes
(a certificate per node in ``DATA_DIR/pki/nodes``). The users come from
``DATA_DIR/nats/users.conf`` (the file `aivos fleet enroll/revoke` rewrites; written with
the service roles when missing). Sites of a secured hub are enrolled (`aivos fleet
enroll`), so ``--site`` is refused with ``--secure``. Without it the configs are open, as
before (a laptop, tests)."""

from __future__ import annotations

import os
from pathlib import Path

import click
import msgspec
from rich.console import Console

from aivos.shared.atomicfile import write_atomic
from aivos.shared.cli_options import host_option, site_option
from aivos.shared.natsconf.permissions import SYSTEM_USER
from aivos.shared.natsconf.pki import init_pki
from aivos.shared.natsconf.render import (
    HubConfig,
    LeafConfig,
    hub_cluster,
    render_hub,
    render_leaf,
)
from aivos.shared.natsconf.secure import secure_nodes, write_users_if_missing
from aivos.shared.subjects import validate_site

__all__ = ["nats_config_cmd", "write_configs"]


def write_configs(
    out: Path, hub: HubConfig | list[HubConfig], leaves: list[LeafConfig]
) -> list[Path]:
    """Write ``hub.conf`` (or ``hub-<i>.conf`` per node of a cluster) and one
    ``leaf-<site>.conf`` per leaf into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    hubs = hub if isinstance(hub, list) else [hub]
    names = ["hub.conf"] if len(hubs) == 1 else [f"hub-{i}.conf" for i in range(1, len(hubs) + 1)]
    paths = [out / name for name in names]
    # replaced whole: `aivos nats rotate-cert` (and a reloading nats-server) may read a
    # node's config while it is rewritten; no secret in them, so readable by all
    for path, node in zip(paths, hubs, strict=True):
        write_atomic(path, render_hub(node).encode(), mode=0o644)
    for leaf in leaves:
        path = out / f"leaf-{leaf.site}.conf"
        write_atomic(path, render_leaf(leaf).encode(), mode=0o644)
        paths.append(path)
    return paths


@click.command("config")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write hub.conf and leaf-<site>.conf into.",
)
@site_option("Site id of a leaf config (repeatable).", multiple=True)
@host_option("Hub listen address.")
@click.option("--hub-port", default=4222, show_default=True, help="Hub client port.")
@click.option("--hub-leaf-port", default=7422, show_default=True, help="Hub leaf-node port.")
@click.option(
    "--hub-monitor-port", default=8222, show_default=True, help="Hub HTTP monitor port (0 = off)."
)
@click.option("--hub-store-dir", default=None, help="Hub JetStream dir [default: OUT/hub-js].")
@click.option(
    "--cluster",
    "cluster",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Hub nodes; N > 1 renders a routed cluster (JetStream replicated; R3 from 3 nodes).",
)
@click.option(
    "--hub-cluster-port",
    default=6222,
    show_default=True,
    help="Route port of the first hub node (node i: +i-1).",
)
@click.option(
    "--secure",
    "secure_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Secure the hub with the CA in SECURE/pki (TLS, certificate users, TLS routes).",
)
@click.option(
    "--public-host",
    "public_hosts",
    multiple=True,
    help="With --secure: another name or IP the nodes are reached at (repeatable).",
)
@click.option(
    "--hub-url",
    default=None,
    help="Leaf-node URL leaves dial [default: nats-leaf://HOST:HUB_LEAF_PORT].",
)
@click.option("--leaf-host", default="127.0.0.1", show_default=True, help="Leaf listen address.")
@click.option(
    "--leaf-port", default=4223, show_default=True, help="Leaf client port (agent connects here)."
)
@click.option(
    "--leaf-monitor-port", default=0, show_default=True, help="Leaf HTTP monitor port (0 = off)."
)
@click.option(
    "--leaf-jetstream/--no-leaf-jetstream",
    default=False,
    show_default=True,
    help="Give each leaf a local JetStream (domain = site).",
)
@click.option(
    "--leaf-store-dir", default=None, help="Leaf JetStream dir [default: OUT/leaf-<site>-js]."
)
def nats_config_cmd(
    out: Path,
    sites: tuple[str, ...],
    host: str,
    hub_port: int,
    hub_leaf_port: int,
    hub_monitor_port: int,
    hub_store_dir: str | None,
    cluster: int,
    hub_cluster_port: int,
    secure_dir: Path | None,
    public_hosts: tuple[str, ...],
    hub_url: str | None,
    leaf_host: str,
    leaf_port: int,
    leaf_monitor_port: int,
    leaf_jetstream: bool,
    leaf_store_dir: str | None,
) -> None:
    """Write nats-server configs: a JetStream hub (or --cluster N nodes) and one leaf node
    per --site."""
    out = out.resolve()
    hub = HubConfig(
        store_dir=hub_store_dir or str(out / "hub-js"),
        host=host,
        port=hub_port,
        leaf_port=hub_leaf_port,
        monitor_port=hub_monitor_port,
    )
    hubs = hub_cluster(
        hub, cluster, store_root=hub_store_dir or str(out), cluster_port=hub_cluster_port
    )
    if secure_dir is not None:
        if sites:
            raise click.UsageError(
                "a secured hub's sites are enrolled: aivos fleet enroll SITE "
                f"--data-dir {secure_dir} --out DIR (its kit's leaf.conf lists every node)"
            )
        hubs = _secure(secure_dir.resolve(), out, hubs, public_hosts)
    hub_urls = (hub_url,) if hub_url else tuple(node.leaf_url for node in hubs)
    leaves = [
        LeafConfig(
            site=validate_site(site),
            hub_leaf_url=hub_urls[0],
            hub_leaf_urls=hub_urls[1:],
            host=leaf_host,
            port=leaf_port + i,
            monitor_port=leaf_monitor_port + i if leaf_monitor_port else 0,
            store_dir=(leaf_store_dir or str(out / f"leaf-{site}-js")) if leaf_jetstream else None,
        )
        for i, site in enumerate(sites)
    ]
    console = Console()
    paths = write_configs(out, hubs, leaves)
    for path in paths:
        console.print(f"wrote [bold]{path}[/bold]")
    for path in paths[: len(hubs)]:
        console.print(f"run with: nats-server -c {path}", highlight=False)


def _secure(
    data_dir: Path, out: Path, hubs: list[HubConfig], public_hosts: tuple[str, ...]
) -> list[HubConfig]:
    """`hubs` with TLS: one certificate per node (the single hub: ``pki/hub.crt``) and
    the users file of `data_dir` included by its path relative to `out`. Each step takes
    the lock its file's other writers take (`write_users_if_missing`, `init_pki`,
    `Pki.issue_node`), one after the other, never nested: an `aivos fleet enroll` or
    `aivos nats rotate-cert` running meanwhile is waited for, not overwritten."""
    users = data_dir / "nats" / "users.conf"
    write_users_if_missing(users, SYSTEM_USER)
    users_file = os.path.relpath(users, out)
    if len(hubs) == 1 and not hubs[0].cluster_port:
        hosts = sorted({hubs[0].host, "127.0.0.1", "localhost", *public_hosts} - {"0.0.0.0"})
        pki = init_pki(data_dir, hosts=hosts)
        return [msgspec.structs.replace(hubs[0], tls=pki.hub_files, users_file=users_file)]
    pki = init_pki(data_dir)
    return secure_nodes(pki, hubs, users_file=users_file, extra_hosts=public_hosts, reissue=True)
