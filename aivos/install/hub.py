"""The hub of a cloud node: which nodes this machine runs, their state and their configs.

Three shapes, all made by the renderer of `aivos nats config --secure` (`secure_hub_config`,
`secure_cluster_config`), so the CA, certificates, users file and ``nats/hub.json`` are
exactly what `aivos fleet enroll/revoke/rotate` expect:

* one hub (the default): ``nats/hub.conf``, unit ``aivos-hub.service``;
* N nodes on this host (``--hub-nodes N``): ``nats/hub-<i>.conf``, ports counted up from
  the given ones, units ``aivos-hub@1..N.service`` (a template);
* one node per machine (``--node-hosts h1,..,hN --node I``): every machine renders the
  same cluster (same ports, node i at ``hi``, routes to every ``hi``) and runs node I only
  (``nats/hub-<I>.conf``, ``aivos-hub@I.service``). The machines share one CA: install the
  first, then give the others its ``pki`` directory (``--ca DIR``), so every node's
  certificate is issued by it and peers, services and sites trust each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from aivos.cloud.fleet.enroll import HubEndpoints, secure_cluster_config, secure_hub_config
from aivos.install.errors import InstallError
from aivos.install.layout import CLOUD_DIR
from aivos.install.units import HUB_CLUSTER_UNIT, HUB_UNIT
from aivos.shared.atomicfile import write_atomic
from aivos.shared.natsconf.pki import CERT_MODE, locked_folder, write_private
from aivos.shared.natsconf.render import WILDCARD_HOSTS, HubConfig, NodePorts, render_hub

__all__ = [
    "HubLayout",
    "adopt_ca",
    "client_url",
    "hub_configs",
    "is_server_state",
    "keeping_state",
    "node_conf",
    "runtime_paths",
]


@dataclass(frozen=True)
class HubLayout:
    """How many nodes the hub has and which of them this machine runs."""

    nodes: int = 1
    hosts: tuple[str, ...] = ()  # one node per machine: node i's address is hosts[i - 1]
    this_node: int = 0  # with `hosts`: the node this machine runs (1-based)

    @classmethod
    def build(cls, nodes: int, hosts: tuple[str, ...], this_node: int | None) -> HubLayout:
        if nodes < 1:
            raise InstallError("--hub-nodes must be 1 or more")
        if not hosts:
            if this_node is not None:
                raise InstallError("--node needs --node-hosts (one node per machine)")
            return cls(nodes)
        if nodes not in (1, len(hosts)):
            raise InstallError(f"--hub-nodes {nodes} but {len(hosts)} --node-hosts")
        if len(hosts) < 2 or len(set(hosts)) != len(hosts):
            raise InstallError("--node-hosts needs two or more different addresses")
        if any(host in WILDCARD_HOSTS for host in hosts):
            raise InstallError("--node-hosts are the addresses peers dial, not 0.0.0.0")
        if this_node is None or not 1 <= this_node <= len(hosts):
            raise InstallError(f"--node: which of the {len(hosts)} nodes this machine runs")
        return cls(len(hosts), hosts, this_node)

    @property
    def local(self) -> list[int]:
        """The nodes this machine runs (1-based)."""
        return [self.this_node] if self.hosts else list(range(1, self.nodes + 1))

    def conf_name(self, node: int) -> str:
        """The config file of node `node`, as `aivos nats config` names it."""
        return "hub.conf" if self.nodes == 1 else f"hub-{node}.conf"

    @property
    def unit_template(self) -> str:
        return HUB_UNIT if self.nodes == 1 else HUB_CLUSTER_UNIT

    @property
    def units(self) -> list[str]:
        """The hub units this machine starts."""
        if self.nodes == 1:
            return [HUB_UNIT]
        return [HUB_CLUSTER_UNIT.replace("@", f"@{i}") for i in self.local]


def hub_configs(
    data_dir: Path,
    layout: HubLayout,
    *,
    host: str,
    port: int,
    leaf_port: int,
    monitor_port: int,
    cluster_port: int,
    public_host: str | None,
) -> list[HubConfig]:
    """Every node's config (the hub's state made or kept in `data_dir`), ``hub.json`` as
    it must read on this machine."""
    if layout.nodes == 1:
        confs = [
            secure_hub_config(
                data_dir,
                host=host,
                port=port,
                leaf_port=leaf_port,
                monitor_port=monitor_port,
                public_host=public_host,
            )
        ]
    else:
        ports = tuple(
            NodePorts(port, leaf_port, cluster_port, monitor_port, host=node_host)
            for node_host in layout.hosts
        )
        confs = secure_cluster_config(
            data_dir,
            layout.nodes,
            host=host,
            port=port,
            leaf_port=leaf_port,
            monitor_port=monitor_port,
            cluster_port=cluster_port,
            ports=ports,
            public_hosts=(public_host,) if public_host else (),
        )
    _runtime_endpoints(data_dir, layout, confs)
    return confs


def client_url(conf: HubConfig) -> str:
    """The URL a process on the node's machine dials it at."""
    return f"tls://{_dial_host(conf.host)}:{conf.port}"


def _dial_host(listen: str) -> str:
    return "127.0.0.1" if listen in WILDCARD_HOSTS else listen


def _runtime_endpoints(data_dir: Path, layout: HubLayout, confs: list[HubConfig]) -> None:
    """``nats/hub.json`` (read by `aivos fleet enroll/revoke/rotate` on this machine) as it
    must read here: the client URLs dialable (a wildcard listen address is in no node
    certificate), the monitors and pid files of the nodes this machine runs (monitors
    listen on loopback only), at their runtime paths. One node per machine: each node's
    leaf URL at its own address (what the sites' kits list)."""
    path = data_dir / "nats" / "hub.json"
    ends = msgspec.json.decode(path.read_bytes(), type=HubEndpoints)
    local = [confs[i - 1] for i in layout.local]
    monitors = tuple(f"http://127.0.0.1:{c.monitor_port}" for c in local if c.monitor_port)
    changes: dict[str, object] = {
        "url": client_url(confs[0]),
        "monitor_url": monitors[0] if monitors else None,
    }
    if layout.nodes > 1:
        changes |= {
            "urls": tuple(client_url(c) for c in confs),
            "monitor_urls": monitors,
            "pid_files": tuple(runtime_paths(str(c.pid_file), data_dir) for c in local),
        }
    if layout.hosts:
        leaf_urls = tuple(c.leaf_url for c in confs)
        changes |= {"leaf_url": leaf_urls[0], "leaf_urls": leaf_urls}
    ends = msgspec.structs.replace(ends, **changes)
    path.write_bytes(msgspec.json.encode(ends))


def node_conf(conf: HubConfig, data_dir: Path) -> str:
    """A node's config text as it reads on the box."""
    text = runtime_paths(render_hub(conf), data_dir)
    if conf.monitor_port:
        # the monitor endpoint has no authentication: loopback only, even when the hub
        # listens on every address (revoke/rotate reach it from this node)
        text = text.replace(
            f'http: "{conf.host}:{conf.monitor_port}"', f'http: "127.0.0.1:{conf.monitor_port}"'
        )
    return text


def runtime_paths(text: str, data_dir: Path) -> str:
    """`text` with the data dir's path under the prefix replaced by its path on the box."""
    return text.replace(str(data_dir), CLOUD_DIR)


def adopt_ca(data_dir: Path, ca_dir: Path) -> None:
    """Put the cluster's CA (``ca.crt`` and ``ca.key`` in `ca_dir`, the first machine's
    ``pki``) into this machine's ``pki`` before anything is issued; refuse when another
    CA is already here (its certificates would not be trusted by the other nodes)."""
    pki = data_dir / "pki"
    given = {name: (ca_dir / name).read_bytes() for name in ("ca.crt", "ca.key")}
    with locked_folder(pki):  # the lock `aivos pki init`/`nats config` make the CA under
        if (pki / "ca.crt").is_file():
            if (pki / "ca.crt").read_bytes() != given["ca.crt"]:
                raise InstallError(f"{CLOUD_DIR}/pki holds another CA than {ca_dir}")
            if (pki / "ca.key").is_file():
                return
        # the key last, as `init_pki` writes a CA: a CA whose ca.key exists is complete
        write_atomic(pki / "ca.crt", given["ca.crt"], mode=CERT_MODE)
        write_private(pki / "ca.key", given["ca.key"])


def is_server_state(name: str) -> bool:
    """A JetStream store directory of the hub (``jetstream``) or of a node (``hub-<i>-js``):
    the running nats-server's own state, which the installer neither hashes (it may be
    large and changing) nor re-owns (the server made it, as the service account)."""
    return name == "jetstream" or name.endswith("-js")


@contextlib.contextmanager
def keeping_state(data_dir: Path) -> Iterator[list[str]]:
    """Around the calls that make the hub's state: keep each old hub or node certificate
    that already names every host its new one names (they are reissued on every call),
    and put back the times of files whose bytes did not change, so a second install
    leaves the tree as it was. Yields a list: the paths that are new or different."""
    with _keeping_unchanged_mtimes(data_dir) as changed, _keeping_certs(data_dir):
        yield changed


@contextlib.contextmanager
def _keeping_certs(data_dir: Path) -> Iterator[None]:
    pki = data_dir / "pki"
    certs = [pki / "hub.crt", *sorted((pki / "nodes").glob("*.crt"))]
    old = {
        cert: (cert.read_bytes(), cert.with_suffix(".key").read_bytes())
        for cert in certs
        if cert.is_file() and cert.with_suffix(".key").is_file()
    }
    yield
    for cert, (pem, key) in old.items():
        if cert.is_file() and _names(cert.read_bytes()) <= _names(pem):
            cert.write_bytes(pem)
            cert.with_suffix(".key").write_bytes(key)


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


class _keeping_unchanged_mtimes:
    """The state files are rewritten on every call; put back the times of those whose
    bytes did not change. ``changed`` after the block: the files new or different."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.changed: list[str] = []

    def _snapshot(self) -> dict[Path, tuple[str, int, int, int, int]]:
        """Every file's sha256 and every directory's listing, with their times."""
        out = {}
        for dirpath, dirs, files in os.walk(self.root):
            dirs[:] = sorted(name for name in dirs if not is_server_state(name))
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
