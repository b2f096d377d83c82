"""`aivos nats config --cluster N`: N routed hub nodes, leaves that list every node."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from aivos.shared.errors import ConfigError
from aivos.shared.natsconf import HubConfig, LeafConfig, nats_server_binary, render_hub, render_leaf
from aivos.shared.natsconf.cli import nats_config_cmd
from aivos.shared.natsconf.render import CertFiles, hub_cluster


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


def test_secured_cluster_is_refused_not_rendered_open() -> None:
    tls = CertFiles(cert="c", key="k", ca="a")
    node = hub_cluster(HubConfig(store_dir="js", tls=tls), 3, store_root="x")[0]
    with pytest.raises(ConfigError):
        render_hub(node)


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
