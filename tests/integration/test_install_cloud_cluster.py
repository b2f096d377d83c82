"""`aivos install cloud --hub-nodes 3` (three secured hub nodes on one host) and
`--node-hosts ... --node I --ca DIR` (one node per machine, one shared CA).

The installed tree is checked the way an operator's box would use it: the units pass
`systemd-analyze verify`, the nats-servers run from the rendered configs (not via
systemd: only the install prefix is put in front of the runtime paths) and form a cluster
whose routes require TLS, a JetStream stream at R3 takes a message, and running the
installer again (also while the nodes run) changes nothing. "Machines" are install
prefixes whose nodes listen on 127.0.0.1, 127.0.0.2 and 127.0.0.3 with the same ports."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from nats.js.api import StreamConfig

from aivos.shared.natsconf import nats_server_binary
from aivos.shared.natsconf.connect import tls_context
from aivos.shared.natsconf.permissions import service_inbox_prefix
from aivos.shared.natsconf.pki import init_pki
from aivos.shared.natsconf.render import CertFiles
from tests.fixtures.wait import eventually, eventually_sync
from tests.integration.test_install import mode, snapshot, unit

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
RUNTIME = "/var/lib/aivos"
NODES = 3


def aivos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aivos", *args], capture_output=True, text=True, timeout=180
    )


def _free_run(taken: set[int], count: int = NODES) -> int:
    """A first port such that it and the `count` - 1 after it are free on loopback (the
    installer counts node ports up from the given ones)."""
    # below the kernel's ephemeral range: an outgoing connection of any process on the box
    # can take a port of that range between this check and the node binding it
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randrange(20000, max(first_ephemeral, 20000 + 4 * count) - count)
        run = set(range(base, base + count))
        if run & taken:
            continue
        try:
            for port in run:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        taken |= run
        return base
    raise AssertionError("no run of free ports")


def start_node(prefix: Path, node: int) -> subprocess.Popen[bytes]:
    """Node `node` from the config rendered under `prefix`, with the prefix in front of
    the runtime paths, under the units' umask (0027)."""
    data = prefix / "var/lib/aivos/cloud"
    run = prefix / "run"
    run.mkdir(exist_ok=True)
    rendered = (data / f"nats/hub-{node}.conf").read_text()
    assert 'include "users.conf"' in rendered
    text = rendered.replace(f'"{RUNTIME}/', f'"{prefix}{RUNTIME}/')
    # nats-server resolves an include relative to the including file, always
    users = os.path.relpath(data / "nats/users.conf", run)
    text = text.replace('include "users.conf"', f'include "{users}"')
    conf = run / f"hub-{node}.conf"
    conf.write_text(text)
    with (run / f"hub-{node}.log").open("ab") as log:
        return subprocess.Popen(
            [str(nats_server_binary()), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            umask=0o027,
        )


def routed_to(monitor_port: int) -> set[str]:
    """The server names a node (by its monitor port on loopback) has routes to."""
    url = f"http://127.0.0.1:{monitor_port}/routez"
    with urllib.request.urlopen(url, timeout=2) as resp:
        routes = json.loads(resp.read()).get("routes") or []
    return {str(r.get("remote_name")) for r in routes}


def admin_tls(data: Path) -> CertFiles:
    svc = data / "nats/services/admin"
    return CertFiles(
        cert=str(svc / "aivos-svc-admin.crt"),
        key=str(svc / "aivos-svc-admin.key"),
        ca=str(svc / "ca.crt"),
    )


async def r3_stream_works(urls: list[str], tls: CertFiles, name: str) -> None:
    """An R3 stream is created through `urls`, and a message in it reaches all 3 nodes."""
    nc = await nats.connect(
        servers=urls, tls=tls_context(tls), inbox_prefix=service_inbox_prefix("admin")
    )
    try:
        js = nc.jetstream()

        async def created() -> bool:
            await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], num_replicas=3))
            return True

        await eventually(created, timeout=60, what="an R3 stream", ignore=(Exception,))
        ack = await js.publish(f"{name}.one", b"replicated")

        async def replicated() -> bool:
            info = await js.stream_info(name)
            cluster = info.cluster
            assert cluster is not None and info.config.num_replicas == 3
            peers = cluster.replicas or []
            return (
                cluster.leader is not None
                and len(peers) == 2
                and all(p.current for p in peers)
                and info.state.messages == 1
            )

        await eventually(replicated, timeout=60, what="the message on all three nodes")
        assert (await js.get_msg(name, ack.seq)).data == b"replicated"
    finally:
        await nc.close()


class Installed:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        taken: set[int] = set()
        self.client, self.leaf, self.monitor, self.route = (_free_run(taken) for _ in range(4))
        self.args = [
            "install",
            "cloud",
            "--prefix",
            str(prefix),
            "--hub-nodes",
            str(NODES),
            "--hub-port",
            str(self.client),
            "--leaf-port",
            str(self.leaf),
            "--monitor-port",
            str(self.monitor),
            "--cluster-port",
            str(self.route),
            "--workers",
            "2",
        ]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def data(self) -> Path:
        return self.prefix / "var/lib/aivos/cloud"

    def start_nodes(self) -> None:
        """Every node, all at once (JetStream needs a quorum)."""
        self.procs += [start_node(self.prefix, i) for i in range(1, NODES + 1)]

    def node_logs(self) -> str:
        """Each node's exit code (None: running) and the tail of its log, for a failure."""
        return "\n".join(
            f"hub-{i} exit={proc.poll()}: "
            + (self.prefix / f"run/hub-{i}.log").read_text(errors="replace")[-600:]
            for i, proc in enumerate(self.procs, start=1)
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(30)


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Installed]:
    rig = Installed(tmp_path / "root")
    first = aivos(*rig.args)
    assert first.returncode == 0, first.stderr
    try:
        yield rig
    finally:
        rig.stop()


def _server_info(port: int) -> dict[str, object]:
    """The INFO a nats-server sends first on a client or leaf port (before TLS)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        line = sock.makefile("rb").readline()
    assert line.startswith(b"INFO "), line
    return dict(json.loads(line[5:]))


def _route_peer(port: int, tls: CertFiles) -> tuple[bytes, str]:
    """(what a route port says in plain text, the subject of the certificate it serves in
    a TLS handshake as a peer node with `tls`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # the node waits up to its TLS timeout (5 s) for a handshake, then hangs up: silence
        # until our own 5 s run out says the same as an early hang-up (no plain INFO)
        try:
            plain = sock.recv(64)
        except TimeoutError:
            plain = b""
    ctx = ssl.create_default_context(cafile=tls.ca)
    ctx.load_cert_chain(tls.cert, tls.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return plain, str(cn[0].value)


def test_three_node_install_renders_a_node_per_unit_and_verifies(installed: Installed) -> None:
    units = installed.prefix / "etc/systemd/system"
    names = sorted(p.name for p in units.iterdir())
    assert "aivos-hub@.service" in names and "aivos-hub.service" not in names
    hub = unit(units / "aivos-hub@.service")["Service"]
    assert hub["ExecStart"].endswith(f"nats-server -c {RUNTIME}/cloud/nats/hub-%i.conf")
    assert hub["ExecReload"].endswith(f"/aivos nats reload --data-dir {RUNTIME}/cloud")
    nodes = [f"aivos-hub@{i}.service" for i in range(1, NODES + 1)]
    target = unit(units / "aivos-cloud.target")["Unit"]
    assert target["Wants"].split()[:NODES] == nodes
    urls = ",".join(f"tls://127.0.0.1:{installed.client + i}" for i in range(NODES))
    for name in ("aivos-ingest.service", "aivos-console.service", "aivos-worker@.service"):
        service = unit(units / name)
        assert f"--nats {urls} " in service["Service"]["ExecStart"]
        assert service["Unit"]["Wants"].split()[1:] == nodes
    for name in ("aivos-ingest.service", "aivos-console.service"):
        text = (units / name).read_text()
        assert "Environment=AIVOS_JS_REPLICAS=3" in text
    # what `aivos fleet enroll/revoke` on the box reads: runtime pid files, dialable URLs
    endpoints = json.loads((installed.data / "nats/hub.json").read_text())
    assert endpoints["pid_files"] == [f"{RUNTIME}/cloud/nats/hub.pid.{i}" for i in (1, 2, 3)]
    assert endpoints["urls"] == urls.split(",")
    for i in range(1, NODES + 1):
        key = installed.data / f"pki/nodes/aivos-hub-{i}.key"
        assert mode(key) == 0o600
    if SYSTEMD_ANALYZE is not None:
        done = subprocess.run(
            [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, sorted(units.iterdir()))],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout + done.stderr == ""


@pytest.mark.asyncio
async def test_installed_nodes_form_a_tls_cluster_with_r3_and_reinstall_changes_nothing(
    installed: Installed,
) -> None:
    second = aivos(*installed.args)
    assert second.returncode == 0, second.stderr
    assert "nothing to do: the installation is up to date" in second.stdout

    installed.start_nodes()
    names = {f"aivos-hub-{i}" for i in range(1, NODES + 1)}

    def meshed() -> bool:
        return all(
            routed_to(installed.monitor + i - 1) == names - {f"aivos-hub-{i}"}
            for i in range(1, NODES + 1)
        )

    try:
        await eventually(
            meshed, timeout=60, what="every node routed to the two others", ignore=(OSError,)
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{installed.node_logs()}") from exc
    pki = installed.data / "pki"
    peer = CertFiles(
        cert=str(pki / "nodes/aivos-hub-1.crt"),
        key=str(pki / "nodes/aivos-hub-1.key"),
        ca=str(pki / "ca.crt"),
    )
    for i in range(NODES):  # every listener of every node requires TLS, routes included
        for port in (installed.client + i, installed.leaf + i):
            assert _server_info(port).get("tls_required") is True, port
        # a route port speaks TLS first (no plain INFO) and serves the route identity
        assert _route_peer(installed.route + i, peer) == (b"", "aivos-hub-route")
    urls = [f"tls://127.0.0.1:{installed.client + i}" for i in range(NODES)]
    await r3_stream_works(urls, admin_tls(installed.data), "INSTALLED")

    # again while the nodes run (their pid files and JetStream dirs are in the tree now)
    def pid_files_written() -> bool:
        return all((installed.data / f"nats/hub.pid.{i}").is_file() for i in (1, 2, 3))

    eventually_sync(pid_files_written, timeout=30, what="the nodes' pid files")
    before = snapshot(installed.prefix / "etc")
    state = snapshot(installed.data / "pki")
    third = aivos(*installed.args)
    assert third.returncode == 0, third.stderr
    assert "nothing to do: the installation is up to date" in third.stdout, third.stdout
    assert snapshot(installed.prefix / "etc") == before
    assert snapshot(installed.data / "pki") == state


@pytest.mark.asyncio
async def test_one_node_per_machine_with_one_ca(tmp_path: Path) -> None:
    """Three "machines" (install prefixes), each node on its own loopback address with the
    same ports, the second and third given the first one's CA: the nodes form one TLS
    cluster and an R3 stream works; another CA is refused; a rerun changes nothing."""
    taken: set[int] = set()
    client, leaf, route, monitor = (_free_run(taken) for _ in range(4))
    hosts = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    machines = [tmp_path / f"machine-{i}" for i in (1, 2, 3)]
    first_ca = machines[0] / "var/lib/aivos/cloud/pki"

    def args(node: int, ca: Path | None) -> list[str]:
        out = ["install", "cloud", "--prefix", str(machines[node - 1])]
        out += ["--node-hosts", ",".join(hosts), "--node", str(node)]
        out += ["--hub-port", str(client), "--leaf-port", str(leaf), "--cluster-port", str(route)]
        out += ["--monitor-port", str(monitor + node - 1)]  # monitors: loopback, per machine
        return out + (["--ca", str(ca)] if ca else [])

    for node in (1, 2, 3):
        done = aivos(*args(node, first_ca if node > 1 else None))
        assert done.returncode == 0, done.stderr
    second = machines[1] / "var/lib/aivos/cloud"
    units = machines[1] / "etc/systemd/system"
    assert (second / "pki/ca.crt").read_bytes() == (first_ca / "ca.crt").read_bytes()
    assert sorted(p.name for p in (second / "nats").glob("hub-*.conf")) == ["hub-2.conf"]
    assert unit(units / "aivos-cloud.target")["Unit"]["Wants"].split()[0] == "aivos-hub@2.service"
    ingest = unit(units / "aivos-ingest.service")["Service"]["ExecStart"]
    order = ",".join(f"tls://{h}:{client}" for h in ("127.0.0.2", "127.0.0.1", "127.0.0.3"))
    assert f"--nats {order} " in ingest  # this machine's node first
    endpoints = json.loads((second / "nats/hub.json").read_text())
    assert endpoints["leaf_urls"] == [f"nats-leaf://{h}:{leaf}" for h in hosts]
    assert endpoints["pid_files"] == [f"{RUNTIME}/cloud/nats/hub.pid.2"]
    conf = (second / "nats/hub-2.conf").read_text()
    assert f'listen: "127.0.0.2:{route}"' in conf
    assert all(f'"nats-route://{h}:{route}"' in conf for h in hosts)

    # a machine that has a CA refuses another one (its certificates would not be trusted)
    init_pki(tmp_path / "other")
    refused = aivos(*args(2, tmp_path / "other/pki"))
    assert refused.returncode == 1
    assert "holds another CA" in refused.stderr

    procs = [start_node(machine, node) for node, machine in enumerate(machines, start=1)]
    try:
        names = {f"aivos-hub-{i}" for i in (1, 2, 3)}

        def meshed() -> bool:
            return all(routed_to(monitor + i - 1) == names - {f"aivos-hub-{i}"} for i in (1, 2, 3))

        await eventually(meshed, timeout=60, what="the three machines routed", ignore=(OSError,))
        urls = [f"tls://{h}:{client}" for h in hosts]
        third = machines[2] / "var/lib/aivos/cloud"  # a service of the third machine
        await r3_stream_works(urls, admin_tls(third), "MACHINES")
        again = aivos(*args(2, first_ca))
        assert again.returncode == 0, again.stderr
        assert "nothing to do: the installation is up to date" in again.stdout, again.stdout
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--node", "2"], "--node needs --node-hosts"),
        (["--node-hosts", "10.0.0.1,10.0.0.1", "--node", "1"], "two or more different"),
        (["--node-hosts", "10.0.0.1,10.0.0.2"], "--node: which of the 2 nodes"),
        (["--node-hosts", "0.0.0.0,10.0.0.2", "--node", "1"], "not 0.0.0.0"),
        (["--hub-nodes", "3", "--node-hosts", "10.0.0.1,10.0.0.2", "--node", "1"], "but 2"),
    ],
)
def test_inconsistent_cluster_options_are_refused_before_anything_is_written(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    done = aivos("install", "cloud", "--prefix", str(tmp_path / "root"), *extra)
    assert done.returncode == 1
    assert message in " ".join(done.stderr.split())
    assert not (tmp_path / "root").exists()
