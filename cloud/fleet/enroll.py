"""Site and service identities on the secured hub: enroll, revoke, rotate.

State lives in the cloud data dir ``D`` (next to the CA in ``D/pki``):

* ``D/nats/identities.json``: per site, the credential generations the hub accepts,
  whether the site is revoked, and generations waiting to retire after a rotation;
  every change (enroll, rotate, revoke, retire) reads, changes and rewrites it holding
  the lock ``D/nats/identities.lock``, so concurrent commands run one after the other
  instead of losing each other's change (a second one logs that it waits, then waits);
* ``D/nats/users.conf``: the hub's ``authorization`` block, rendered from that file and
  `shared.natsconf.permissions` (the hub config includes it, see `secure_hub_config`);
* ``D/nats/hub.pid``: the running hub; after every change it gets SIGHUP (a config
  reload: removed users' connections are closed at once, no restart);
  a hub cluster (`secure_cluster_config`): ``D/nats/hub.pid.<i>`` per node, all reloaded;
* ``D/nats/hub.json``: the hub's addresses (every node's, for a cluster), for the kits
  and for `retire_rotated`;
* ``D/nats/services/<role>/``: client certificates of the cloud services;
* ``D/keys/config_signing.key``: the operator's remote-config signing key, made at the
  first enrollment; every kit trusts its public half and requires signed config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import click
import msgspec

from aivos.shared.atomicfile import write_atomic
from aivos.shared.config_signature import CONFIG_KEY_NAME
from aivos.shared.errors import ConfigError, NotFound
from aivos.shared.filelock import exclusive
from aivos.shared.fleet import generate_signing_key
from aivos.shared.natsconf.connect import tls_context
from aivos.shared.natsconf.permissions import (
    ROLES,
    SYSTEM_USER,
    service_inbox_prefix,
    service_user,
    site_permissions,
    site_user,
)
from aivos.shared.natsconf.pki import CERT_WRITERS, Pki, init_pki, load_pki
from aivos.shared.natsconf.render import (
    CertFiles,
    HubConfig,
    HubUser,
    LeafConfig,
    NodePorts,
    hub_cluster,
    render_leaf,
)
from aivos.shared.natsconf.render import render_users as _render_users
from aivos.shared.natsconf.secure import (
    USERS_LOCK,
    USERS_WRITERS,
    secure_nodes,
    service_users,
)
from aivos.shared.subjects import validate_site

__all__ = [
    "HubEndpoints",
    "SiteIdentity",
    "Identities",
    "enroll_or_rotate_site",
    "enroll_site",
    "ensure_config_key",
    "revoke_site",
    "rotate_site",
    "retire_rotated",
    "HubReload",
    "identities_lock",
    "reload_hub",
    "signal_hub",
    "secure_cluster_config",
    "secure_hub_config",
    "service_identity",
    "load_identities",
]


class SiteIdentity(msgspec.Struct, kw_only=True):
    generations: list[int] = []  # accepted by the hub
    retiring: list[int] = []  # accepted until the newest generation has connected
    revoked: bool = False
    enrolled_ms: int = 0
    revoked_ms: int | None = None


class Identities(msgspec.Struct, kw_only=True):
    sites: dict[str, SiteIdentity] = {}


class HubEndpoints(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    leaf_url: str
    monitor_url: str | None = None
    # a hub cluster: every node's URLs (the first ones repeat `url`, `leaf_url`, ...)
    urls: tuple[str, ...] = ()
    leaf_urls: tuple[str, ...] = ()
    monitor_urls: tuple[str, ...] = ()
    pid_files: tuple[str, ...] = ()  # every node's pid file (empty: ``D/nats/hub.pid``)

    @property
    def monitors(self) -> tuple[str, ...]:
        """Every node's monitor URL (one for a single hub, none without a monitor port)."""
        if self.monitor_urls:
            return self.monitor_urls
        return (self.monitor_url,) if self.monitor_url else ()


def _nats_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "nats"


def load_identities(data_dir: Path) -> Identities:
    path = _nats_dir(data_dir) / "identities.json"
    if not path.exists():
        return Identities()
    return msgspec.json.decode(path.read_bytes(), type=Identities)


def identities_lock(data_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Held from `load_identities` to `_save` (and the hub reload) by every change: two
    changes at once would each write their own copy and drop the other's (a lost
    enrollment, or a revocation undone by a rotation). Taken once per public call. The
    users file's other writer (`aivos nats config`, `write_users_if_missing`) takes it too,
    and so does `aivos nats reload` around its `signal_hub`."""
    return exclusive(_nats_dir(data_dir) / USERS_LOCK, USERS_WRITERS)


def _save(data_dir: Path, ids: Identities) -> None:
    """Write identities.json and users.conf; the caller holds `identities_lock`."""
    directory = _nats_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    # neither file holds a secret; nats-server reads users.conf
    write_atomic(
        directory / "identities.json",
        msgspec.json.format(msgspec.json.encode(ids)),
        mode=0o644,
        sync_dir=True,
    )
    _write_users(data_dir, ids)


def _hub_users(ids: Identities) -> list[HubUser]:
    users = service_users()
    for site, ident in sorted(ids.sites.items()):
        if ident.revoked:
            continue
        perms = site_permissions(site)
        for gen in sorted({*ident.generations, *ident.retiring}):
            users.append(HubUser(site_user(site, gen), perms.publish, perms.subscribe))
    return users


def _write_users(data_dir: Path, ids: Identities) -> None:
    users = _render_users(_hub_users(ids), SYSTEM_USER)
    write_atomic(_nats_dir(data_dir) / "users.conf", users.encode(), mode=0o644, sync_dir=True)


class HubReload(NamedTuple):
    pid_files: tuple[Path, ...]  # every node's pid file, looked at in this order
    pids: tuple[int, ...]  # the running nodes signalled (empty: no node is running)


def reload_hub(data_dir: Path) -> bool:
    """SIGHUP the hub named by ``D/nats/hub.pid`` (every node of a hub cluster, by the pid
    files in ``hub.json``); False if no hub node is running.

    Sent holding the certificate folders' locks (``pki/``, ``pki/nodes/``), which `aivos
    nats rotate-cert` holds from writing a node's key to writing its certificate: a reload
    started by this command never reads a new key beside the old certificate."""
    return bool(signal_hub(data_dir).pids)


def signal_hub(data_dir: Path) -> HubReload:
    """`reload_hub`, telling which pid files were read and which node pids signalled."""
    pid_files = _endpoints(data_dir).pid_files or (str(_nats_dir(data_dir) / "hub.pid"),)
    pids: list[int] = []
    with _cert_folders_locked(data_dir):
        for pid_file in pid_files:
            try:
                pid = int(Path(pid_file).read_text().strip())
                os.kill(pid, signal.SIGHUP)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                continue
            pids.append(pid)
    return HubReload(tuple(Path(f) for f in pid_files), tuple(pids))


@contextlib.contextmanager
def _cert_folders_locked(data_dir: Path) -> Iterator[None]:
    """The locks of the certificate folders that exist (a hub without TLS has none), in
    one fixed order: ``pki/`` before ``pki/nodes/``."""
    with contextlib.ExitStack() as stack:
        for folder in (data_dir / "pki", data_dir / "pki" / "nodes"):
            if folder.is_dir():
                stack.enter_context(exclusive(folder, CERT_WRITERS))
        yield


def _leafz(monitor_url: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{monitor_url}/leafz", timeout=2) as resp:
        return list(json.loads(resp.read()).get("leafs") or [])


def kick_leaves(data_dir: Path, names: set[str]) -> int:
    """Close the hub's leaf links whose server name is in `names` (a reload refuses new
    connections of removed users but keeps established ones). Returns how many."""
    endpoints = _endpoints(data_dir)
    if not names:
        return 0
    kicked = 0
    for monitor in endpoints.monitors:  # a hub cluster: the link may be on any node
        with contextlib.suppress(OSError, ValueError):
            leaves = [leaf for leaf in _leafz(monitor) if leaf.get("name") in names]
            if not leaves:
                continue
            with urllib.request.urlopen(f"{monitor}/varz", timeout=2) as resp:
                server_id = str(json.loads(resp.read())["server_id"])
            cids = [int(str(x["id"])) for x in leaves]
            asyncio.run(_kick(data_dir, list(endpoints.urls or (endpoints.url,)), server_id, cids))
            kicked += len(leaves)
    return kicked


async def _kick(data_dir: Path, url: str | list[str], server_id: str, cids: list[int]) -> None:
    import nats  # the client library is only needed here

    nc = await nats.connect(url, tls=tls_context(_system_identity(data_dir)), connect_timeout=5)
    try:
        for cid in cids:
            await nc.request(f"$SYS.REQ.SERVER.{server_id}.KICK", json.dumps({"cid": cid}).encode())
    finally:
        await nc.close()


def _site_leaf_names(site: str, generations: list[int]) -> set[str]:
    return {f"aivos-leaf-{site}-g{g}" for g in generations}


def _system_identity(data_dir: Path) -> CertFiles:
    return _identity(data_dir, "system", SYSTEM_USER)


def service_identity(data_dir: Path, role: str) -> CertFiles:
    """The client certificate of a cloud service (issued on first use)."""
    return _identity(data_dir, role, service_user(role))


def _identity(data_dir: Path, role: str, user: str) -> CertFiles:
    directory = _nats_dir(data_dir) / "services" / role
    files = CertFiles(
        cert=str(directory / f"{user}.crt"),
        key=str(directory / f"{user}.key"),
        ca=str(directory / "ca.crt"),
    )
    if not Path(files.cert).exists():
        files = load_pki(data_dir).issue_client(user, directory)
    return files


def service_env(data_dir: Path, role: str) -> dict[str, str]:
    """Environment for a service process: its certificate and its inbox prefix."""
    files = service_identity(data_dir, role)
    return {
        "AIVOS_NATS_CERT": files.cert,
        "AIVOS_NATS_KEY": files.key,
        "AIVOS_NATS_CA": files.ca,
        "AIVOS_NATS_INBOX": service_inbox_prefix(role),
    }


def secure_hub_config(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 4222,
    leaf_port: int = 7422,
    monitor_port: int = 0,
    public_host: str | None = None,
) -> HubConfig:
    """The hub config with TLS and per-identity users; run it with workdir ``D/nats``
    (``NatsServer(conf, D / "nats")``). Creates the CA and service certificates if needed."""
    data_dir = Path(data_dir)
    hosts = sorted({host, "127.0.0.1", "localhost", *([public_host] if public_host else [])})
    pki = _prepare(data_dir, hosts)
    directory = _nats_dir(data_dir)
    conf = HubConfig(
        store_dir=str(directory / "jetstream"),
        host=host,
        port=port,
        leaf_port=leaf_port,
        monitor_port=monitor_port,
        tls=pki.hub_files,
        users_file="users.conf",
        pid_file=str(directory / "hub.pid"),
    )
    leaf_host = public_host or host
    endpoints = HubEndpoints(
        url=conf.url,
        leaf_url=f"nats-leaf://{leaf_host}:{leaf_port}",
        monitor_url=f"http://{host}:{monitor_port}" if monitor_port else None,
    )
    _write_endpoints(data_dir, endpoints)
    return conf


def _prepare(data_dir: Path, hosts: list[str] | None) -> Pki:
    """The CA (and hub certificate), every service's certificate and the users file."""
    pki = init_pki(data_dir, hosts=hosts)
    for role in ROLES:
        service_identity(data_dir, role)
    _system_identity(data_dir)
    with identities_lock(data_dir):
        _save(data_dir, load_identities(data_dir))
    return pki


def secure_cluster_config(
    data_dir: Path,
    nodes: int,
    *,
    host: str = "127.0.0.1",
    port: int = 4222,
    leaf_port: int = 7422,
    monitor_port: int = 0,
    cluster_port: int = 6222,
    ports: tuple[NodePorts, ...] = (),
    public_hosts: tuple[str, ...] = (),
) -> list[HubConfig]:
    """The secured hub as `nodes` routed nodes (`hub_cluster`: ports counted up from the
    given ones, or `ports`): each with its own certificate of the CA (``D/pki/nodes``,
    covering `host`, loopback and `public_hosts`), TLS and certificate-mapped users on
    the client and leaf listeners, mutual TLS and the route identity on the routes, and
    the one users file of `secure_hub_config`, so enrollment, revocation and rotation
    work on every node (all reloaded). Run node i with ``NatsServer(confs[i], D / "nats")``
    and start them together (JetStream needs a quorum). ``hub.json`` lists every node, so
    a site kit's leaf.conf dials every node's leaf URL and fails over between them."""
    data_dir = Path(data_dir)
    pki = _prepare(data_dir, None)
    directory = _nats_dir(data_dir)
    base = HubConfig(
        store_dir=str(directory / "jetstream"),
        host=host,
        port=port,
        leaf_port=leaf_port,
        monitor_port=monitor_port,
        pid_file=str(directory / "hub.pid"),
    )
    confs = hub_cluster(
        base, nodes, store_root=str(directory), cluster_port=cluster_port, ports=ports
    )
    confs = secure_nodes(
        pki, confs, users_file="users.conf", extra_hosts=public_hosts, reissue=True
    )
    leaf_host = public_hosts[0] if public_hosts else host
    leaf_urls = tuple(f"nats-leaf://{leaf_host}:{c.leaf_port}" for c in confs)
    monitors = tuple(f"http://{host}:{c.monitor_port}" for c in confs if c.monitor_port)
    endpoints = HubEndpoints(
        url=confs[0].url,
        leaf_url=leaf_urls[0],
        monitor_url=monitors[0] if monitors else None,
        urls=tuple(c.url for c in confs),
        leaf_urls=leaf_urls,
        monitor_urls=monitors,
        pid_files=tuple(c.pid_file for c in confs if c.pid_file),
    )
    _write_endpoints(data_dir, endpoints)
    return confs


def _write_endpoints(data_dir: Path, endpoints: HubEndpoints) -> None:
    """Replace ``hub.json`` whole: a kit written meanwhile reads the old or the new one."""
    path = _nats_dir(data_dir) / "hub.json"
    write_atomic(path, msgspec.json.encode(endpoints), mode=0o644, sync_dir=True)


def _endpoints(data_dir: Path) -> HubEndpoints:
    path = _nats_dir(data_dir) / "hub.json"
    if not path.exists():
        return HubEndpoints(url="tls://127.0.0.1:4222", leaf_url="nats-leaf://127.0.0.1:7422")
    return msgspec.json.decode(path.read_bytes(), type=HubEndpoints)


def ensure_config_key(data_dir: Path) -> Path:
    """The operator's config signing key pair in ``D/keys`` (made when missing); the
    public half's path."""
    keys = Path(data_dir) / "keys"
    if not (keys / f"{CONFIG_KEY_NAME}.key").is_file():
        generate_signing_key(keys, CONFIG_KEY_NAME)
    return keys / f"{CONFIG_KEY_NAME}.pub"


def _trusted_keys(data_dir: Path) -> list[Path]:
    return sorted(p for d in (data_dir, data_dir / "keys") if d.is_dir() for p in d.glob("*.pub"))


# what a kit is made of, replaced in this order; anything else in its folder is kept (an
# agent run from the kit's edge.toml keeps its state in ``edge-data``)
_KIT_ENTRIES = ("trusted_keys", "credentials", "edge.toml", "leaf.conf")
_STAGE_PREFIX = ".kit-stage-"


class _KitOrder(NamedTuple):
    """A kit to write: the CA that issues its credentials, its folder, its leaf's port and
    the hub leaf URLs it dials (comma-separated; None: those of ``hub.json``)."""

    pki: Pki
    out: Path
    leaf_port: int
    hub_leaf_url: str | None


def _write_kit(kit: _KitOrder, data_dir: Path, site: str, generation: int) -> Path:
    """The kit of `generation` in `kit.out`, replacing the kit there (a kit holds one
    generation: `aivos install edge` refuses a folder with two keys)."""
    pki, leaf_port, hub_leaf_url = kit.pki, kit.leaf_port, kit.hub_leaf_url
    out = kit.out.resolve()
    with _kit_stage(out) as stage:
        creds = _issue_credentials(pki, site_user(site, generation), stage, out)
        # every hub node's leaf URL (comma-separated in `hub_leaf_url`, else from hub.json)
        endpoints = _endpoints(data_dir)
        urls = [u.strip() for u in hub_leaf_url.split(",") if u.strip()] if hub_leaf_url else []
        urls = urls or list(endpoints.leaf_urls or (endpoints.leaf_url,))
        leaf = LeafConfig(
            site=site,
            hub_leaf_url=urls[0],
            hub_leaf_urls=tuple(urls[1:]),
            port=leaf_port,
            hub_tls=creds,
            generation=generation,
        )
        (stage / "leaf.conf").write_text(render_leaf(leaf))
        _copy_trusted_keys(data_dir, stage / "trusted_keys")
        (stage / "edge.toml").write_text(_edge_toml(site, out, leaf.url))
    return out


@contextlib.contextmanager
def _kit_stage(out: Path) -> Iterator[Path]:
    """A stage folder inside `out` to write a kit into; when the block succeeds, its entries
    replace the kit's one by one, each by a rename (a folder: the old one is moved aside
    first), so `out` never holds two generations' keys and a failed write leaves the old
    kit. A leaf running from the old kit keeps working: nats-server reads its certificate
    and key at start, and the hub accepts the old generation until the new one connects.
    The whole write holds a lock on the `out` folder itself: a second kit write into it
    (another cloud data dir's, say) waits, so the sweep of stale stages below only ever
    meets stages of killed writers, and two writers' renames never interleave."""
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out, "kit write"):
        for stale in out.glob(f"{_STAGE_PREFIX}*"):  # left by a write that was killed
            shutil.rmtree(stale, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=_STAGE_PREFIX, dir=out))  # 0700: holds a key
        try:
            yield stage
            for name in _KIT_ENTRIES:
                new, old = stage / name, out / name
                if new.is_dir() and old.exists():
                    old.rename(stage / f"{name}.old")  # removed with the stage
                os.replace(new, old)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _issue_credentials(pki: Pki, user: str, stage: Path, out: Path) -> CertFiles:
    """The site's certificate, key and CA in ``stage/credentials``, named by the paths they
    will have in `out`."""
    staged = pki.issue_client(user, stage / "credentials")
    final = out / "credentials"
    return CertFiles(
        cert=str(final / Path(staged.cert).name),
        key=str(final / Path(staged.key).name),
        ca=str(final / Path(staged.ca).name),
    )


def _copy_trusted_keys(data_dir: Path, keys_dir: Path) -> None:
    keys_dir.mkdir()
    ensure_config_key(data_dir)
    for key in _trusted_keys(data_dir):
        shutil.copyfile(key, keys_dir / key.name)


def _edge_toml(site: str, out: Path, leaf_url: str) -> str:
    return (
        "# aivos edge agent settings written by `aivos fleet enroll`\n"
        f"site_id = {json.dumps(site)}\n"
        f"data_dir = {json.dumps(str(out / 'edge-data'))}\n\n"
        "[uplink]\n"
        f"nats_url = {json.dumps(leaf_url)}  # the site's leaf node (leaf.conf)\n\n"
        "[fleet]\n"
        f"trusted_keys_dir = {json.dumps(str(out / 'trusted_keys'))}\n"
        "require_signed_config = true  # remote config must be signed by config_signing.key\n"
    )


def enroll_site(
    data_dir: Path,
    site: str,
    out: Path,
    *,
    leaf_port: int = 4223,
    hub_leaf_url: str | None = None,
) -> Path:
    """Issue generation 1 (or the next one, re-enrolling a revoked site), let the hub
    accept it (reload), and write the site kit into `out`."""
    data_dir = Path(data_dir)
    site = validate_site(site)
    pki = load_pki(data_dir)
    kit = _KitOrder(pki, out, leaf_port, hub_leaf_url)
    with identities_lock(data_dir):  # the kit's generation is the one saved
        ids = load_identities(data_dir)
        if _holds_credentials(ids.sites.get(site)):
            raise ConfigError("site", f"{site} is already enrolled; use `aivos fleet rotate`")
        return _enroll_locked(data_dir, ids, site, kit)


def enroll_or_rotate_site(
    data_dir: Path, site: str, out: Path, *, leaf_port: int = 4223
) -> tuple[Path, bool]:
    """Enroll `site`, or rotate it when it holds a credential generation (`aivos up`: the
    hub's ports change from run to run, and a kit names them). Returns (kit, rotated).

    Decided holding the identities lock, so an enrolment by another process landing
    while this one waited for the lock makes this a rotation, not an error. A revoked
    site is refused (ClickException): only `aivos fleet enroll` re-enrolls it."""
    data_dir = Path(data_dir)
    site = validate_site(site)
    pki = load_pki(data_dir)
    kit = _KitOrder(pki, out, leaf_port, None)
    with identities_lock(data_dir):
        ids = load_identities(data_dir)
        ident = ids.sites.get(site)
        if ident is not None and ident.revoked:
            raise click.ClickException(
                f"site {site} is revoked; enroll it again with "
                f"`aivos fleet enroll {site} --data-dir {data_dir} --out DIR`"
            )
        if _holds_credentials(ident):
            return _rotate_locked(data_dir, ids, site, kit), True
        return _enroll_locked(data_dir, ids, site, kit), False


def _holds_credentials(ident: SiteIdentity | None) -> bool:
    """Whether the site has a generation the hub accepts (enrolled and not revoked)."""
    return ident is not None and not ident.revoked and bool(ident.generations)


def _enroll_locked(data_dir: Path, ids: Identities, site: str, kit: _KitOrder) -> Path:
    """Issue the site's first generation (or the one after those of a revoked enrolment),
    write its kit, save and reload the hub; the caller holds the identities lock."""
    ident = ids.sites.get(site)
    gens = [*(ident.generations if ident else []), *(ident.retiring if ident else [])]
    generation = max(gens or [0]) + 1
    out = _write_kit(kit, data_dir, site, generation)
    ids.sites[site] = SiteIdentity(generations=[generation], enrolled_ms=_now_ms())
    _save(data_dir, ids)
    reload_hub(data_dir)
    return out


def revoke_site(data_dir: Path, site: str) -> SiteIdentity:
    """Remove every credential of `site` from the hub and reload: its leaf is cut off."""
    with identities_lock(data_dir):  # a rotation running now cannot undo the revocation
        ids = load_identities(data_dir)
        ident = ids.sites.get(validate_site(site))
        if ident is None:
            raise NotFound(f"site {site} is not enrolled")
        cut = _site_leaf_names(site, [*ident.generations, *ident.retiring])
        ident.revoked, ident.revoked_ms = True, _now_ms()
        ident.retiring = []
        _save(data_dir, ids)
        reloaded = reload_hub(data_dir)
    if reloaded:
        time.sleep(0.2)  # let the reload land before the kick (the leaf redials in 1 s)
        kick_leaves(data_dir, cut)
    return ident


def rotate_site(
    data_dir: Path,
    site: str,
    out: Path,
    *,
    leaf_port: int = 4223,
    hub_leaf_url: str | None = None,
) -> Path:
    """A new credential generation in a new kit; the old ones keep working until the
    new one has connected (`retire_rotated` retires them)."""
    data_dir = Path(data_dir)
    site = validate_site(site)
    pki = load_pki(data_dir)
    kit = _KitOrder(pki, out, leaf_port, hub_leaf_url)
    with identities_lock(data_dir):  # a second rotation waits and issues the next one
        ids = load_identities(data_dir)
        ident = ids.sites.get(site)
        if ident is None or ident.revoked:
            raise NotFound(f"site {site} is not enrolled")
        return _rotate_locked(data_dir, ids, site, kit)


def _rotate_locked(data_dir: Path, ids: Identities, site: str, kit: _KitOrder) -> Path:
    """Issue the site's next generation, write its kit, keep the older ones until it
    connects, save and reload the hub; the caller holds the identities lock."""
    ident = ids.sites[site]
    generation = max([*ident.generations, *ident.retiring]) + 1
    out = _write_kit(kit, data_dir, site, generation)
    ident.retiring = sorted({*ident.retiring, *ident.generations})
    ident.generations = [generation]
    _save(data_dir, ids)
    reload_hub(data_dir)
    return out


def _connected_leaf_names(monitor_url: str) -> set[str]:
    return {str(leaf.get("name", "")) for leaf in _leafz(monitor_url)}


def retire_rotated(data_dir: Path, *, wait_s: float = 0.0) -> list[str]:
    """Retire old generations of every site whose newest generation is connected to the
    hub (seen in ``/leafz``), waiting up to `wait_s`; returns the sites retired."""
    monitors = _endpoints(data_dir).monitors
    if not monitors:
        raise ConfigError("nats.monitor_port", "retiring needs the hub's monitor port")
    deadline = time.monotonic() + wait_s
    while True:
        names: set[str] = set()  # asked before taking the lock: the hub may be slow
        for monitor in monitors:  # a hub cluster: the new leaf may be on any node
            with contextlib.suppress(OSError, ValueError):
                names |= _connected_leaf_names(monitor)
        cut: set[str] = set()
        with identities_lock(data_dir):  # held per round, never while waiting
            ids = load_identities(data_dir)
            pending = {s: i for s, i in ids.sites.items() if i.retiring and not i.revoked}
            retired = [
                site
                for site, ident in pending.items()
                if any(f"aivos-leaf-{site}-g{g}" in names for g in ident.generations)
            ]
            for site in retired:
                cut |= _site_leaf_names(site, ids.sites[site].retiring)
                ids.sites[site].retiring = []
            reloaded = False
            if retired:
                _save(data_dir, ids)
                reloaded = reload_hub(data_dir)
        if retired:
            if reloaded:
                time.sleep(0.2)
                kick_leaves(data_dir, cut)
            return retired
        if not pending or time.monotonic() >= deadline:
            return []
        time.sleep(0.1)


def _now_ms() -> int:
    return int(time.time() * 1000)
