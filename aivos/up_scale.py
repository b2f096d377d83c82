"""The scale-out options of `aivos up`: ``--hub-nodes N`` (the hub as N routed
nats-server nodes on 127.0.0.1) and ``--cloud-db URL`` (the cloud stores in PostgreSQL).

The local cluster is secured like the single hub (`secure_cluster_config`): every node
has its own certificate of the appliance's CA, requires TLS and a client certificate on
its client and leaf ports, and accepts routes only over mutual TLS from the other nodes'
certificates; the site is enrolled (or rotated) and its leaf runs from the kit's
leaf.conf, which lists every node's leaf URL and fails over between them; the worker, the
ingest and the console connect with their own certificates (docs/scaling.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx

from aivos.shared.natsconf.render import NodePorts
from aivos.shared.natsconf.server import NatsServer, free_port

if TYPE_CHECKING:
    from aivos.up import Appliance

__all__ = [
    "cloud_args",
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
        help="Hub nodes; N > 1 runs a routed, TLS-secured local cluster (docs/scaling.md).",
    )
    cloud_db = click.option(
        "--cloud-db",
        default=None,
        help="The cloud stores in this postgresql:// database [default: SQLite files].",
    )
    return lambda fn: hub_nodes(cloud_db(fn))


def js_replicas_for(nodes: int) -> int:
    """JetStream replicas on a cluster of `nodes`: 3 from 3 nodes (majority of 3), else
    as many as there are nodes."""
    return min(nodes, 3)


def start_cluster(app: Appliance) -> None:
    """Run `app.hub_nodes` secured nodes as children of `app` (stopped with the hub stage),
    all spawned before any is waited for (JetStream needs a quorum), then enroll the site
    (or rotate it) and run its leaf from the kit (`Appliance.start_leaf`). A node that finds
    a picked port taken meanwhile has every node started again on fresh ports (the others'
    routes name its ports). Sets ``app.hub`` (node 1), ``app.kit``, ``app.leaf_url`` and
    the lines."""
    from aivos.cloud.fleet.enroll import secure_cluster_config

    started: list[list[NatsServer]] = []

    def spawn() -> Callable[[], bool]:
        ports = tuple(
            NodePorts(free_port(), free_port(), free_port(), free_port())
            for _ in range(app.hub_nodes)
        )
        confs = secure_cluster_config(app.cloud_dir, app.hub_nodes, ports=ports)
        nodes = [NatsServer(conf, app.cloud_dir / "nats") for conf in confs]
        for i, node in enumerate(nodes, start=1):
            node.write_config()
            app._spawn_argv(f"hub-{i}", [str(node.binary), "-c", str(node.config_path)])
        started.append(nodes)
        health = [f"http://{conf.host}:{conf.monitor_port}/healthz" for conf in confs]
        return lambda: all(httpx.get(url, timeout=2).is_success for url in health)

    names = tuple(f"hub-{i}" for i in range(1, app.hub_nodes + 1))
    app._start_listening(names, f"the hub's {app.hub_nodes} nodes", spawn, 60 * app.hub_nodes)
    nodes = started[-1]
    app.hub = nodes[0]
    app.lines["hub"] = ",".join(node.url for node in nodes)
    # the leaf picks one of its remote URLs at random: any node may hold its link
    app.start_leaf(lambda: any(n.leafnode_count() >= 1 for n in nodes))


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
