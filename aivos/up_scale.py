"""The scale-out options of `aivos up`: ``--hub-nodes N`` (the hub as N routed
nats-server nodes on 127.0.0.1) and ``--cloud-db URL`` (the cloud stores in PostgreSQL).

The secure single hub of `aivos up` (TLS, certificate identities, enrollment) is not
rendered as a cluster yet (`render_hub` refuses a cluster node with TLS), so this local
cluster runs **without TLS or users**: for trying the scale-out path on one machine, never
for a fleet (docs/scaling.md). Each node gets its own free ports; the site's leaf lists
every node's leaf URL and fails over between them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx

from aivos.shared.natsconf.render import HubConfig, LeafConfig
from aivos.shared.natsconf.server import NatsServer, free_port

if TYPE_CHECKING:
    from aivos.up import Appliance

__all__ = [
    "cloud_args",
    "cluster_hub_configs",
    "cluster_leaf_config",
    "js_replicas_for",
    "operator_token_in",
    "scale_options",
    "start_cluster",
]


def scale_options() -> Callable[[Any], Any]:
    """`--hub-nodes N` -> ``hub_nodes: int`` and `--cloud-db URL` -> ``cloud_db``."""
    hub_nodes = click.option(
        "--hub-nodes",
        type=click.IntRange(1, 5),
        default=1,
        show_default=True,
        help="Hub nodes; N > 1 runs a routed local cluster WITHOUT TLS (docs/scaling.md).",
    )
    cloud_db = click.option(
        "--cloud-db",
        default=None,
        help="The cloud stores in this postgresql:// database [default: SQLite files].",
    )
    return lambda fn: hub_nodes(cloud_db(fn))


def cluster_hub_configs(root: Path, nodes: int) -> list[HubConfig]:
    """`nodes` routed hub configs with JetStream (domain ``hub``) under `root`."""
    ports = [(free_port(), free_port(), free_port(), free_port()) for _ in range(nodes)]
    routes = tuple(f"nats-route://127.0.0.1:{p[3]}" for p in ports)
    return [
        HubConfig(
            store_dir=str(root / f"hub-{i}-js"),
            port=port,
            leaf_port=leaf_port,
            monitor_port=monitor_port,
            server_name=f"aivos-hub-{i}",
            cluster_port=cluster_port,
            routes=routes,
        )
        for i, (port, leaf_port, monitor_port, cluster_port) in enumerate(ports, start=1)
    ]


def cluster_leaf_config(site: str, hubs: list[HubConfig], port: int) -> LeafConfig:
    """The site's leaf node, dialling every hub node (the first one first)."""
    return LeafConfig(
        site=site,
        port=port,
        hub_leaf_url=hubs[0].leaf_url,
        hub_leaf_urls=tuple(h.leaf_url for h in hubs[1:]),
    )


def js_replicas_for(nodes: int) -> int:
    """JetStream replicas on a cluster of `nodes`: 3 from 3 nodes (majority of 3), else
    as many as there are nodes."""
    return min(nodes, 3)


def start_cluster(app: Appliance) -> None:
    """Run `app.hub_nodes` routed nodes as children of `app` (stopped with the hub stage),
    all spawned before any is waited for (JetStream needs a quorum), and the site's leaf
    dialling all of them. Sets ``app.hub`` (node 1), ``app.leaf_url`` and its lines."""
    confs = cluster_hub_configs(app.cloud_dir / "nats", app.hub_nodes)
    nodes = [NatsServer(conf, app.cloud_dir / "nats") for conf in confs]
    for i, node in enumerate(nodes, start=1):
        node.write_config()
        app._spawn_argv(f"hub-{i}", [str(node.binary), "-c", str(node.config_path)])
    for conf in confs:
        health = f"http://{conf.host}:{conf.monitor_port}/healthz"
        app._wait(f"hub node {conf.server_name}", lambda h=health: httpx.get(h).is_success, 60)
    app.hub = nodes[0]
    leaf = NatsServer(cluster_leaf_config(app.site, confs, free_port()), app.data_dir)
    leaf.write_config()
    app._spawn_argv("leaf", [str(leaf.binary), "-c", str(leaf.config_path)])
    app.leaf_url = leaf.url
    # the leaf picks one of its remote URLs at random: any node may hold its link
    app._wait("the site's leaf node", lambda: any(n.leafnode_count() >= 1 for n in nodes), 30)
    app.lines["hub"] = ",".join(node.url for node in nodes)
    app.lines["leaf"] = leaf.url


def cloud_args(hub_urls: str, hub_nodes: int, cloud_db: str | None) -> list[str]:
    """`--nats` (every hub node), `--db` and `--js-replicas` of the ingest and console."""
    args = ["--nats", hub_urls]
    if cloud_db:
        args += ["--db", cloud_db]
    if hub_nodes > 1:
        args += ["--js-replicas", str(js_replicas_for(hub_nodes))]
    return args


def operator_token_in(db: str, cloud_dir: Path) -> str:
    """An operator API token created in the registry of `db` (PostgreSQL)."""
    from aivos.cloud.fleet.registry import open_registry
    from aivos.cloud.fleet.tokens import hash_token, new_token

    token = new_token()
    with open_registry(db, cloud_dir) as registry:
        registry.add_token(hash_token(token), "operator")
        registry.record_action("cli", "operator_token.create", "operator")
    return token
