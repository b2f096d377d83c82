"""`aivos nats config --cluster N`: N routed hub nodes, leaves that list every node."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from aivos.cli import cli
from aivos.shared.errors import ConfigError
from aivos.shared.natsconf import HubConfig, LeafConfig, nats_server_binary, render_hub, render_leaf
from aivos.shared.natsconf.cli import nats_config_cmd
from aivos.shared.natsconf.pki import init_pki
from aivos.shared.natsconf.render import ROUTE_USER, NodePorts, hub_cluster
from aivos.shared.natsconf.secure import secure_nodes, write_users_if_missing


def _valid(path: Path) -> None:
    result = subprocess.run(
        [str(nats_server_binary()), "-t", "-c", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_cluster_of_three_has_distinct_nodes_and_shared_routes(tmp_path: Path) -> None:
    base = HubConfig(store_dir="unused", port=4222, leaf_port=7422, monitor_port=8222)
    nodes = hub_cluster(base, 3, store_root=str(tmp_path), cluster_port=6222)
    assert [n.server_name for n in nodes] == ["aivos-hub-1", "aivos-hub-2", "aivos-hub-3"]
    assert [n.port for n in nodes] == [4222, 4223, 4224]
    assert [n.leaf_port for n in nodes] == [7422, 7423, 7424]
    assert [n.monitor_port for n in nodes] == [8222, 8223, 8224]
    assert len({n.store_dir for n in nodes}) == 3
    routes = (
        "nats-route://127.0.0.1:6222",
        "nats-route://127.0.0.1:6223",
        "nats-route://127.0.0.1:6224",
    )
    assert all(n.routes == routes for n in nodes)
    text = render_hub(nodes[1])
    assert 'listen: "127.0.0.1:6223"' in text and 'name: "aivos-hub"' in text
    assert all(f'"{r}"' in text for r in routes)
    assert 'domain: "hub"' in text and "sync_interval: always" in text
    (tmp_path / "hub-2.conf").write_text(text)
    _valid(tmp_path / "hub-2.conf")


def test_one_node_is_the_plain_hub() -> None:
    base = HubConfig(store_dir="js")
    assert hub_cluster(base, 1, store_root="x") == [base]
    assert "cluster" not in render_hub(base)
    with pytest.raises(ConfigError):
        hub_cluster(base, 0, store_root="x")


def test_leaf_lists_every_hub_node(tmp_path: Path) -> None:
    leaf = LeafConfig(
        site="b1",
        hub_leaf_url="nats-leaf://10.0.0.1:7422",
        hub_leaf_urls=("nats-leaf://10.0.0.2:7422", "nats-leaf://10.0.0.1:7422"),
    )
    assert leaf.hub_urls == ("nats-leaf://10.0.0.1:7422", "nats-leaf://10.0.0.2:7422")
    text = render_leaf(leaf)
    assert 'urls: ["nats-leaf://10.0.0.1:7422", "nats-leaf://10.0.0.2:7422"]' in text
    (tmp_path / "leaf.conf").write_text(text)
    _valid(tmp_path / "leaf.conf")


def test_secured_cluster_node_has_tls_routes_with_the_route_identity(tmp_path: Path) -> None:
    pki = init_pki(tmp_path / "d")
    ports = tuple(NodePorts(4222 + i, 7422 + i, 6222 + i, 8222 + i) for i in range(3))
    nodes = hub_cluster(HubConfig(store_dir="js"), 3, store_root=str(tmp_path), ports=ports)
    users = tmp_path / "users.conf"
    assert write_users_if_missing(users, "aivos-svc-system")
    secured = secure_nodes(pki, nodes, users_file="users.conf")  # relative to the config
    text = render_hub(secured[1])
    cluster = text[text.index("cluster {") :]
    assert "verify_and_map: true" in cluster and 'ca_file: "' in cluster
    assert f'authorization {{ user: "CN={ROUTE_USER}" }}' in cluster
    assert str(pki.node_files("aivos-hub-2").cert) in cluster
    assert text.count("verify_and_map: true") == 3  # client, leaf and route listeners
    # the node certificate: issued by the CA, the route identity, the node's hosts
    cert = x509.load_pem_x509_certificate(Path(secured[1].tls.cert).read_bytes())  # type: ignore[union-attr]
    assert cert.issuer == pki.cert.subject
    assert cert.subject.rfc4514_string() == f"CN={ROUTE_USER}"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    (tmp_path / "hub-2.conf").write_text(text)
    _valid(tmp_path / "hub-2.conf")


def test_cli_secure_cluster_renders_valid_tls_nodes(tmp_path: Path) -> None:
    out, data = tmp_path / "conf", tmp_path / "data"
    args = ["--out", str(out), "--cluster", "3", "--secure", str(data), "--host", "10.0.0.10"]
    result = CliRunner().invoke(nats_config_cmd, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.conf")) == ["hub-1.conf", "hub-2.conf", "hub-3.conf"]
    assert (data / "nats" / "users.conf").is_file()
    for i in (1, 2, 3):
        text = (out / f"hub-{i}.conf").read_text()
        assert 'include "../data/nats/users.conf"' in text and "nats-route://10.0.0.10:6222" in text
        assert str(data / "pki" / "nodes" / f"aivos-hub-{i}.crt") in text
        _valid(out / f"hub-{i}.conf")
    cert = x509.load_pem_x509_certificate((data / "pki/nodes/aivos-hub-1.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.10") in sans.get_values_for_type(x509.IPAddress)
    # sites of a secured hub come from enrollment, not from an open leaf config
    refused = CliRunner().invoke(nats_config_cmd, [*args, "--site", "b1"])
    assert refused.exit_code != 0 and "aivos fleet enroll" in refused.output
    # without --secure the open variant is unchanged
    assert "tls {" not in render_hub(hub_cluster(HubConfig(store_dir="js"), 3, store_root="x")[0])


def test_cli_cluster_writes_one_config_per_node(tmp_path: Path) -> None:
    out = tmp_path / "conf"
    result = CliRunner().invoke(
        nats_config_cmd, ["--out", str(out), "--cluster", "3", "--site", "b1"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.conf")) == [
        "hub-1.conf",
        "hub-2.conf",
        "hub-3.conf",
        "leaf-b1.conf",
    ]
    leaf = (out / "leaf-b1.conf").read_text()
    for port in (7422, 7423, 7424):
        assert f"nats-leaf://127.0.0.1:{port}" in leaf
    for name in ("hub-1.conf", "hub-3.conf", "leaf-b1.conf"):
        _valid(out / name)
    assert str(out / "hub-2-js") in (out / "hub-2.conf").read_text()


def test_secured_cluster_doc_example(tmp_path: Path) -> None:
    """docs/scaling.md, "Secured cluster": the two commands write three valid TLS nodes and
    a site kit whose leaf.conf dials every node."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    section = doc[doc.index("### Secured cluster") :]
    commands = re.findall(r"^\$ aivos (.*)$", section.split("```console")[1], flags=re.M)
    assert [c.split()[:2] for c in commands] == [["nats", "config"], ["fleet", "enroll"]]
    runner = CliRunner()
    for command in commands:
        args = command.replace("/etc/aivos/nats", str(tmp_path / "conf"))
        args = args.replace("/var/lib/aivos/cloud", str(tmp_path / "cloud"))
        args = args.replace("kit-branch-1", str(tmp_path / "kit"))
        result = runner.invoke(cli, args.split())
        assert result.exit_code == 0, result.output
    for i in (1, 2, 3):
        _valid(tmp_path / "conf" / f"hub-{i}.conf")
    leaf = (tmp_path / "kit" / "leaf.conf").read_text()
    assert all(f"nats-leaf://10.0.0.10:{port}" in leaf for port in (7422, 7423, 7424))
    assert "aivos-site-branch-1-1.crt" in leaf
