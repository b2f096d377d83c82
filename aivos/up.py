"""`aivos up`: the whole appliance on one machine, for trying it out and for demos.

Starts, all on 127.0.0.1: a cloud hub (nats-server with JetStream), the site's leaf node,
a generation worker, the cloud ingest, the fleet console (when installed) and the edge
agent; builds the default model bundle first if it is missing. Prints `NAME: URL` lines,
a client token and an operator token, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx
from rich.console import Console

from aivos.shared.cli_options import data_dir_option, port_option, site_option
from aivos.shared.natsconf.render import HubConfig, LeafConfig
from aivos.shared.natsconf.server import NatsServer, free_port
from aivos.shared.paths import aivos_home, default_bundle_dir, default_cloud_dir

__all__ = ["up_cmd", "Appliance"]

console = Console(stderr=True)


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Appliance:
    data_dir: Path
    site: str
    edge_port: int
    edge_only: bool
    # the cloud store and fleet registry: `aivos cloud stats/audit --data-dir` read it here
    cloud_dir: Path
    demo: bool = False
    hub: NatsServer | None = None
    leaf: NatsServer | None = None
    children: list[_Child] = field(default_factory=list)
    lines: dict[str, str] = field(default_factory=dict)

    # ----- helpers ---------------------------------------------------------------------------

    def _spawn(
        self, name: str, *args: str, env: dict[str, str] | None = None, module: str = "aivos"
    ) -> _Child:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        handle = log.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches us; we stop children in order
        )
        child = _Child(name, proc, log)
        self.children.append(child)
        return child

    def _check_alive(self) -> None:
        for child in self.children:
            if child.proc.poll() is not None:
                tail = child.log.read_text(errors="replace")[-2000:] if child.log.exists() else ""
                raise click.ClickException(
                    f"{child.name} exited with {child.proc.returncode}; log {child.log}:\n{tail}"
                )

    def _wait(self, what: str, probe: object, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if probe():  # type: ignore[operator]
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise click.ClickException(
            f"{what} did not become ready within {timeout_s:.0f}s (logs in {self.data_dir / 'logs'})"
        )

    # ----- steps -----------------------------------------------------------------------------

    def ensure_bundle(self) -> Path:
        bundle = default_bundle_dir()
        if (bundle / "manifest.json").exists():
            return bundle
        console.print(
            f"[bold]No model bundle at {bundle}: building it now (one time, a few minutes).[/bold]"
        )
        code = subprocess.call([sys.executable, "-m", "aivos", "models", "build"])
        if code != 0:
            raise click.ClickException("the model build failed; see the output above")
        return bundle

    def start_nats(self) -> None:
        nats_dir = self.data_dir / "nats"
        hub_conf = HubConfig(
            store_dir=str(nats_dir / "hub-js"), port=free_port(), leaf_port=free_port()
        )
        self.hub = NatsServer(hub_conf, nats_dir).start()
        leaf_conf = LeafConfig(
            site=self.site,
            hub_leaf_url=self.hub.leaf_url,
            port=free_port(),
            monitor_port=free_port(),
        )
        self.leaf = NatsServer(leaf_conf, nats_dir).start()
        self.leaf.wait_leafnodes(1)
        self.lines["hub"] = self.hub.url
        self.lines["leaf"] = self.leaf.url

    def start_cloud(self) -> None:
        assert self.hub is not None
        self._spawn("worker", "cloud", "worker", "--nats", self.hub.url)
        cloud_dir = self.cloud_dir
        if _has_module("aivos.cloud.ingest.cli"):
            self._spawn(
                "ingest", "cloud", "ingest", "--nats", self.hub.url, "--data-dir", str(cloud_dir)
            )
        if _has_module("aivos.cloud.console.app"):
            port = free_port()
            self._spawn(
                "console",
                "cloud",
                "console",
                "--nats",
                self.hub.url,
                "--data-dir",
                str(cloud_dir),
                "--port",
                str(port),
            )
            url = f"http://127.0.0.1:{port}"
            self._wait(
                "console", lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 60
            )
            self.lines["console"] = url
            token = _operator_token(cloud_dir)
            if token:
                self.lines["operator-token"] = token

    def start_edge(self, bundle: Path) -> None:
        edge_dir = self.data_dir / "edge"
        edge_dir.mkdir(parents=True, exist_ok=True)
        config = edge_dir / "config.toml"
        lines = [f'site_id = "{self.site}"', "[server]", "json_logs = true"]
        if self.leaf is not None:
            lines += ["[uplink]", f'nats_url = "{self.leaf.url}"']
        if self.demo:
            lines += self._start_demo_services()
        config.write_text("\n".join(lines) + "\n")
        port = self.edge_port or free_port()
        self._spawn(
            "edge",
            "edge",
            "serve",
            "--data-dir",
            str(edge_dir),
            "--bundle",
            str(bundle),
            "--config",
            str(config),
            "--port",
            str(port),
        )
        url = f"http://127.0.0.1:{port}"
        self._wait(
            "edge agent", lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200, 120
        )
        self.lines["edge"] = url
        self.lines["token"] = _client_token(edge_dir)

    def _start_demo_services(self) -> list[str]:
        """The fake core-banking system and the example workflow (the support scenario)."""
        from aivos.edge.workflows.demo import SECRETS_FILE, WORKFLOWS_DIR

        port = free_port()
        self._spawn("corebank", "--port", str(port), module="aivos.edge.workflows.demo.corebank")
        url = f"http://127.0.0.1:{port}"
        self._wait(
            "demo core-banking service", lambda: httpx.get(url, timeout=1).status_code < 500, 30
        )
        self.lines["corebank"] = url
        return [
            "[workflows]",
            f"directory = {json.dumps(str(WORKFLOWS_DIR))}",
            f"secrets_file = {json.dumps(str(SECRETS_FILE))}",
            "[workflows.connectors.corebank]",
            f'base_url = "{url}"',
            'credential = "corebank"',
        ]

    def wait_for_worker(self) -> None:
        """Ready means an escalation can be answered: probe the worker over NATS."""
        import asyncio

        import nats

        from aivos.edge.uplink.generation import generate
        from aivos.shared.messages import GenerateRequest

        assert self.leaf is not None
        leaf_url = self.leaf.url

        async def probe() -> bool:
            nc = await nats.connect(leaf_url)
            try:
                req = GenerateRequest(
                    request_id="up-probe", site=self.site, prompt="hi", max_tokens=1
                )
                await generate(nc, req, timeout_s=5)
                return True
            finally:
                await nc.close()

        self._wait("generation worker", lambda: asyncio.run(probe()), 180)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.proc.kill()
        for server in (self.leaf, self.hub):
            if server is not None:
                server.stop()


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _client_token(edge_dir: Path) -> str:
    """A client token for this appliance, kept in edge/up-token (0600) and reused while valid."""
    from aivos.edge.store import Store

    saved = edge_dir / "up-token"
    store = Store.open(edge_dir)
    try:
        if saved.exists():
            token = saved.read_text().strip()
            if store.authenticate(token) is not None:
                return token
        _, token = store.create_token_sync("client", f"up-client-{int(time.time())}")
    finally:
        store.close()
    saved.write_text(token)
    saved.chmod(0o600)
    return token


def _operator_token(cloud_dir: Path) -> str | None:
    try:
        from aivos.cloud.fleet.tokens import create_operator_token  # type: ignore[import-not-found]
    except ImportError:
        return None
    token: str = create_operator_token(cloud_dir)
    return token


@contextlib.contextmanager
def _signals_as_keyboard_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("up")
@data_dir_option("Default: $AIVOS_HOME/appliance.")
@port_option("Edge agent port (0 = any free port).", default=8080)
@click.option("--edge-only", is_flag=True, help="Run the box alone: no NATS, no cloud tier.")
@site_option("Site id of the local box.", default="site-1")
@click.option("--demo", is_flag=True, help="Also start the demo workflow services.")
def up_cmd(data_dir: Path | None, port: int, edge_only: bool, site: str, demo: bool) -> None:
    """Run the whole appliance on this machine until Ctrl-C."""
    # Given --data-dir D, everything lives under D and the cloud tier's store is D itself
    # (so `aivos cloud stats --data-dir D` reads it); by default the cloud store is the
    # default of the `aivos cloud` commands.
    cloud_dir = data_dir or default_cloud_dir()
    data_dir = data_dir or aivos_home() / "appliance"
    data_dir.mkdir(parents=True, exist_ok=True)
    app = Appliance(
        data_dir=data_dir,
        site=site,
        edge_port=port,
        edge_only=edge_only,
        cloud_dir=cloud_dir,
        demo=demo,
    )
    with _signals_as_keyboard_interrupt():
        try:
            bundle = app.ensure_bundle()
            with console.status("starting the appliance…"):
                if not edge_only:
                    app.start_nats()
                    app.start_cloud()
                app.start_edge(bundle)
                if not edge_only:
                    app.wait_for_worker()
            for name in ("edge", "token", "console", "operator-token", "hub", "leaf", "corebank"):
                if name in app.lines:
                    click.echo(f"{name}: {app.lines[name]}")
            sys.stdout.flush()
            session = aivos_home() / "up.json"
            session.write_text(json.dumps({"edge": app.lines["edge"], "token": app.lines["token"]}))
            session.chmod(0o600)
            console.print(
                f'[green]ready[/green] — try: aivos ask "what are your opening hours"   (logs: {data_dir / "logs"})'
            )
            while True:
                app._check_alive()
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping…")
        finally:
            app.stop()
            with contextlib.suppress(FileNotFoundError):
                (aivos_home() / "up.json").unlink()
