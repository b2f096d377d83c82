"""Render nats-server configuration files for the cloud hub and a site leaf node.

Hub: JetStream (file store, domain ``hub``, ``sync_interval: always``) and a leaf-node
listener with ``no_advertise: true`` (otherwise the hub gossips its cluster URLs to the
leaves and they bypass the URL they were configured with, e.g. a proxy).

Secured hub (`tls` and `users` set): every client and leaf link must present a client
certificate issued by the aivos CA (``verify_and_map``); the certificate's subject
``CN=<user>`` selects a user and its permissions (`permissions`). Without `tls` the hub
is open (tests, a laptop). A secured leaf dials the hub with its site certificate
(`hub_tls`); its own client port stays plain on loopback for the site's agent.

Leaf: its own client port for the site's agent, one remote to the hub, and optionally
a local JetStream with domain = site (also ``sync_interval: always``: the default
2-minute fsync interval loses acknowledged data on power loss).

Hub cluster (`HubConfig.cluster_port` set, `hub_cluster`): N hub nodes, each with its own
server name, ports and store, joined by routes into one cluster (all in JetStream domain
``hub``, so streams can be replicated across them). A leaf lists every node's leaf URL
(`LeafConfig.hub_leaf_urls`) and moves to another node when its node dies.

Secured cluster (`tls` set on cluster nodes): besides the client and leaf listeners, the
routes run over mutual TLS with the same node certificate (`Pki.issue_node`, subject
``CN=aivos-hub-route``): ``cluster { tls { verify_and_map } authorization { user } }``
accepts a route only from a certificate of the aivos CA whose subject is the route user,
so neither a foreign certificate nor a site's or service's certificate can join.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from aivos.shared.errors import ConfigError
from aivos.shared.subjects import HUB_DOMAIN, validate_site

__all__ = [
    "CertFiles",
    "HubConfig",
    "HubUser",
    "LeafConfig",
    "NodePorts",
    "ROUTE_USER",
    "WILDCARD_HOSTS",
    "hub_cluster",
    "render_hub",
    "render_leaf",
    "render_users",
]


ROUTE_USER = "aivos-hub-route"  # the CN of every hub node's certificate (route identity)
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # listen on every address: nobody dials it


class CertFiles(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Paths of one certificate, its key, and the CA that verifies the peer."""

    cert: str
    key: str
    ca: str


class HubUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A hub user (the CN of its client certificate) with allow-lists (None: any)."""

    name: str
    publish: tuple[str, ...] | None = None
    subscribe: tuple[str, ...] | None = None


class HubConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The cloud hub: clients (workers, ingest, console) and leaf nodes connect here."""

    store_dir: str
    host: str = "127.0.0.1"
    port: int = 4222
    leaf_port: int = 7422
    monitor_port: int = 0  # 0 = no HTTP monitoring endpoint
    server_name: str = "aivos-hub"
    max_payload: int = 8 * 1024 * 1024
    ping_interval_s: int = 10  # nats-server default is 2 min: a silent WAN drop goes unseen
    ping_max: int = 3
    tls: CertFiles | None = None  # set: TLS + client certificates required
    users: tuple[HubUser, ...] = ()
    # instead of `users`: a file (path relative to the hub config's directory) holding the
    # ``authorization`` block, rewritten by `aivos fleet enroll/revoke` and then reloaded
    users_file: str | None = None
    pid_file: str | None = None  # where `aivos fleet revoke` finds the hub to reload
    system_user: str = "aivos-svc-system"
    # a hub cluster: this node's route port (0 = a single hub) and every node's route URL
    # (``nats-route://host:port``, this node's included: nats-server skips itself)
    cluster_port: int = 0
    cluster_name: str = "aivos-hub"
    routes: tuple[str, ...] = ()
    route_user: str = ROUTE_USER  # a secured cluster: the CN a peer's route certificate has

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def leaf_url(self) -> str:
        return f"nats-leaf://{self.host}:{self.leaf_port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"


class LeafConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A site leaf node: the agent connects to `url`; the leaf connects out to `hub_leaf_url`."""

    site: str
    hub_leaf_url: str = "nats-leaf://127.0.0.1:7422"
    host: str = "127.0.0.1"
    port: int = 4223
    monitor_port: int = 0
    store_dir: str | None = None  # set to enable a local JetStream (domain = site)
    max_payload: int = 8 * 1024 * 1024
    ping_interval_s: int = 10
    ping_max: int = 3
    hub_tls: CertFiles | None = None  # the site's client certificate for the hub link
    generation: int = 0  # credential generation (in the server name, seen in the hub's /leafz)
    # the other hub nodes' leaf URLs (a hub cluster): the leaf fails over between all of them
    hub_leaf_urls: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def server_name(self) -> str:
        suffix = f"-g{self.generation}" if self.generation else ""
        return f"aivos-leaf-{self.site}{suffix}"

    @property
    def hub_urls(self) -> tuple[str, ...]:
        """Every hub leaf URL this leaf may dial, `hub_leaf_url` first, without repeats."""
        return tuple(dict.fromkeys((self.hub_leaf_url, *self.hub_leaf_urls)))


class NodePorts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ports of one hub node (monitor 0 = no HTTP monitoring endpoint), and its own
    address when the nodes run on different machines (empty: the base config's host)."""

    port: int
    leaf_port: int
    cluster_port: int
    monitor_port: int = 0
    host: str = ""


def hub_cluster(
    base: HubConfig,
    nodes: int,
    *,
    store_root: str,
    cluster_port: int = 6222,
    ports: tuple[NodePorts, ...] = (),
) -> list[HubConfig]:
    """`nodes` hub configs on `base.host`: node i (1-based) gets ``base`` ports + i - 1
    (client, leaf, monitor when set, and `cluster_port` + i - 1 for routes), or
    ``ports[i - 1]`` when `ports` is given, server name ``<base.server_name>-<i>`` and
    JetStream dir ``<store_root>/hub-<i>-js``; the route URLs name `base.host` (loopback
    when it is a wildcard: the nodes share this host), or each node's own `NodePorts.host`
    (one node per machine: it listens there, and its peers dial it there). One node
    (`nodes` = 1, no `ports`) is `base` itself: no cluster block, exactly the single hub."""
    if nodes < 1:
        raise ConfigError("nats.cluster", f"a hub needs at least one node, not {nodes}")
    if ports and len(ports) != nodes:
        raise ConfigError("nats.cluster", f"{len(ports)} port sets for {nodes} nodes")
    if nodes == 1 and not ports:
        return [base]
    mon = base.monitor_port
    ports = ports or tuple(
        NodePorts(base.port + i, base.leaf_port + i, cluster_port + i, mon + i if mon else 0)
        for i in range(nodes)
    )
    # peers dial a route URL: a wildcard listen address (every interface) is no address
    # to dial, and a node's certificate does not name it (the TLS route would fail), so
    # nodes listening everywhere on one host route to each other over loopback
    dial = "127.0.0.1" if base.host in WILDCARD_HOSTS else base.host
    routes = tuple(f"nats-route://{p.host or dial}:{p.cluster_port}" for p in ports)
    return [
        msgspec.structs.replace(
            base,
            host=p.host or base.host,
            store_dir=str(Path(store_root) / f"hub-{i + 1}-js"),
            port=p.port,
            leaf_port=p.leaf_port,
            monitor_port=p.monitor_port,
            server_name=f"{base.server_name}-{i + 1}",
            pid_file=None if base.pid_file is None else f"{base.pid_file}.{i + 1}",
            cluster_port=p.cluster_port,
            routes=routes,
        )
        for i, p in enumerate(ports)
    ]


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid quoted nats-server config string


def _common(conf: HubConfig | LeafConfig) -> list[str]:
    lines = [
        f"server_name: {_q(conf.server_name)}",
        f"host: {_q(conf.host)}",
        f"port: {conf.port}",
        f"max_payload: {conf.max_payload}",
        f'ping_interval: "{conf.ping_interval_s}s"',
        f"ping_max: {conf.ping_max}",
    ]
    if conf.monitor_port:
        lines.append(f"http: {_q(f'{conf.host}:{conf.monitor_port}')}")
    return lines


def _jetstream(store_dir: str, domain: str) -> list[str]:
    return [
        "jetstream {",
        f"  store_dir: {_q(str(Path(store_dir)))}",
        f"  domain: {_q(domain)}",
        "  sync_interval: always",
        "}",
    ]


def _tls(files: CertFiles, indent: str, *, verify_and_map: bool) -> list[str]:
    lines = [
        f"{indent}tls {{",
        f"{indent}  cert_file: {_q(files.cert)}",
        f"{indent}  key_file: {_q(files.key)}",
        f"{indent}  ca_file: {_q(files.ca)}",
    ]
    if verify_and_map:
        lines.append(f"{indent}  verify_and_map: true")
    lines.append(f"{indent}  timeout: 5")
    return [*lines, f"{indent}}}"]


def _allow(subjects: tuple[str, ...]) -> str:
    return "{ allow: [" + ", ".join(_q(s) for s in subjects) + "] }"


def _user(user: HubUser) -> str:
    perms = []
    if user.publish is not None:
        perms.append(f"publish: {_allow(user.publish)}")
    if user.subscribe is not None:
        perms.append(f"subscribe: {_allow(user.subscribe)}")
    body = f"user: {_q('CN=' + user.name)}"
    if perms:
        body += ", permissions: { " + ", ".join(perms) + " }"
    return "    { " + body + " }"


def render_users(users: tuple[HubUser, ...] | list[HubUser], system_user: str) -> str:
    """The hub's accounts: every aivos identity in account ``AIVOS`` (with JetStream) and
    `system_user` in the system account ``SYS`` (used to kick revoked connections);
    inline or as the file `HubConfig.users_file`."""
    # no user at all would let any CA-signed certificate in as the default user
    users = tuple(users) or (HubUser(name="aivos-nobody", publish=(), subscribe=()),)
    lines = ["accounts {", "  AIVOS: {", "    jetstream: enabled", "    users = ["]
    lines += ["  " + _user(user) for user in users]
    lines += ["    ]", "  }", f"  SYS: {{ users = [ {{ user: {_q('CN=' + system_user)} }} ] }}"]
    lines += ["}", "system_account: SYS"]
    return "\n".join(lines) + "\n"


def render_hub(conf: HubConfig) -> str:
    """nats-server config text for the hub."""
    if (conf.users or conf.users_file) and conf.tls is None:
        raise ConfigError("nats.hub.users", "users need TLS (identity is the client certificate)")
    lines = _common(conf)
    if conf.pid_file:
        lines.append(f"pid_file: {_q(conf.pid_file)}")
    lines += _jetstream(conf.store_dir, HUB_DOMAIN)
    if conf.tls is not None:
        lines += _tls(conf.tls, "", verify_and_map=True)
        if conf.users_file:
            lines.append(f"include {_q(conf.users_file)}")
        else:
            lines += render_users(conf.users, conf.system_user).splitlines()
    lines += [
        "leafnodes {",
        f"  listen: {_q(f'{conf.host}:{conf.leaf_port}')}",
        "  no_advertise: true",
    ]
    if conf.tls is not None:
        lines += _tls(conf.tls, "  ", verify_and_map=True)
    lines.append("}")
    if conf.cluster_port:
        lines += _cluster(conf)
    return "\n".join(lines) + "\n"


def _cluster(conf: HubConfig) -> list[str]:
    if not conf.routes:
        raise ConfigError("nats.hub.routes", "a cluster node needs the route URLs of its peers")
    lines = [
        "cluster {",
        f"  name: {_q(conf.cluster_name)}",
        f"  listen: {_q(f'{conf.host}:{conf.cluster_port}')}",
    ]
    if conf.tls is not None:
        # mutual TLS on every route, and the peer's certificate subject must be the route
        # user: a certificate of another CA fails the handshake, one of a site or a
        # service (same CA, other subject) fails the route authorization
        lines += _tls(conf.tls, "  ", verify_and_map=True)
        lines.append(f"  authorization {{ user: {_q('CN=' + conf.route_user)} }}")
    return [
        *lines,
        "  routes = [",
        *(f"    {_q(url)}" for url in conf.routes),
        "  ]",
        "}",
    ]


def render_leaf(conf: LeafConfig) -> str:
    """nats-server config text for a site leaf node."""
    validate_site(conf.site)
    lines = _common(conf)
    if conf.store_dir:
        lines += _jetstream(conf.store_dir, conf.site)
    lines += [
        "leafnodes {",
        '  reconnect: "1s"',
        "  remotes = [",
    ]
    urls = conf.hub_urls
    target = f"url: {_q(urls[0])}" if len(urls) == 1 else f"urls: [{', '.join(map(_q, urls))}]"
    if conf.hub_tls is None:
        lines.append(f"    {{ {target} }}")
    else:
        lines += [f"    {{ {target}"]
        lines += _tls(conf.hub_tls, "      ", verify_and_map=False)
        lines.append("    }")
    lines += [
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"
