"""End to end through the edge HTTP API: audited requests made while the site's link is cut
reach the cloud store once the link is back, exactly once and in order (real agent, real
bundle, hub + leaf behind a TCP proxy, `aivos cloud ingest` as a separate process)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from litestar.testing import TestClient

from aivos.cloud.ingest import CloudStore
from aivos.cloud.ingest.consumer import DEFAULT_DURABLE
from aivos.edge.api.app import create_app
from aivos.shared.natsconf import NatsServer
from aivos.shared.subjects import SYNC_STREAM
from aivos.shared.syncwire import ensure_sync_stream
from tests.fixtures.edge import issue_token, make_edge_settings
from tests.fixtures.nats import TcpProxy, wait_consumer_settled
from tests.fixtures.wait import eventually_sync

pytestmark = pytest.mark.slow

SITE = "branch-e2e"


def _ensure_stream(url: str) -> None:
    async def go() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_sync_stream(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(go())


def test_link_cut_through_the_http_api(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub_factory: Callable[[], NatsServer],
    nats_leaf_factory: Callable[..., NatsServer],
    tcp_proxy_factory: Callable[[str, int], TcpProxy],
) -> None:
    hub = nats_hub_factory()
    proxy = tcp_proxy_factory("127.0.0.1", hub.conf.leaf_port)  # type: ignore[union-attr]
    leaf = nats_leaf_factory(SITE, f"nats-leaf://{proxy.url_hostport}")
    _ensure_stream(hub.url)
    cloud_dir = tmp_path / "cloud"
    ingest = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "aivos"),
            "cloud",
            "ingest",
            "--nats",
            hub.url,
            "--data-dir",
            str(cloud_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    data_dir = tmp_path / "edge"
    token = issue_token(data_dir, "client", "e2e")
    settings = make_edge_settings(
        data_dir, small_bundle, site_id=SITE, **{"uplink.nats_url": leaf.url}
    )
    headers = {"Authorization": f"Bearer {token}"}
    cloud = CloudStore.open(cloud_dir)
    try:
        with TestClient(create_app(settings)) as client:

            def ask(text: str) -> str:
                r = client.post("/v1/infer", json={"text": text}, headers=headers)
                assert r.status_code in (200, 201), r.text
                return str(r.json()["request_id"])

            def metric(name: str) -> float:
                """A sample of the agent's /metrics (0 when the series has none yet)."""
                r = client.get("/metrics", headers=headers)
                assert r.status_code == 200, r.text
                found = re.search(rf"^{name} (\S+)$", r.text, re.MULTILINE)
                return float(found.group(1)) if found else 0.0

            before = [ask(f"what is the balance in my checking account {i}") for i in range(5)]
            eventually_sync(lambda: cloud.total() >= 5, timeout=60, what="records before the cut")
            errors = metric("aivos_sync_errors_total")
            proxy.cut()
            during = [ask(f"what's my account balance number {i}") for i in range(20)]
            eventually_sync(
                lambda: metric("aivos_sync_errors_total") > errors,
                timeout=60,
                what="a sync round that failed on the cut link",
            )
            assert cloud.total() == 5
            proxy.restore()
            eventually_sync(
                lambda: cloud.total() >= 25, timeout=60, what="records written during the cut"
            )
            # everything is in: the agent's outbox is empty and the ingest was delivered, and
            # acknowledged, every message of the stream (a duplicate would have landed too)
            eventually_sync(
                lambda: metric("aivos_sync_lag_records") == 0, timeout=60, what="outbox drained"
            )
            asyncio.run(wait_consumer_settled(hub.url, SYNC_STREAM, DEFAULT_DURABLE))
            audit = cloud.records(data_class="audit", site=SITE)
            assert [r.payload["id"] for r in audit] == before + during
            assert all(r.trace_id and len(r.trace_id) == 32 for r in audit)  # audit carries them
    finally:
        cloud.close()
        ingest.send_signal(signal.SIGTERM)
        try:
            ingest.wait(10)
        except subprocess.TimeoutExpired:
            ingest.kill()
