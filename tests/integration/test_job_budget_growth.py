"""A durable escalation job whose generation takes longer than the job budget still finishes:
each deadline miss doubles the next attempt's budget (edge/jobrunner.py). Before, every
attempt missed the same budget and the job retried for ever."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aivos.edge.agent import Agent
from aivos.edge.api.schemas import InferRequest
from aivos.shared.natsconf.server import NatsServer
from tests.fixtures.edge import make_edge_settings
from tests.fixtures.nats import ScriptedBackend, running_worker, wait_for_responders
from tests.fixtures.netproxy import TcpProxy
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.slow

SITE = "site1"


@pytest.fixture
def proxied_leaf(
    nats_hub: NatsServer, nats_leaf_factory: Callable[..., NatsServer]
) -> Iterator[tuple[NatsServer, TcpProxy]]:
    """The site's leaf node, reaching the hub through a proxy the test can cut."""
    host, port = nats_hub.leaf_url.removeprefix("nats-leaf://").split(":")
    proxy = TcpProxy(0, (host, int(port))).start()
    yield nats_leaf_factory(SITE, f"nats-leaf://127.0.0.1:{proxy.port}"), proxy
    proxy.close()


async def test_a_job_longer_than_its_budget_finishes_on_a_grown_budget(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    proxied_leaf: tuple[NatsServer, TcpProxy],
) -> None:
    leaf, proxy = proxied_leaf
    # 8 chunks 0.3 s apart: 2.4 s of generation against a 1 s job budget
    chunks = [f"w{i} " for i in range(7)] + ["w7"]
    backend = ScriptedBackend(chunks, delay_s=0.3)
    settings = make_edge_settings(
        tmp_path / "edge",
        small_bundle,
        site_id=SITE,
        **{
            "uplink.nats_url": leaf.url,
            "uplink.escalation_budget_ms": 3000,
            "uplink.job_budget_ms": 1000,
            "uplink.retry_interval_s": 0.2,
            "router.default": "escalate",
        },
    )
    async with running_worker(nats_hub.url, backend):
        agent = Agent(settings)
        await agent.start()
        try:
            assert await agent.uplink.wait_up(10)
            await wait_for_responders(agent.uplink.nc, SITE)  # type: ignore[arg-type]
            proxy.cut()  # the request falls back at once and becomes a durable job
            resp = await agent.infer(InferRequest(text="tell me a long story about the sea"))
            assert resp.answered_by == "fallback"
            assert resp.job_id
            proxy.restore()
            await eventually(
                lambda: agent.store.get_job(resp.job_id).state == "done",  # type: ignore[arg-type]
                timeout=120,
                interval=0.1,
                what=lambda: f"job state {agent.store.get_job(resp.job_id)}",  # type: ignore[arg-type]
            )
            job = agent.store.get_job(resp.job_id)
        finally:
            await agent.stop()
    assert job.result["answered_by"] == "cloud"
    assert job.result["answer"] == "".join(chunks)
    assert "deadline_misses" not in job.result  # bookkeeping, not part of the answer
    assert job.error is None
    job_requests = [r for r in backend.requests if r.request_id != "probe"]
    # the first attempt ran out of its 1 s budget (2.4 s needed); a later, grown one finished
    assert len(job_requests) >= 2
