"""Local hubs and clusters survive a port taken between picking it and nats-server binding it
(CI once failed on exactly that: ``bind: address already in use`` on a cluster port)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aivos.shared.natsconf import server as natsserver

pytestmark = pytest.mark.slow


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [natsserver.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def _ephemeral_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text(text)
    monkeypatch.setattr(natsserver, "_EPHEMERAL_RANGE", path)


def test_free_port_is_picked_below_the_ephemeral_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outgoing connection of any process takes an ephemeral port: a port picked there
    could be gone before nats-server binds it (the CI failure). Below it, nobody gets one
    without asking for it by number."""
    _ephemeral_range(tmp_path, monkeypatch, "40000\t60999\n")
    ports = [natsserver.free_port() for _ in range(200)]
    assert all(20000 <= port < 40000 for port in ports), ports
    assert len(set(ports)) == len(ports)


def test_free_port_skips_a_low_port_someone_listens_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listening = []
    for port in range(30000, 30100):  # the first 100 of a span of 2000: all taken
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:  # someone else's: taken as well
            sock.close()
            continue
        sock.listen()
        listening.append(sock)
    monkeypatch.setattr(natsserver, "_LOW_PORTS_FROM", 30000)
    _ephemeral_range(tmp_path, monkeypatch, "32000 60999")
    try:
        ports = [natsserver.free_port() for _ in range(100)]
    finally:
        for sock in listening:
            sock.close()
    assert all(30100 <= port < 32000 for port in ports), ports


@pytest.mark.parametrize("text", ["1024 65535", "not a range"])
def test_free_port_lets_the_os_pick_without_room_below_the_ephemeral_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    _ephemeral_range(tmp_path, monkeypatch, text)
    port = natsserver.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # free, as promised


def _first_pick_taken(monkeypatch: pytest.MonkeyPatch, taken: int, nth: int) -> None:
    """The `nth` port picked is one that another process has bound meanwhile."""
    real = natsserver.free_port
    calls = {"n": 0}

    def pick(host: str = "127.0.0.1") -> int:
        calls["n"] += 1
        return taken if calls["n"] == nth else real(host)

    monkeypatch.setattr(natsserver, "free_port", pick)


def test_local_hub_starts_on_fresh_ports_when_one_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    _first_pick_taken(monkeypatch, taken_port, nth=1)
    hub = natsserver.start_local_hub(tmp_path)
    try:
        assert hub.running and hub.conf.port != taken_port
        assert "address already in use" in (tmp_path / "hub.log").read_text()
    finally:
        hub.stop()


def test_local_cluster_starts_on_fresh_ports_when_a_route_port_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    _first_pick_taken(monkeypatch, taken_port, nth=8)  # node 2's cluster (route) port
    nodes = natsserver.start_local_cluster(tmp_path, nodes=3)
    try:
        assert all(node.running for node in nodes)
        assert taken_port not in {node.conf.cluster_port for node in nodes}
    finally:
        for node in nodes:
            node.stop()
