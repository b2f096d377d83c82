"""`aivos up` picks its services' ports with `free_port` and the services bind them later, in
their own processes: a service whose port was taken in between is started again on fresh
ports (the same race failed CI once for nats-server: ``bind: address already in use``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import httpx
import pytest

from aivos import up

pytestmark = pytest.mark.slow


def _hand_out_taken(monkeypatch: pytest.MonkeyPatch, taken: int) -> None:
    """The next port `up` picks is `taken`; the ones after it are free."""
    real = up.free_port
    handed = {"taken": False}

    def pick(host: str = "127.0.0.1") -> int:
        if not handed["taken"]:
            handed["taken"] = True
            return taken
        return real(host)

    monkeypatch.setattr(up, "free_port", pick)


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
