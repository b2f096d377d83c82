"""`aivos nats rotate-cert`: a running node of the secured 3-node hub cluster gets a new
certificate from the same CA and reloads (SIGHUP) without a restart.

Real nats-server processes on loopback. The node that holds the site's leaf link and an
admin client is rotated: both connections stay up (same connection ids, no reconnect) and
carry traffic; every listener of the node (client, leaf, route) then serves the new
certificate in a new TLS handshake; a peer node restarted afterwards routes to it again
(the route identity verifies through the CA); a certificate of another CA is refused,
both as the replacement and from a client."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aivos.cloud.fleet.enroll import service_identity
from aivos.shared.natsconf import NatsServer
from aivos.shared.natsconf.connect import tls_context
from aivos.shared.natsconf.permissions import service_inbox_prefix, site_inbox_prefix
from aivos.shared.natsconf.pki import init_pki
from aivos.shared.natsconf.render import CertFiles, HubConfig
from aivos.shared.natsconf.rotate import node_cert
from aivos.shared.subjects import heartbeat_subject
from tests.fixtures.wait import eventually
from tests.integration.test_cluster_secure import (
    Cluster,
    _full_mesh,
    _heartbeats_arrive,
    _leaf_node,
    _monitor,
    running_cluster,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path / "hub") as rig:
        yield rig


def aivos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aivos", *args], capture_output=True, text=True, timeout=120
    )


def served(port: int, client: CertFiles, *, tls_first: bool = False) -> bytes:
    """The DER certificate a node serves on `port` in a new TLS handshake (client and leaf
    ports send a plain INFO line first; a route port starts with TLS)."""
    ctx = ssl.create_default_context(cafile=client.ca)
    ctx.load_cert_chain(client.cert, client.key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        if not tls_first:
            raw.makefile("rb").readline()
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            peer_der = sock.getpeercert(binary_form=True)
    assert peer_der is not None
    return peer_der


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def fingerprint(cert_der: bytes) -> str:
    return hashlib.sha256(cert_der).hexdigest()


def leaf_ids(node: NatsServer) -> list[int]:
    leafs = _monitor(node, "leafz").get("leafs") or []
    assert isinstance(leafs, list)
    return sorted(int(leaf["id"]) for leaf in leafs)


async def test_rotated_node_keeps_its_connections_and_serves_the_new_cert(
    cluster: Cluster, tmp_path: Path
) -> None:
    await _full_mesh(cluster)
    cluster.start_leaf("a")
    node = await _leaf_node(cluster)  # rotate the node that holds the site's leaf link
    conf = node.conf
    assert isinstance(conf, HubConfig) and node.pid is not None
    admin_files = service_identity(cluster.data_dir, "admin")
    files = node_cert(node.config_path)
    old = files.cert.read_bytes()
    ports = {"client": conf.port, "leaf": conf.leaf_port, "route": conf.cluster_port}
    for name, port in ports.items():
        assert served(port, admin_files, tls_first=name == "route") == der(files.cert.read_bytes())

    # established before the rotation: an admin client pinned to the node, the leaf link
    admin = await nats.connect(
        conf.url,
        tls=tls_context(admin_files),
        inbox_prefix=service_inbox_prefix("admin"),
    )
    site_nc = await nats.connect(cluster.leaf_url, inbox_prefix=site_inbox_prefix("a"))
    leaves_before = leaf_ids(node)
    admin_cid = admin.client_id  # the server's id of this connection
    try:
        done = aivos("nats", "rotate-cert", "--config", str(node.config_path))
        assert done.returncode == 0, done.stderr
        assert f"reloaded (pid {node.pid})" in done.stdout
        new = files.cert.read_bytes()
        assert new != old
        old_cert, new_cert = map(x509.load_pem_x509_certificate, (old, new))
        assert new_cert.serial_number != old_cert.serial_number
        assert new_cert.subject == old_cert.subject and new_cert.issuer == old_cert.issuer
        san = x509.SubjectAlternativeName
        assert (
            new_cert.extensions.get_extension_for_class(san).value
            == old_cert.extensions.get_extension_for_class(san).value
        )

        # new handshakes on every listener get the new certificate, once the reload ran
        new_der = der(files.cert.read_bytes())

        def serving_new() -> bool:
            return all(
                served(port, admin_files, tls_first=name == "route") == new_der
                for name, port in ports.items()
            )

        await eventually(serving_new, timeout=30, what="the new certificate on every listener")
        assert fingerprint(new_der) != fingerprint(der(old))
        assert node.running and node.pid is not None  # reloaded, not restarted

        # the connections made before are the same ones, and they still carry traffic
        assert admin.is_connected and admin.stats["reconnects"] == 0
        assert admin.client_id == admin_cid
        assert leaf_ids(node) == leaves_before
        assert heartbeat_subject("a") in await _heartbeats_arrive(cluster, admin, site_nc)
        assert leaf_ids(node) == leaves_before
    finally:
        await site_nc.close()
        await admin.close()

    # a new client connection verifies the new certificate against the CA
    fresh = await nats.connect(
        conf.url, tls=tls_context(admin_files), inbox_prefix=service_inbox_prefix("admin")
    )
    assert fresh.is_connected
    await fresh.close()

    # a peer restarted now dials the rotated node's route and accepts its certificate
    peer = next(n for n in cluster.nodes if n is not node)
    peer.stop()
    peer.spawn()
    peer.wait_ready(30)
    await _full_mesh(cluster)

    # another CA: refused as the replacement (nothing written) and from a client
    foreign = init_pki(tmp_path / "foreign").issue_node("aivos-hub-9", ["127.0.0.1"])
    refused = aivos(
        "nats",
        "rotate-cert",
        "--config",
        str(node.config_path),
        "--cert",
        foreign.cert,
        "--key",
        foreign.key,
    )
    assert refused.returncode == 1
    assert "not issued by the node's CA" in refused.stderr
    assert files.cert.read_bytes() == new
    foreign_client = init_pki(tmp_path / "foreign").issue_client(
        "aivos-svc-admin", tmp_path / "foreign-client"
    )
    with pytest.raises(Exception):  # noqa: B017 - refused: any error nats-py raises
        await nats.connect(
            conf.url,
            tls=tls_context(
                CertFiles(cert=foreign_client.cert, key=foreign_client.key, ca=admin_files.ca)
            ),
            allow_reconnect=False,
            connect_timeout=2,
            max_reconnect_attempts=0,
        )
