"""`aivos up`: the whole appliance on one machine, for trying it out and for demos.

Starts, all on 127.0.0.1: a cloud hub (nats-server with JetStream), the site's leaf node,
a generation worker, the cloud ingest, the fleet console (when installed) and the edge
agent; builds the default model bundle first if it is missing. Prints `NAME: URL` lines,
a client token and an operator token, and stops everything on Ctrl-C.

The first run answers in minutes (docs/install.md, "First run"): with no bundle it serves a
quick one (frozen encoder + trained head, built without torch) and builds the full bundle in
the background, which then replaces it: published and rolled out to the local site through
the fleet (the edge verifies it and re-embeds its index), or with `--edge-only` by restarting
the edge on it. While `scripts/up` still installs in the background, the worker waits for
llama-cpp-python (escalations wait on the edge as durable jobs) and the full build for torch.

Secure by default (docs/security.md): the hub requires TLS and a client certificate of
the appliance's private CA (kept in the cloud data dir, ``D/pki``); the local site is
enrolled like any branch (its kit in ``DATA_DIR/site-kit``, its leaf started from the
kit's ``leaf.conf``; a later `aivos up` rotates it), and the worker, the ingest and the
console each connect with their own certificate and least privilege.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx
from rich.console import Console

from aivos.shared.bundle import load_bundle_manifest, staged_bundle
from aivos.shared.cli_options import data_dir_option, port_option, site_option
from aivos.shared.natsconf.permissions import site_inbox_prefix
from aivos.shared.natsconf.server import NatsServer, free_port, nats_server_binary
from aivos.shared.paths import aivos_home, default_bundle_dir, default_cloud_dir
from aivos.up_scale import cloud_args, operator_token_in, scale_options, start_cluster

__all__ = ["up_cmd", "Appliance"]

console = Console(stderr=True)

# the example documents of a clone (a wheel has none: `up` then starts with an empty index)
_EXAMPLE_KB = Path(__file__).resolve().parents[1] / "docs" / "examples" / "kb"

# stopped in this order, each stage gone before the next starts: the edge (it uses all the
# others), the cloud services, the site's leaf node, and last the hub they all talk through
_STOP_STAGES = (("edge",), ("corebank", "console", "ingest", "worker"), ("leaf",), ("hub",))
_STOP_WAIT_S = 15.0  # a stopping service is SIGKILLed after this long, but the pools: see
_POOLS_CLOSE_S = 10.0  # `_stop_wait_s`

# set by scripts/up while it installs llama-cpp-python / the full build's packages (torch ...)
# in the background; `LOG.exit` holds pip's exit status once it is done
GENERATOR_LOG_ENV = "AIVOS_UP_GENERATOR_LOG"
BUILD_DEPS_LOG_ENV = "AIVOS_UP_BUILD_DEPS_LOG"
_FULL_BUILD_MODULES = ("torch", "transformers", "optimum")  # what the full build imports
_QUICK_BUILD = "aivos.cloud.modelbuild.quick"  # the first run's bundles and their build cache
_NOTE_EVERY_S = 20.0  # how often a background step says where it is
# starts of a service whose port (picked by `free_port`, bound by the child) was taken by
# someone else in between; each start picks fresh ports
_PORT_ATTEMPTS = 3
_PORT_TAKEN = "address already in use"  # nats-server's and uvicorn's words for it


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
    hub_nodes: int = 1  # > 1: a secured routed local cluster (aivos.up_scale)
    cloud_db: str | None = None  # the cloud stores in PostgreSQL (--cloud-db)
    hub: NatsServer | None = None
    leaf_url: str | None = None  # the site's leaf node (started from its kit)
    kit: Path | None = None  # the site's enrollment kit
    children: list[_Child] = field(default_factory=list)
    lines: dict[str, str] = field(default_factory=dict)
    train_data: Path | None = None  # the first run's training data (default: CLINC150)
    build: _Child | None = None  # the full bundle building in the background (not a service)
    swapping_to: str | None = None  # the full bundle's version until the edge serves it
    generator_log: Path | None = None  # llama-cpp-python still installing (scripts/up)
    build_deps_log: Path | None = None  # the full build's packages still installing (scripts/up)
    quick_version: str | None = None  # the quick bundle served while the full one is missing
    _noted: float = 0.0

    # ----- helpers ---------------------------------------------------------------------------

    def _spawn(
        self, name: str, *args: str, env: dict[str, str] | None = None, module: str = "aivos"
    ) -> _Child:
        return self._spawn_argv(name, [sys.executable, "-m", module, *args], env=env)

    def _spawn_argv(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, service: bool = True
    ) -> _Child:
        """Start `argv` with its output in logs/NAME.log; a service is watched by
        `_check_alive` and stopped in its `_STOP_STAGES` stage, a one-off job is not."""
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        handle = log.open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches us; we stop children in order
        )
        child = _Child(name, proc, log)
        if service:
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

    def _start_listening(
        self,
        names: str | tuple[str, ...],
        what: str,
        spawn: Callable[[], Callable[[], bool]],
        timeout_s: float,
        *,
        attempts: int = _PORT_ATTEMPTS,
    ) -> None:
        """Start the service `names` (one child, or the children started together, such as
        a cluster's nodes) with `spawn` (it picks the ports, spawns the children and returns
        their readiness probe) and wait until it is ready. When a child exits because a
        picked port was bound by someone else meanwhile, all of them are started again on
        fresh ports (the others may name its ports), up to `attempts` starts in all (1: the
        port is the operator's, not picked)."""
        names = (names,) if isinstance(names, str) else names
        logs = {name: self.data_dir / "logs" / f"{name}.log" for name in names}
        for attempt in range(1, attempts + 1):
            offsets = {
                name: log.stat().st_size if log.exists() else 0 for name, log in logs.items()
            }
            probe = spawn()
            try:
                self._wait(what, probe, timeout_s)
                return
            except click.ClickException:
                started = [c for c in self.children if c.name in names]
                if attempt == attempts or not any(
                    c.proc.poll() is not None and _port_taken(c.log, offsets[c.name])
                    for c in started
                ):
                    raise
                for child in started:
                    self._discard(child)
                console.print(f"[yellow]{what}: a port was taken meanwhile, trying others[/yellow]")

    def _discard(self, child: _Child) -> None:
        """Stop `child` (if it still runs) and stop watching it: a failed start."""
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(timeout=_stop_wait_s(child.name))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.children.remove(child)

    # ----- steps -----------------------------------------------------------------------------

    def ensure_bundle(self) -> Path:
        """The bundle to serve now. With none, a quick one is built first (about a minute on
        2 cores, without torch; the full build then runs in the background:
        `start_full_build`)."""
        bundle = default_bundle_dir()
        if not (bundle / "manifest.json").exists():
            console.print(
                f"[bold]No model bundle at {bundle}: building a quick one first (frozen "
                "encoder + trained head, about a minute); the full bundle follows in the "
                "background.[/bold]"
            )
            argv = [sys.executable, "-m", _QUICK_BUILD, "--out", str(bundle), *self._data_args()]
            if subprocess.call(argv) != 0:
                raise click.ClickException("the model build failed; see the output above")
        return bundle

    def _data_args(self) -> list[str]:
        return ["--data", str(self.train_data)] if self.train_data else []

    def start_full_build(self, bundle: Path) -> None:
        """Serving a quick bundle: build the full one (or take it from the build cache) in
        the background; `poll_background` swaps it in when it is done. While scripts/up
        still installs torch (`BUILD_DEPS_LOG_ENV`), `poll_background` starts it later."""
        from aivos.cloud.modelbuild.quick import is_quick

        manifest = load_bundle_manifest(bundle)
        if not is_quick(manifest):
            return
        self.quick_version = manifest.bundle_version
        if all(_has_module(m) for m in _FULL_BUILD_MODULES):
            self._spawn_full_build()
            return
        pending = os.environ.get(BUILD_DEPS_LOG_ENV)
        if pending:
            self.build_deps_log = Path(pending)
            self.lines["model"] = (
                f"{manifest.bundle_version} (quick: frozen encoder; the fine-tuned bundle is "
                f"built once its packages (torch …) are installed, log {pending})"
            )
        else:
            self.lines["model"] = (
                f"{manifest.bundle_version} (quick: frozen encoder; the fine-tuned bundle needs "
                "the model build's packages: pip install 'aivos[cloud]', then restart)"
            )

    def _spawn_full_build(self) -> None:
        out = self.data_dir / "bundles" / "full"
        argv = [sys.executable, "-m", _QUICK_BUILD, "--full", "--out", str(out)]
        self.build = self._spawn_argv("model-build", argv + self._data_args(), service=False)
        self.lines["model"] = (
            f"{self.quick_version} (quick: frozen encoder; the fine-tuned bundle is on "
            f"its way, log {self.build.log})"
        )

    def poll_background(self) -> None:
        """One look at the background steps: the full build, the generator install and the
        swap to the full bundle; every `_NOTE_EVERY_S` a line says where each one is."""
        if self.build is not None and self.build.proc.poll() is not None:
            build, self.build = self.build, None
            if build.proc.returncode == 0:
                self.swap_in(self.data_dir / "bundles" / "full")
            else:
                console.print(
                    f"[yellow]model: the full build failed (exit {build.proc.returncode}); "
                    f"still serving the quick bundle. Log: {build.log}[/yellow]"
                )
        if self.generator_log is not None:
            self._poll_generator(self.generator_log)
        if self.build_deps_log is not None:
            self._poll_build_deps(self.build_deps_log)
        if self.swapping_to is not None and self._edge_model() == self.swapping_to:
            console.print(
                f"[green]model:[/green] the edge serves the full bundle {self.swapping_to}"
            )
            self.swapping_to = None
        if time.monotonic() - self._noted >= _NOTE_EVERY_S:
            self._noted = time.monotonic()
            self._note_progress()

    def _note_progress(self) -> None:
        if self.build is not None:
            console.print(f"model: full bundle building — {_last_line(self.build.log)}")
        if self.build_deps_log is not None:
            console.print(
                f"model: the full build waits for its packages (torch …) — "
                f"{_last_line(self.build_deps_log)} (log {self.build_deps_log})"
            )
        if self.generator_log is not None:
            console.print(
                f"generator: compiling llama.cpp — {_last_line(self.generator_log, '%]')} "
                f"(log {self.generator_log}); escalations wait as durable jobs meanwhile"
            )
        if self.swapping_to is not None:
            console.print(f"model: rolling out {self.swapping_to} to {self.site}")

    def swap_in(self, full: Path) -> None:
        """Make the full bundle the default (the next `up` starts with it) and serve it:
        through the fleet when the hub runs, else by restarting the edge on it."""
        manifest = load_bundle_manifest(full)
        with staged_bundle(default_bundle_dir()) as staging:
            shutil.copytree(full, staging, dirs_exist_ok=True)
        self.lines["model"] = manifest.bundle_version
        console.print(f"[green]model:[/green] full bundle {manifest.bundle_version} built")
        self.swapping_to = manifest.bundle_version
        if self.edge_only:
            self.restart_edge(default_bundle_dir())
        else:
            self.roll_out(full, manifest.bundle_version)

    def restart_edge(self, bundle: Path) -> None:
        """--edge-only has no fleet to swap through: the edge restarts on the same port and
        re-embeds its knowledge index for the new encoder when it opens it."""
        edge = next(c for c in self.children if c.name == "edge")
        edge.proc.send_signal(signal.SIGTERM)
        try:
            edge.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            edge.proc.kill()
            edge.proc.wait()
        self.children.remove(edge)
        self.start_edge(bundle)

    def roll_out(self, bundle: Path, version: str) -> None:
        """`aivos models publish` + `aivos rollout start` for this site, as an operator
        would: the console's rollout controller sets the site's desired bundle, the edge
        fetches it, checks its signature and canary, swaps it in and re-embeds its index."""
        db = ["--db", self.cloud_db] if self.cloud_db else []
        steps = [
            ["models", "publish", str(bundle), "--nats", self.lines["hub"]],
            ["rollout", "start", "--bundle", version, "--sites", self.site, "--canary", "100%"],
        ]
        for step in steps:
            argv = [sys.executable, "-m", "aivos", *step, "--data-dir", str(self.cloud_dir)]
            child = self._spawn_argv("model-swap", argv + (db if step[0] == "rollout" else []),
                                     env=self._service_env("fleet"), service=False)  # fmt: skip
            if child.proc.wait() != 0:
                self.swapping_to = None
                console.print(
                    f"[yellow]model: `aivos {' '.join(step[:2])}` failed; still serving the "
                    f"quick bundle. Log: {child.log}[/yellow]"
                )
                return

    def _edge_model(self) -> str | None:
        try:
            body = httpx.get(f"{self.lines['edge']}/readyz", timeout=2).json()
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        version: str | None = body.get("model_version")
        return version

    def start_nats(self) -> None:
        """The hub with TLS and per-identity users, then this site enrolled (or rotated,
        when an earlier run enrolled it) and its leaf node run from the kit's leaf.conf."""
        if self.hub_nodes > 1:
            return start_cluster(self)
        # start the hub before enrolling: enrollment reloads the hub named by its pid file
        hub = self.hub = self._start_hub()
        self.lines["hub"] = hub.url
        self.start_leaf(lambda: hub.leafnode_count() >= 1)

    def start_leaf(self, linked: Callable[[], bool]) -> None:
        """Enroll the site (or rotate it, when an earlier run enrolled it) and run its leaf
        node from the kit's leaf.conf until `linked` (the hub sees the leaf). The leaf's
        port is picked here and written into the kit: a start that finds it taken
        meanwhile enrolls again (a new credential generation) on a fresh one."""
        from aivos.cloud.fleet.enroll import retire_rotated

        _ensure_bundle_signing_key(self.cloud_dir)  # before the kit copies the trusted keys
        rotated: list[bool] = []

        def spawn() -> Callable[[], bool]:
            leaf_port = free_port()
            self.kit, was_rotated = self._enroll(leaf_port)
            rotated.append(was_rotated)
            self._spawn_argv("leaf", [str(nats_server_binary()), "-c", str(self.kit / "leaf.conf")])
            self.leaf_url = f"nats://127.0.0.1:{leaf_port}"
            return linked

        self._start_listening("leaf", "the site's leaf node", spawn, 30)
        if len(rotated) > 1 or rotated[0]:  # generations issued before the one that runs
            retire_rotated(self.cloud_dir, wait_s=10)
        assert self.leaf_url is not None
        self.lines["leaf"] = self.leaf_url

    def _start_hub(self) -> NatsServer:
        """The hub runs as a child in its own session like the others, so a Ctrl-C in the
        terminal reaches only `aivos up`, which stops it last (`stop`)."""
        from aivos.cloud.fleet.enroll import secure_hub_config

        started: list[NatsServer] = []

        def spawn() -> Callable[[], bool]:
            conf = secure_hub_config(
                self.cloud_dir, port=free_port(), leaf_port=free_port(), monitor_port=free_port()
            )
            hub = NatsServer(conf, self.cloud_dir / "nats")
            hub.write_config()
            self._spawn_argv("hub", [str(hub.binary), "-c", str(hub.config_path)])
            started.append(hub)
            health = f"http://{conf.host}:{conf.monitor_port}/healthz"
            return lambda: httpx.get(health, timeout=1).status_code == 200

        self._start_listening("hub", "the NATS hub", spawn, 30)
        return started[-1]

    def _enroll(self, leaf_port: int) -> tuple[Path, bool]:
        """Enroll the local site, or give it a new credential generation (the hub's ports
        change from run to run, and a kit names them), decided holding the identities
        lock (`enroll_or_rotate_site`). Returns (kit, rotated)."""
        from aivos.cloud.fleet.enroll import enroll_or_rotate_site

        out = self.data_dir / "site-kit"
        return enroll_or_rotate_site(self.cloud_dir, self.site, out, leaf_port=leaf_port)

    def _service_env(self, role: str) -> dict[str, str]:
        from aivos.cloud.fleet.enroll import service_env

        return service_env(self.cloud_dir, role)  # the single hub and the cluster alike

    def start_worker(self) -> bool:
        """The generation worker, when llama-cpp-python is importable; while scripts/up still
        compiles it (`GENERATOR_LOG_ENV`), `poll_background` starts the worker later."""
        if not _has_module("llama_cpp"):
            pending = os.environ.get(GENERATOR_LOG_ENV)
            if pending:
                self.generator_log = Path(pending)
                self.lines["generator"] = (
                    f"compiling llama.cpp (see {pending}) — escalations wait as durable jobs "
                    "meanwhile"
                )
            else:
                self.lines["generator"] = (
                    "llama-cpp-python is not installed (pip install llama-cpp-python, then "
                    "restart) — escalations wait as durable jobs"
                )
            return False
        assert self.hub is not None
        from aivos.cloud.models.up_pools import default_pool_commands

        # one autoscaled pool per catalogue entry, in one supervisor ("pools") that starts
        # and stops pools as pushed catalogues add and remove entries (bootstrap:
        # CLOUD_DIR/catalogue.toml, written once, an operator's edits kept), and the model
        # router in front of them; every hub node's URL (a cluster): they fail over with it.
        # The supervisor exits with us (its parent) and stops its workers if we are killed.
        hub_urls = self.lines.get("hub", self.hub.url)
        for cmd in default_pool_commands(self.cloud_dir, hub_urls):
            self._spawn(cmd.name, *cmd.args, env=self._service_env(cmd.role))
        return True

    def _poll_generator(self, log: Path) -> None:
        status = _exit_status(log.with_name(log.name + ".exit"))
        if status is None:
            return
        self.generator_log = None
        importlib.invalidate_caches()
        if status != 0 or not _has_module("llama_cpp"):
            console.print(
                f"[yellow]generator: installing llama-cpp-python failed (exit {status}); "
                f"escalations keep waiting as durable jobs. Log: {log}[/yellow]"
            )
            return
        self.start_worker()
        console.print(
            "[green]generator:[/green] llama.cpp installed, worker started — waiting "
            "escalations are answered as it comes up"
        )

    def _poll_build_deps(self, log: Path) -> None:
        status = _exit_status(log.with_name(log.name + ".exit"))
        if status is None:
            return
        self.build_deps_log = None
        importlib.invalidate_caches()
        if status != 0 or not all(_has_module(m) for m in _FULL_BUILD_MODULES):
            console.print(
                f"[yellow]model: installing the full build's packages failed (exit {status}); "
                f"still serving the quick bundle. Log: {log}[/yellow]"
            )
            return
        console.print("model: the full build's packages are installed; building the full bundle")
        self._spawn_full_build()

    def start_cloud(self) -> None:
        assert self.hub is not None
        cloud_dir = self.cloud_dir
        if _has_module("aivos.cloud.ingest.cli"):
            self._spawn(
                "ingest",
                "cloud",
                "ingest",
                *cloud_args(self.lines["hub"], self.hub_nodes, self.cloud_db),
                "--data-dir",
                str(cloud_dir),
                env=self._service_env("ingest"),
            )
        if _has_module("aivos.cloud.console.app"):
            url = ""

            def spawn_console() -> Callable[[], bool]:
                nonlocal url
                port = free_port()
                self._spawn(
                    "console",
                    "cloud",
                    "console",
                    *cloud_args(self.lines["hub"], self.hub_nodes, self.cloud_db),
                    "--data-dir",
                    str(cloud_dir),
                    "--port",
                    str(port),
                    env=self._service_env("fleet"),
                )
                url = f"http://127.0.0.1:{port}"
                health = f"{url}/healthz"
                return lambda: httpx.get(health, timeout=1).status_code == 200

            self._start_listening("console", "console", spawn_console, 60)
            self.lines["console"] = url
            token = _operator_token(cloud_dir, self.cloud_db)
            if token:
                self.lines["operator-token"] = token
                self.lines["console-login"] = _console_login(cloud_dir, self.cloud_db)

    def start_edge(self, bundle: Path) -> None:
        edge_dir = self.data_dir / "edge"
        edge_dir.mkdir(parents=True, exist_ok=True)
        config = edge_dir / "config.toml"
        lines = [f'site_id = "{self.site}"', "[server]", "json_logs = true"]
        if self.leaf_url is not None:
            lines += ["[uplink]", f"nats_url = {json.dumps(self.leaf_url)}"]
        if self.kit is not None:
            keys = self.kit / "trusted_keys"
            lines += ["[fleet]", f"trusted_keys_dir = {json.dumps(str(keys))}"]
        if self.demo:
            lines += self._start_demo_services()
        config.write_text("\n".join(lines) + "\n")
        self.load_examples(edge_dir, bundle)
        given = self.edge_port  # the operator's port, or the first start's (a restart keeps
        # the URL); 0: one is picked, and picked again if it is taken before the edge binds it

        def spawn_edge() -> Callable[[], bool]:
            self.edge_port = port = given or free_port()
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
            ready = f"http://127.0.0.1:{port}/readyz"
            return lambda: httpx.get(ready, timeout=1).status_code == 200

        attempts = 1 if given else _PORT_ATTEMPTS
        self._start_listening("edge", "edge agent", spawn_edge, 120, attempts=attempts)
        self.lines["edge"] = f"http://127.0.0.1:{self.edge_port}"
        from aivos.edge.workflows.demo import DEMO_BINDINGS  # --demo: the demo customer's

        bound = dict(DEMO_BINDINGS) if self.demo else {}
        self.lines["token"] = _edge_token(edge_dir, "client", bound=bound)
        self.lines["edge-data-dir"] = str(edge_dir)
        self.lines["edge-operator-token"] = _edge_token(edge_dir, "operator")

    def load_examples(self, edge_dir: Path, bundle: Path) -> None:
        """An empty knowledge index gets the example documents (docs/examples/kb), so the
        README's first question finds its answer; the site's own go in with `aivos kb add`."""
        if not _EXAMPLE_KB.is_dir() or _indexed_passages(edge_dir / "knowledge") > 0:
            return
        console.print(f"loading the example documents of {_EXAMPLE_KB} into the empty index")
        argv = ["kb", "add", "--data-dir", str(edge_dir), "--bundle", str(bundle)]
        child = self._spawn("kb-add", *argv, str(_EXAMPLE_KB))
        if child.proc.wait() != 0:
            raise click.ClickException(f"loading the example documents failed; log {child.log}")
        self.children.remove(child)  # a one-off step, not a service

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

        assert self.leaf_url is not None
        leaf_url = self.leaf_url

        async def probe() -> bool:
            # replies reach a site only in its own inbox (docs/security.md)
            nc = await nats.connect(leaf_url, inbox_prefix=site_inbox_prefix(self.site))
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
        """SIGTERM stage by stage (`_STOP_STAGES`), each stage waited for (15 s, the pools
        longer: `_stop_wait_s`; then SIGKILL) before the next, so no service sees its NATS
        server vanish first."""

        def stage(child: _Child) -> int:
            name = "hub" if child.name.startswith("hub-") else child.name  # cluster nodes
            found = [i for i, names in enumerate(_STOP_STAGES) if name in names]
            return found[0] if found else 1

        if self.build is not None and self.build.proc.poll() is None:
            # the background build first: it removes its temporary files on SIGTERM
            self.build.proc.send_signal(signal.SIGTERM)
            try:
                self.build.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.build.proc.kill()
                self.build.proc.wait()
        for number in range(len(_STOP_STAGES)):
            group = [c for c in self.children if stage(c) == number]
            for child in group:
                if child.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signal.SIGTERM)
            for child in group:
                try:
                    child.proc.wait(timeout=_stop_wait_s(child.name))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()


def _port_taken(log: Path, offset: int) -> bool:
    """Whether what a child wrote to `log` past `offset` says a port it was given to bind
    was taken."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            return _PORT_TAKEN in handle.read().decode(errors="replace").lower()
    except OSError:
        return False


def _stop_wait_s(name: str) -> float:
    """How long `Appliance.stop` waits for the child `name` after SIGTERM before SIGKILL.

    The pools process lets its workers finish what is in flight for `DRAIN_GRACE_S`, then
    SIGKILLs them and closes its connection: it gets that and `_POOLS_CLOSE_S`. Killed
    sooner, it would leave its workers (PR_SET_PDEATHSIG SIGTERMs them) draining on after
    the hub and `up` itself are gone."""
    if name == "pools":
        from aivos.cloud.models.pool import DRAIN_GRACE_S

        return DRAIN_GRACE_S + _POOLS_CLOSE_S
    return _STOP_WAIT_S


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _ensure_bundle_signing_key(cloud_dir: Path) -> None:
    """The cloud's bundle signing key (``D/keys``), so `up` can publish bundles to its site."""
    from aivos.shared.fleet import PRIVATE_KEY_NAME, generate_signing_key

    if not (cloud_dir / "keys" / PRIVATE_KEY_NAME).is_file():
        generate_signing_key(cloud_dir / "keys")


def _exit_status(path: Path) -> int | None:
    """The exit status a background step wrote to `path`; None while it runs."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _last_line(log: Path, containing: str = "") -> str:
    """The last non-empty line of `log` (with `containing`, when given): a step's progress."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16_384))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return "starting"
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if containing in ln]
    lines = [ln for ln in lines if ln]
    return lines[-1][:160] if lines else "starting"


def _indexed_passages(knowledge: Path) -> int:
    """Passages in the knowledge index at `knowledge`, from its manifest (0: none yet)."""
    try:
        return int(json.loads((knowledge / "manifest.json").read_text())["n_chunks"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _edge_token(edge_dir: Path, scope: str, *, bound: dict[str, str] | None = None) -> str:
    """A token of `scope` for this appliance, kept in edge/up-token (client) or
    edge/up-operator-token (0600) and reused while valid and bound to exactly `bound`."""
    from aivos.edge.store import Store
    from aivos.edge.store import tokens as store_tokens

    saved = edge_dir / ("up-token" if scope == "client" else f"up-{scope}-token")
    store = Store.open(edge_dir)
    try:
        if saved.exists():
            token = saved.read_text().strip()
            info = store.authenticate(token)
            if info is not None and info.scope == scope and info.bound == (bound or {}):
                return token
        name = f"up-{scope}-{int(time.time())}-{secrets.token_hex(3)}"
        _, token = store.transact_sync(lambda c: store_tokens.create(c, name, scope, bound=bound))
    finally:
        store.close()
    saved.write_text(token)
    saved.chmod(0o600)
    return token


def _operator_token(cloud_dir: Path, db: str | None = None) -> str | None:
    try:
        from aivos.cloud.fleet.tokens import create_operator_token  # type: ignore[import-not-found]
    except ImportError:
        return None
    token: str = operator_token_in(db, cloud_dir) if db else create_operator_token(cloud_dir)
    return token


def _console_login(cloud_dir: Path, db: str | None = None, username: str = "admin") -> str:
    """The console login: created on the first run with a random password, which is shown
    only then (`USER PASSWORD`); later runs say how to set a new one."""
    from aivos.cloud.fleet.registry import open_registry
    from aivos.cloud.fleet.tokens import add_operator

    registry = open_registry(db, cloud_dir)
    try:
        if registry.operator_hash(username) is not None:
            return (
                f"{username} (password shown at the first start; set a new one with "
                f"`aivos fleet operator add {username} --data-dir {cloud_dir}"
                f"{' --db URL' if db else ''}`)"
            )
        password = secrets.token_urlsafe(12)
        add_operator(registry, username, password)
    finally:
        registry.close()
    return f"{username} {password}"


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
@scale_options()
@click.option(
    "--train-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    hidden=True,  # tests and benchmarks: a small first bundle (CLINC150 layout)
    help="Training data of the first run's bundles (default: the shipped CLINC150).",
)
def up_cmd(
    data_dir: Path | None,
    port: int,
    edge_only: bool,
    site: str,
    demo: bool,
    hub_nodes: int,
    cloud_db: str | None,
    train_data: Path | None,
) -> None:
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
        hub_nodes=hub_nodes,
        cloud_db=cloud_db,
        train_data=train_data,
    )
    with _signals_as_keyboard_interrupt():
        try:
            bundle = app.ensure_bundle()
            with console.status("starting the appliance…"):
                worker = False
                if not edge_only:
                    app.start_nats()
                    worker = app.start_worker()
                    app.start_cloud()
                app.start_edge(bundle)
                if worker:
                    app.wait_for_worker()
                app.start_full_build(bundle)
            for name in (
                *("edge", "token", "console", "operator-token", "hub", "leaf", "corebank"),
                *("edge-data-dir", "edge-operator-token", "console-login", "model", "generator"),
            ):
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
                app.poll_background()
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping…")
        finally:
            # a second Ctrl-C must not cut the orderly stop short (it ends in 15 s a stage)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            app.stop()
            with contextlib.suppress(FileNotFoundError):
                (aivos_home() / "up.json").unlink()
