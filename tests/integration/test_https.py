"""HTTPS for the console and the edge API (``--tls-cert/--tls-key``), with a server
certificate from the project's private CA (`shared.natsconf.pki`), over real sockets.

The console test also checks the fleet overview's security state: a revoked site is shown
as revoked (``D/nats/identities.json``) and the ingest's misattributed-record count (a real
`SyncIngest` rejecting a forged record) is on the page and in ``/api/overview``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from aivos.cloud.console.run import serve
from aivos.cloud.fleet.enroll import enroll_site, revoke_site
from aivos.cloud.fleet.registry import SqliteRegistry
from aivos.cloud.fleet.tokens import add_operator, create_operator_token
from aivos.cloud.ingest.consumer import SyncIngest
from aivos.cloud.ingest.store import CloudStore
from aivos.shared.fleet import Decisions, Heartbeat
from aivos.shared.natsconf import NatsServer, free_port
from aivos.shared.natsconf.pki import Pki, init_pki
from aivos.shared.syncwire import SyncEnvelope, encode_envelope
from tests.fixtures.wait import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

PASSWORD = "correct horse battery"


def _hb(site: str) -> Heartbeat:
    return Heartbeat(
        site_id=site,
        agent_version="1",
        bundle_version="v1",
        provider="cpu",
        link_state="up",
        outbox_depth=0,
        job_backlog=0,
        request_rate=0.0,
        decisions=Decisions(),
        p50_ms=1.0,
        p99_ms=2.0,
        cpu_percent=1.0,
        mem_percent=1.0,
        disk_percent=1.0,
    )


def _client(pki: Pki) -> httpx.AsyncClient:
    """Trusts only the aivos CA."""
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=pki.hub_files.ca))


async def _forge_one_record(hub: NatsServer, data_dir: Path) -> None:
    """shop-1 publishes a record that claims to be shop-2's; the real ingest rejects it."""
    store = CloudStore.open(data_dir)
    ingest = SyncIngest(store, durable="https-test", stats_dir=data_dir)
    nc = await nats.connect(hub.url)
    try:
        await ingest.start(nc)
        forged = SyncEnvelope(
            id="r1",
            site="shop-2",
            data_class="audit",
            kind="decision",
            seq=1,
            created_at="2024-01-01T00:00:00Z",
            payload={},
        )
        await nc.jetstream().publish("aivos.sync.shop-1.audit", encode_envelope(forged))
        await eventually(lambda: ingest.stats.misattributed == 1, what="a misattributed record")
    finally:
        await ingest.stop()
        await nc.close()
        store.close()


async def test_console_over_https_shows_revoked_sites_and_misattributed_records(
    tmp_path: Path, nats_hub_factory: Any
) -> None:
    hub: NatsServer = nats_hub_factory()
    data_dir = tmp_path / "cloud"
    pki = init_pki(data_dir, hosts=["127.0.0.1"])
    for site in ("shop-1", "shop-2"):
        enroll_site(data_dir, site, tmp_path / f"kit-{site}", leaf_port=free_port())
    revoke_site(data_dir, "shop-2")
    reg = SqliteRegistry.open(data_dir)
    add_operator(reg, "alice", PASSWORD)
    reg.ingest_heartbeats([(_hb("shop-1"), time.time()), (_hb("shop-2"), time.time())])
    reg.close()
    token = create_operator_token(data_dir)
    await _forge_one_record(hub, data_dir)

    port, ready = free_port(), asyncio.Event()
    files = pki.hub_files
    server = asyncio.create_task(
        serve(data_dir, hub.url, "127.0.0.1", port, ready, tls_cert=files.cert, tls_key=files.key)
    )
    try:
        await asyncio.wait_for(ready.wait(), 60)
        base = f"https://127.0.0.1:{port}"
        async with _client(pki) as client:
            api = await client.get(
                f"{base}/api/overview", headers={"Authorization": f"Bearer {token}"}
            )
            assert api.status_code == 200
            assert api.json()["revoked"] == ["shop-2"]
            assert api.json()["misattributed"] == 1

            login = await client.get(f"{base}/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
            assert csrf is not None
            done = await client.post(
                f"{base}/login",
                data={"username": "alice", "password": PASSWORD, "csrf": csrf.group(1)},
            )
            assert done.status_code == 303
            assert "secure" in done.headers["set-cookie"].lower()  # TLS implies Secure
            page = (await client.get(f"{base}/")).text
            row = re.search(r'data-site="shop-2">(.*?)</tr>', page, re.S)
            assert row is not None and 'class="pill revoked">revoked<' in row.group(1)
            assert 'id="count-revoked">1<' in page
            assert 'id="count-misattributed">1<' in page
        async with httpx.AsyncClient() as plain:  # plain HTTP on the TLS port gets nowhere
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{port}/healthz")
        async with httpx.AsyncClient(verify=True) as public:  # not trusted without the CA
            with pytest.raises(httpx.ConnectError):
                await public.get(f"{base}/healthz")
    finally:
        server.cancel()
        with contextlib.suppress(BaseException):
            await server


async def test_edge_api_over_https_on_loopback(tmp_path: Path, small_bundle: Path) -> None:
    pki = init_pki(tmp_path / "cloud", hosts=["127.0.0.1"])
    port = free_port()
    log = (tmp_path / "edge.log").open("wb")
    files = pki.hub_files
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aivos",
            "edge",
            "serve",
            "--data-dir",
            str(tmp_path / "edge"),
            "--bundle",
            str(small_bundle),
            "--port",
            str(port),
            "--tls-cert",
            files.cert,
            "--tls-key",
            files.key,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with _client(pki) as client:

            async def ready() -> bool:
                return (await client.get(f"https://127.0.0.1:{port}/readyz")).status_code == 200

            await eventually(ready, timeout=120, what="edge over https", ignore=(httpx.HTTPError,))
            resp = await client.get(f"https://127.0.0.1:{port}/healthz")
            assert resp.status_code == 200 and resp.url.scheme == "https"
        assert "https://127.0.0.1" in (tmp_path / "edge.log").read_text()  # the ready line
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
