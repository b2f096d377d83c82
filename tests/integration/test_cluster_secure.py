"""A secured 3-node hub cluster (`secure_cluster_config`) with real nats-server processes
on loopback: TLS and certificate identities on every node, routes over mutual TLS with
the route identity, JetStream at R3, and a site's leaf (started from its enrollment kit)
that dials every node and fails over."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from aivos.cloud.fleet.enroll import (
    enroll_site,
    revoke_site,
    secure_cluster_config,
    service_identity,
)
from aivos.shared.natsconf import NatsServer, free_port, nats_server_binary
from aivos.shared.natsconf.connect import tls_context
from aivos.shared.natsconf.permissions import service_inbox_prefix, site_inbox_prefix, site_user
from aivos.shared.natsconf.pki import init_pki, load_pki
from aivos.shared.natsconf.render import CertFiles, HubConfig, HubUser, NodePorts
from aivos.shared.natsconf.server import NatsServerError
from aivos.shared.subjects import heartbeat_subject
from tests.fixtures.wait import eventually, eventually_sync

pytestmark = pytest.mark.asyncio


@dataclass
class Cluster:
    data_dir: Path
    nodes: list[NatsServer]
    leaf: subprocess.Popen[bytes] | None = None
    leaf_url: str = ""
    extra: list[NatsServer] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def alive(self) -> list[NatsServer]:
        return [node for node in self.nodes if node.running]

    async def admin(self) -> NATS:
        return await nats.connect(
            servers=[n.url for n in self.alive()],
            tls=tls_context(service_identity(self.data_dir, "admin")),
            inbox_prefix=service_inbox_prefix("admin"),
        )

    def start_leaf(self, site: str) -> None:
        port = free_port()
        kit = enroll_site(self.data_dir, site, self.data_dir / f"kit-{site}", leaf_port=port)
        log = (kit / "leaf.log").open("ab")
        self.leaf = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(kit / "leaf.conf")], stdout=log, stderr=log
        )
        log.close()
        self.leaf_url = f"nats://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.leaf is not None and self.leaf.poll() is None:
            self.leaf.terminate()
            self.leaf.wait(10)
        for node in [*self.extra, *self.nodes]:
            node.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as rig:
        yield rig


@contextlib.contextmanager
def running_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three secured nodes on free loopback ports, all ready; stopped on exit."""
    rig = _start_cluster(tmp_path)
    try:
        yield rig
    finally:
        rig.stop()


def _start_cluster(tmp_path: Path, attempts: int = 3) -> Cluster:
    """The picked ports are bound by the nodes later, in their own processes: when a node
    finds one taken meanwhile, all three start again on fresh ports (the others' routes
    name its ports), as `start_local_cluster` does."""
    for attempt in range(1, attempts + 1):
        ports = tuple(
            NodePorts(free_port(), free_port(), free_port(), free_port()) for _ in range(3)
        )
        confs = secure_cluster_config(tmp_path, 3, ports=ports)
        rig = Cluster(tmp_path, [NatsServer(conf, tmp_path / "nats") for conf in confs])
        try:
            for node in rig.nodes:  # together: JetStream needs a quorum of peers
                node.spawn()
            # all at once: `is_ready` raises as soon as a node has exited (the others would
            # wait for their peer until the timeout)
            eventually_sync(
                lambda nodes=rig.nodes: all([node.is_ready() for node in nodes]),
                timeout=120,
                interval=0.05,
                what="the three nodes ready",
            )
            return rig
        except BaseException as exc:
            rig.stop()
            taken = isinstance(exc, NatsServerError) and "address already in use" in str(exc)
            if attempt == attempts or not taken:
                raise
    raise AssertionError("unreachable")


def _monitor(node: NatsServer, path: str) -> dict[str, object]:
    url = f"http://{node.conf.host}:{node.conf.monitor_port}/{path}"
    with urllib.request.urlopen(url, timeout=2) as resp:
        return dict(json.loads(resp.read()))


def _peers(node: NatsServer) -> set[str]:
    """Server names of the nodes `node` has routes to (nats-server pools several routes
    per peer, so count names, not connections)."""
    routes = _monitor(node, "routez").get("routes") or []
    assert isinstance(routes, list)
    return {str(r.get("remote_name", "")) for r in routes}


async def _full_mesh(rig: Cluster) -> None:
    names = {n.conf.server_name for n in rig.alive()}  # type: ignore[union-attr]

    def meshed() -> bool:
        return all(_peers(n) == names - {n.conf.server_name} for n in rig.alive())  # type: ignore[union-attr]

    await eventually(
        meshed, timeout=120, what="every node routed to every other", ignore=(OSError,)
    )


async def _leaf_node(rig: Cluster) -> NatsServer:
    def holder() -> NatsServer | None:
        return next((n for n in rig.alive() if n.leafnode_count() >= 1), None)

    return await eventually(holder, timeout=120, what="the site's leaf link on some node")


async def _until_own_heartbeat(site_nc: NATS, got: list[Msg]) -> None:
    """Publish the site's own heartbeat until one reaches the subscription filling `got`.
    Interest crosses the routes and the leaf link asynchronously (`flush` answers when the
    subscriber's own node has it): until it has reached the leaf, the leaf drops what the
    site publishes, so a single publish proves nothing."""

    async def own_arrived() -> bool:
        await site_nc.publish(heartbeat_subject("a"), b"hb")
        await site_nc.flush()
        return any(msg.subject == heartbeat_subject("a") for msg in got)

    await eventually(own_arrived, timeout=120, interval=0.2, what="the site's own heartbeat")


async def _heartbeats_arrive(rig: Cluster, admin: NATS, site_nc: NATS) -> list[str]:
    """Until a heartbeat of the site's own reaches `admin`, return the subjects `admin`
    received."""
    got: list[Msg] = []

    async def cb(msg: Msg) -> None:
        got.append(msg)

    sub = await admin.subscribe("aivos.hb.*", cb=cb)
    await admin.flush()
    await _until_own_heartbeat(site_nc, got)
    await sub.unsubscribe()
    return [msg.subject for msg in got]


async def test_site_publishes_through_its_leaf_only_where_permitted(cluster: Cluster) -> None:
    await _full_mesh(cluster)
    cluster.start_leaf("a")
    await _leaf_node(cluster)
    admin = await cluster.admin()
    site_nc = await nats.connect(cluster.leaf_url, inbox_prefix=site_inbox_prefix("a"))
    try:
        got: list[Msg] = []

        async def cb(msg: Msg) -> None:
            got.append(msg)

        await admin.subscribe("aivos.hb.*", cb=cb)
        await admin.flush()
        # positive control first, on the subscription the check below uses: once one of the
        # site's own heartbeats has arrived, its interest has reached the leaf, and it stays
        # there while the subscription lives (a new one would have to cross again, and a
        # single publish made before it has would be dropped at the leaf)
        await _until_own_heartbeat(site_nc, got)
        # as site B (denied by the hub's permissions for the site), then its own, marked:
        # one path, so in order; once the marked one has arrived, B's would have arrived
        # before it had the hub let it through (earlier heartbeats may still be arriving:
        # only the marked one says that B's has been decided)
        await site_nc.publish(heartbeat_subject("b"), b"forged")
        await site_nc.publish(heartbeat_subject("a"), b"after-forged")
        await site_nc.flush()
        marked = (heartbeat_subject("a"), b"after-forged")
        await eventually(
            lambda: marked in [(msg.subject, msg.data) for msg in got],
            timeout=120,
            what="the own heartbeat sent after the forged one",
        )
        assert heartbeat_subject("b") not in {msg.subject for msg in got}
        # the kit dials every node's leaf URL over TLS with the site's certificate
        leaf_conf = (cluster.data_dir / "kit-a" / "leaf.conf").read_text()
        for node in cluster.nodes:
            assert f"nats-leaf://127.0.0.1:{node.conf.leaf_port}" in leaf_conf
        assert f"{site_user('a')}.crt" in leaf_conf
    finally:
        await site_nc.close()
        await admin.close()


async def test_plain_tcp_and_unknown_certificates_are_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    foreign = init_pki(tmp_path / "foreign").issue_client("aivos-svc-admin", tmp_path / "f")
    for node in cluster.nodes:
        plain = node.url.replace("tls://", "nats://")
        with pytest.raises(Exception):  # noqa: B017 - refused: any error nats-py raises
            await nats.connect(
                plain, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0
            )
        # TLS with a certificate of another CA (even an admin's name)
        ctx = tls_context(
            CertFiles(
                cert=foreign.cert, key=foreign.key, ca=load_pki(cluster.data_dir).ca_path.as_posix()
            )
        )
        with pytest.raises(Exception):  # noqa: B017
            await nats.connect(
                node.url,
                tls=ctx,
                allow_reconnect=False,
                connect_timeout=2,
                max_reconnect_attempts=0,
            )
    admin = await cluster.admin()  # and the control: the project's admin certificate works
    assert admin.is_connected
    await admin.close()


async def _spawn_rogue(tmp_path: Path, tls: CertFiles, routes: tuple[str, ...]) -> NatsServer:
    """A fourth hub node dialling `routes`, listening (never healthy: its JetStream has no
    quorum to join); started again on new ports when a free port was taken meanwhile."""
    for attempt in range(3):
        rogue = NatsServer(
            HubConfig(
                store_dir=str(tmp_path / "rogue-js"),
                port=free_port(),
                leaf_port=free_port(),
                monitor_port=free_port(),
                server_name="aivos-hub-rogue",
                tls=tls,
                users=(HubUser("aivos-svc-admin"),),
                cluster_port=free_port(),
                routes=routes,
            ),
            tmp_path / f"rogue-{attempt}",
        )
        rogue.spawn()

        def settled(rogue: NatsServer = rogue) -> str:
            if not rogue.running:
                return "exited"
            with (
                contextlib.suppress(OSError),
                socket.create_connection((rogue.conf.host, rogue.conf.port), timeout=0.5),
            ):
                return "listening"
            return ""

        if await eventually(settled, timeout=120, what="the rogue node") == "listening":
            return rogue
    raise AssertionError("the rogue node could not bind its ports")


@pytest.mark.parametrize("rogue_cert", ["foreign_ca", "site_certificate"])
async def test_route_without_the_route_identity_is_refused(
    cluster: Cluster, tmp_path: Path, rogue_cert: str
) -> None:
    """A fourth node dialling the cluster's routes (it trusts the project CA, so the
    refusal is the cluster's): with a certificate of another CA the TLS handshake fails;
    with a site's certificate of the project CA the route authorization fails."""
    await _full_mesh(cluster)
    ca = str(load_pki(cluster.data_dir).ca_path)
    if rogue_cert == "foreign_ca":
        own = init_pki(tmp_path / "rogue-ca").issue_node("aivos-hub-9", ["127.0.0.1"])
    else:
        own = load_pki(cluster.data_dir).issue_client(site_user("a"), tmp_path / "stolen")
    logs = {n.conf.server_name: n.log_path.stat().st_size for n in cluster.nodes}  # type: ignore[union-attr]
    base = cluster.nodes[0].conf
    assert isinstance(base, HubConfig)
    rogue = await _spawn_rogue(tmp_path, CertFiles(cert=own.cert, key=own.key, ca=ca), base.routes)
    cluster.extra.append(rogue)
    refusal = (
        "TLS route handshake error"
        if rogue_cert == "foreign_ca"
        else "Router connection closed: Authentication Failure"
    )

    def refused_somewhere() -> bool:
        for node in cluster.nodes:
            with node.log_path.open("rb") as fh:
                fh.seek(logs[node.conf.server_name])  # type: ignore[union-attr]
                if refusal.encode() in fh.read():
                    return True
        return False

    await eventually(refused_somewhere, timeout=120, what=f"a route refusal ({refusal})")
    names = {n.conf.server_name for n in cluster.nodes}  # type: ignore[union-attr]
    for node in cluster.nodes:
        assert _peers(node) == names - {node.conf.server_name}  # type: ignore[union-attr]
    rogue_routes = await eventually(
        lambda: _monitor(rogue, "routez"),
        timeout=120,
        what="the rogue's /routez",
        ignore=(OSError,),
    )
    assert rogue_routes.get("num_routes") == 0


async def test_r3_stream_keeps_a_message_across_a_sigkill(cluster: Cluster) -> None:
    await _full_mesh(cluster)
    admin = await cluster.admin()
    try:
        js = admin.jetstream()

        async def created() -> bool:
            await js.add_stream(
                StreamConfig(name="SECTEST", subjects=["sectest.>"], num_replicas=3)
            )
            return True

        await eventually(created, timeout=120, what="an R3 stream", ignore=(Exception,))
        ack = await js.publish("sectest.one", b"kept")
        info = await js.stream_info("SECTEST")
        assert info.config.num_replicas == 3 and info.cluster is not None
        leader = next(n for n in cluster.nodes if n.conf.server_name == info.cluster.leader)  # type: ignore[union-attr]
    finally:
        await admin.close()
    leader.kill()  # SIGKILL of the stream's leader
    survivor = await cluster.admin()
    try:
        js = survivor.jetstream()

        async def read_back() -> bytes | None:
            msg = await js.get_msg("SECTEST", ack.seq)
            return msg.data

        assert (
            await eventually(read_back, timeout=120, what="the message", ignore=(Exception,))
            == b"kept"
        )
    finally:
        await survivor.close()


async def test_leaf_fails_over_when_its_node_dies(cluster: Cluster) -> None:
    await _full_mesh(cluster)
    cluster.start_leaf("a")
    first = await _leaf_node(cluster)
    first.kill()
    second = await _leaf_node(cluster)
    assert second is not first
    admin = await cluster.admin()
    site_nc = await nats.connect(cluster.leaf_url, inbox_prefix=site_inbox_prefix("a"))
    try:  # the site's traffic flows again, through the surviving nodes
        assert heartbeat_subject("a") in await _heartbeats_arrive(cluster, admin, site_nc)
    finally:
        await site_nc.close()
        await admin.close()


async def test_revocation_cuts_the_leaf_on_whichever_node_holds_it(cluster: Cluster) -> None:
    await _full_mesh(cluster)
    cluster.start_leaf("a")
    holder = await _leaf_node(cluster)
    # reloads every node, then kicks the link where it is (its own event loop: a thread)
    await asyncio.to_thread(revoke_site, cluster.data_dir, "a")

    def cut() -> bool:
        return all(n.leafnode_count() == 0 for n in cluster.nodes)

    await eventually(cut, timeout=120, what="no leaf link on any node")
    refused = "authorization"
    assert any(refused in n.log_path.read_text(errors="replace").lower() for n in cluster.nodes)
    assert holder.running
