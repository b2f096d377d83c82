"""`aivos up` picks its services' ports with `free_port` and the services bind them later, in
their own processes: a service whose port was taken in between is started again on fresh
ports (the same race failed CI once for nats-server: ``bind: address already in use``). So
are the nodes of `--hub-nodes N` (all of them: the others' routes name the failed node's
ports) and the site's leaf node (enrolled again: its kit names its port)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import httpx
import pytest

from aivos import up, up_scale
from aivos.cloud.fleet.enroll import load_identities
from tests.fixtures.wait import eventually_sync

pytestmark = pytest.mark.slow


def _hand_out_taken(
    monkeypatch: pytest.MonkeyPatch, taken: int, module: object = up, after: int = 0
) -> None:
    """The port `module` (`up` or `up_scale`) picks after `after` others is `taken`; the
    ones before and after it are free."""
    real = up.free_port
    picked = {"count": 0}

    def pick(host: str = "127.0.0.1") -> int:
        picked["count"] += 1
        return taken if picked["count"] == after + 1 else real(host)

    monkeypatch.setattr(module, "free_port", pick)


def test_hub_and_console_start_again_on_fresh_ports_when_a_picked_one_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    data = tmp_path / "up"
    app = up.Appliance(data, "site-1", 0, False, data)
    try:
        _hand_out_taken(monkeypatch, taken_port)  # the hub's client port
        app.start_nats()
        assert app.hub is not None and app.hub.conf.port != taken_port
        assert "address already in use" in (data / "logs" / "hub.log").read_text()
        assert app.hub.leafnode_count() >= 1  # the site's leaf found the hub where it runs
        _hand_out_taken(monkeypatch, taken_port)  # the console's port
        app.start_cloud()
        console_url = app.lines["console"]
        assert not console_url.endswith(f":{taken_port}")
        assert httpx.get(f"{console_url}/healthz", timeout=10).status_code == 200
        assert "address already in use" in (data / "logs" / "console.log").read_text().lower()
        # one child per service: the failed starts are not stopped again, nor watched
        names = sorted(child.name for child in app.children)
        assert names.count("hub") == 1 and names.count("console") == 1
        app._check_alive()
    finally:
        app.stop()


def test_hub_nodes_and_the_leaf_start_again_on_fresh_ports_when_a_picked_one_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    data = tmp_path / "up"
    app = up.Appliance(data, "site-1", 0, False, data, hub_nodes=3)
    # node 2's client port (each node picks 4) and the site leaf's port (the first `up`
    # picks for the cluster start)
    _hand_out_taken(monkeypatch, taken_port, up_scale, after=4)
    _hand_out_taken(monkeypatch, taken_port, up)
    try:
        app.start_nats()
        logs = data / "logs"
        assert "address already in use" in (logs / "hub-2.log").read_text()
        assert "address already in use" in (logs / "leaf.log").read_text()
        hubs = app.lines["hub"].split(",")
        assert len(hubs) == 3 and not any(u.endswith(f":{taken_port}") for u in hubs)
        # the nodes of the second start found each other (hub.json: what the kit dials)
        monitors = json.loads((data / "nats" / "hub.json").read_text())["monitor_urls"]
        assert len(monitors) == 3
        for monitor in monitors:
            eventually_sync(
                lambda m=monitor: httpx.get(f"{m}/routez", timeout=10).json()["num_routes"] >= 2,
                timeout=60,
                what=f"{monitor} routed to the two other nodes",
            )
        assert app.leaf_url is not None and not app.leaf_url.endswith(f":{taken_port}")
        # the leaf runs on the second generation; the first (its port taken) is retired
        ident = load_identities(data).sites["site-1"]
        assert (ident.generations, ident.retiring) == ([2], [])
        # one child per service: the failed starts are stopped and not watched
        names = sorted(child.name for child in app.children)
        assert names == ["hub-1", "hub-2", "hub-3", "leaf"], names
        app._check_alive()
    finally:
        app.stop()


def test_an_operators_edge_port_that_is_taken_fails_with_the_edges_log(
    tmp_path: Path, taken_port: int
) -> None:
    """A port the operator chose is never swapped for another: `up` stops and says why."""
    data = tmp_path / "up"
    app = up.Appliance(data, "site-1", taken_port, True, data)
    try:
        with pytest.raises(click.ClickException) as failed:
            app._start_listening(
                "edge",
                "edge agent",
                lambda: _spawn_python_listener(app, taken_port),
                60,
                attempts=1,
            )
        assert "address already in use" in failed.value.message.lower()
    finally:
        app.stop()


def _spawn_python_listener(app: up.Appliance, port: int) -> object:
    """A child that binds `port` the way a service does (and exits when it cannot)."""
    code = f"import socket; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); input()"
    app._spawn_argv("edge", [sys.executable, "-c", code])
    return lambda: False
