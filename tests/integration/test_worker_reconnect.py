"""Connection handling: capped backoff on first connect, reconnect after a hub restart
with the worker's queue subscription restored."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from aivos.cloud.worker.service import GenerationWorker
from aivos.edge.uplink.generation import generate
from aivos.shared.errors import LinkDown
from aivos.shared.messages import GenerateRequest
from aivos.shared.natsconf import NatsServer, free_port
from aivos.shared.natsconf.connect import backoff_delay, connect_nats
from tests.fixtures.nats import ScriptedBackend, wait_for_responders
from tests.fixtures.wait import eventually


def test_backoff_is_capped_and_jittered() -> None:
    delays = [backoff_delay(a, base=0.1, cap=2.0) for a in range(20) for _ in range(20)]
    assert max(delays) <= 2.0
    assert min(delays) >= 0.05
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not a fixed schedule
    assert all(backoff_delay(0, base=0.1, cap=2.0) <= 0.1 for _ in range(50))


async def test_connect_gives_up_with_link_down() -> None:
    with pytest.raises(LinkDown):
        await connect_nats(f"nats://127.0.0.1:{free_port()}", name="t", connect_timeout_s=0.5)


async def test_worker_survives_hub_restart(
    nats_hub_factory: Callable[[], NatsServer],
) -> None:
    hub = nats_hub_factory()
    states: list[str] = []
    worker_nc = await connect_nats(hub.url, name="w", on_state=states.append, backoff_cap=0.5)
    edge = await connect_nats(hub.url, name="e", backoff_cap=0.5)
    worker = GenerationWorker(ScriptedBackend(["ok"]))
    await worker.start(worker_nc)
    try:
        request = GenerateRequest(request_id="r1", site="rc", prompt="x")
        # the worker flushed its SUB on its own connection; seen once in a full run, the
        # edge's first request still got a 503, so wait as after the restart below
        await wait_for_responders(edge, "rc")
        assert (await generate(edge, request, timeout_s=10)).text == "ok"
        hub.stop()
        await eventually(lambda: "disconnected" in states, what="the worker disconnected")
        with pytest.raises(LinkDown):
            await generate(edge, request, timeout_s=10)
        await asyncio.to_thread(hub.start)  # same ports, same JetStream dir
        await eventually(
            lambda: "reconnected" in states and edge.is_connected, what="both reconnected"
        )
        await wait_for_responders(edge, "rc")
        done = await generate(edge, GenerateRequest("r2", "rc", "x"), timeout_s=10)
        assert done.text == "ok"
    finally:
        await worker.drain(grace_s=2)
        await worker_nc.close()
        await edge.close()
