"""Generation over real nats-server processes (hub + site leaf), with a scripted backend so
the protocol behaviour is deterministic; the real model is exercised in test_worker_llamacpp."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats
import pytest

from aivos.edge.uplink.generation import generate, stream_generate
from aivos.shared.errors import DeadlineExceeded, LinkDown, NoResponders, WorkerSaturated
from aivos.shared.messages import Done, Error, GenerateRequest, Token, decode_reply, encode, now_ms
from aivos.shared.natsconf import NatsServer
from aivos.shared.natsconf.connect import close_nats
from aivos.shared.subjects import gen_subject
from tests.fixtures.nats import ScriptedBackend, TcpProxy, running_worker, wait_for_responders
from tests.fixtures.wait import eventually


def _req(site: str = "site1", **kw: object) -> GenerateRequest:
    fields: dict[str, object] = {"request_id": "r1", "site": site, "prompt": "one two three"}
    fields.update(kw)
    return GenerateRequest(**fields)  # type: ignore[arg-type]


async def test_request_through_leaf_reaches_worker_on_hub_and_streams_in_order(
    nats_hub: NatsServer, nats_leaf: NatsServer
) -> None:
    chunks = [f"t{i} " for i in range(40)]
    backend = ScriptedBackend(chunks)
    async with running_worker(nats_hub.url, backend, name="w-hub"):
        edge = await nats.connect(nats_leaf.url)
        try:
            await wait_for_responders(edge, "site1")
            items = [
                item
                async for item in stream_generate(
                    edge, _req(stream=True, passages=()), timeout_s=10
                )
            ]
        finally:
            await edge.close()
    tokens = [i for i in items if isinstance(i, Token)]
    assert [t.seq for t in tokens] == list(range(40))
    assert [t.text for t in tokens] == chunks
    done = items[-1]
    assert isinstance(done, Done)
    assert done.text == "".join(chunks)
    assert done.n_tokens == 40
    assert done.worker == "w-hub"
    # the worker saw the absolute deadline the client derived from timeout_s
    assert backend.requests[-1].deadline_unix_ms > now_ms()


async def test_direct_hub_connection_and_non_streaming_request(nats_hub: NatsServer) -> None:
    async with running_worker(nats_hub.url, ScriptedBackend()):
        edge = await nats.connect(nats_hub.url)
        try:
            done = await generate(edge, _req(site="direct"), timeout_s=10)
        finally:
            await edge.close()
    assert done.text == "one two three "
    assert done.backend == "scripted"


async def test_no_responders_is_reported_at_once(nats_hub: NatsServer) -> None:
    edge = await nats.connect(nats_hub.url)
    try:
        with pytest.raises(NoResponders):
            await generate(edge, _req(site="nobody"), timeout_s=30)
    finally:
        await edge.close()


async def test_saturated_worker_answers_saturated(nats_hub: NatsServer) -> None:
    gate = asyncio.Event()
    backend = ScriptedBackend(["x"], gate=gate)
    async with running_worker(nats_hub.url, backend, concurrency=1):
        edge = await nats.connect(nats_hub.url)
        try:
            first = asyncio.create_task(generate(edge, _req(request_id="a"), timeout_s=30))
            await backend.started.wait()
            with pytest.raises(WorkerSaturated):
                await generate(edge, _req(request_id="b"), timeout_s=30, saturated_retries=0)
            gate.set()
            assert (await first).text == "x"
            # capacity is back: the next request is served
            assert (await generate(edge, _req(request_id="c"), timeout_s=30)).text == "x"
        finally:
            await edge.close()


async def test_expired_request_is_dropped_without_generating(nats_hub: NatsServer) -> None:
    backend = ScriptedBackend()
    async with running_worker(nats_hub.url, backend):
        edge = await nats.connect(nats_hub.url)
        try:
            expired = _req(deadline_unix_ms=now_ms() - 1000)
            msg = await edge.request(gen_subject("site1"), encode(expired), timeout=10)
            reply = decode_reply(msg.data)
            assert isinstance(reply, Error)
            assert reply.code == "deadline_exceeded"
            with pytest.raises(DeadlineExceeded):
                await generate(edge, expired, timeout_s=10)
        finally:
            await edge.close()
    assert backend.requests == []


async def test_deadline_passing_mid_generation_raises_deadline_exceeded(
    nats_hub: NatsServer,
) -> None:
    backend = ScriptedBackend(["a"] * 100, delay_s=0.05)
    async with running_worker(nats_hub.url, backend):
        edge = await nats.connect(nats_hub.url)
        try:
            with pytest.raises(DeadlineExceeded):
                await generate(edge, _req(stream=True), timeout_s=0.5)
        finally:
            await edge.close()


async def test_edge_link_cut_mid_request_raises_link_down(
    nats_hub: NatsServer,
    nats_leaf: NatsServer,
    tcp_proxy_factory: Callable[[str, int], TcpProxy],
) -> None:
    proxy = tcp_proxy_factory(nats_leaf.conf.host, nats_leaf.conf.port)
    backend = ScriptedBackend(["a"], gate=asyncio.Event())
    async with running_worker(nats_hub.url, backend):
        edge = await nats.connect(f"nats://{proxy.url_hostport}", reconnect_time_wait=0.2)
        try:
            await wait_for_responders(edge, "site1")
            task = asyncio.create_task(generate(edge, _req(), timeout_s=60))
            await backend.started.wait()
            proxy.cut()
            with pytest.raises(LinkDown):
                await task
            with pytest.raises(LinkDown):
                await generate(edge, _req(request_id="r2"), timeout_s=60)
        finally:
            assert backend.gate is not None
            backend.gate.set()
            proxy.restore()
            await close_nats(edge)  # edge.close() here can raise nats-py's own CancelledError


async def test_leaf_to_hub_cut_gives_no_responders_then_recovers(
    nats_hub: NatsServer,
    nats_leaf_factory: Callable[..., NatsServer],
    tcp_proxy_factory: Callable[[str, int], TcpProxy],
) -> None:
    proxy = tcp_proxy_factory(nats_hub.conf.host, nats_hub.conf.leaf_port)
    leaf = nats_leaf_factory("site2", f"nats-leaf://{proxy.url_hostport}")
    async with running_worker(nats_hub.url, ScriptedBackend()):
        edge = await nats.connect(leaf.url)
        try:
            await wait_for_responders(edge, "site2")
            assert (await generate(edge, _req(site="site2"), timeout_s=10)).text
            proxy.cut()
            await eventually(lambda: leaf.leafnode_count() == 0, what="the leaf to lose the hub")
            with pytest.raises(NoResponders):
                await generate(edge, _req(site="site2", request_id="r2"), timeout_s=10)
            proxy.restore()
            await asyncio.to_thread(leaf.wait_leafnodes, 1, 30.0)
            await wait_for_responders(edge, "site2")
            done = await generate(edge, _req(site="site2", request_id="r3"), timeout_s=10)
            assert done.text == "one two three "
        finally:
            await edge.close()


async def test_request_without_deadline_is_served(nats_hub: NatsServer) -> None:
    async with running_worker(nats_hub.url, ScriptedBackend(["a", "b"])):
        edge = await nats.connect(nats_hub.url)
        try:
            inbox = edge.new_inbox()
            sub = await edge.subscribe(inbox)
            await edge.publish(gen_subject("site1"), encode(_req(stream=True)), reply=inbox)
            kinds = []
            while not kinds or kinds[-1] not in ("Done", "Error"):
                kinds.append(type(decode_reply((await sub.next_msg(timeout=10)).data)).__name__)
        finally:
            await edge.close()
    assert kinds == ["Accepted", "Token", "Token", "Done"]


async def test_closed_connection_raises_link_down(nats_hub: NatsServer) -> None:
    edge = await nats.connect(nats_hub.url)
    await edge.close()
    with pytest.raises(LinkDown):
        await generate(edge, _req(), timeout_s=5)


async def test_second_worker_takes_load_when_first_is_busy(nats_hub: NatsServer) -> None:
    gate = asyncio.Event()
    b1, b2 = ScriptedBackend(["1"], gate=gate), ScriptedBackend(["2"], gate=gate)
    async with (
        running_worker(nats_hub.url, b1, concurrency=1, name="w1"),
        running_worker(nats_hub.url, b2, concurrency=1, name="w2"),
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            tasks = [
                asyncio.create_task(
                    generate(
                        edge,
                        _req(site="scale", request_id=f"s{i}"),
                        timeout_s=30,
                        saturated_retries=50,
                    )
                )
                for i in range(2)
            ]
            await b1.started.wait()
            await b2.started.wait()  # both workers hold one request each
            gate.set()
            done = await asyncio.gather(*tasks)
        finally:
            await edge.close()
    assert {d.worker for d in done} == {"w1", "w2"}


async def test_silent_leaf_link_loss_is_noticed_by_pings_then_recovers(
    nats_hub: NatsServer,
    nats_leaf_factory: Callable[..., NatsServer],
    tcp_proxy_factory: Callable[[str, int], TcpProxy],
) -> None:
    proxy = tcp_proxy_factory(nats_hub.conf.host, nats_hub.conf.leaf_port)
    leaf = nats_leaf_factory("site3", f"nats-leaf://{proxy.url_hostport}", ping_interval_s=1)
    async with running_worker(nats_hub.url, ScriptedBackend()):
        edge = await nats.connect(leaf.url)
        try:
            await wait_for_responders(edge, "site3")
            proxy.blackhole()
            await eventually(  # ping_interval 1s x ping_max 2
                lambda: leaf.leafnode_count() == 0, interval=0.1, what="the leaf to lose the hub"
            )
            with pytest.raises(NoResponders):
                await generate(edge, _req(site="site3"), timeout_s=10)
            proxy.restore()
            await asyncio.to_thread(leaf.wait_leafnodes, 1, 30.0)
            await wait_for_responders(edge, "site3")
            assert (await generate(edge, _req(site="site3"), timeout_s=10)).text
        finally:
            await edge.close()


async def test_interactive_requests_overtake_queued_background_ones(nats_hub: NatsServer) -> None:
    gate = asyncio.Event()
    backend = ScriptedBackend(["x"], gate=gate)
    backend.parallel = 1  # type: ignore[attr-defined]  # like llama.cpp: one at a time
    async with running_worker(nats_hub.url, backend, concurrency=4) as worker:
        edge = await nats.connect(nats_hub.url)
        try:

            def send(rid: str, priority: str) -> asyncio.Task[Done]:
                req = _req(site="prio", request_id=rid, priority=priority)
                return asyncio.create_task(generate(edge, req, timeout_s=10))

            first = send("a", "background")  # takes the only slot, held by the gate
            await asyncio.wait_for(backend.started.wait(), 5)
            queued_background = send("b", "background")
            await eventually(lambda: worker.slots.waiting >= 1, interval=0.01, what="b queued")
            interactive = send("c", "interactive")
            await eventually(lambda: worker.slots.waiting >= 2, interval=0.01, what="c queued")
            gate.set()
            await asyncio.gather(first, queued_background, interactive)
        finally:
            await edge.close()
    assert [r.request_id for r in backend.requests] == ["a", "c", "b"]


async def test_background_requests_leave_a_place_for_interactive(nats_hub: NatsServer) -> None:
    gate = asyncio.Event()
    backend = ScriptedBackend(["x"], gate=gate)
    async with running_worker(nats_hub.url, backend, concurrency=2):
        edge = await nats.connect(nats_hub.url)
        try:
            held = asyncio.create_task(
                generate(edge, _req(site="places", priority="background"), timeout_s=10)
            )
            await asyncio.wait_for(backend.started.wait(), 5)
            with pytest.raises(WorkerSaturated):
                await generate(
                    edge,
                    _req(site="places", request_id="r2", priority="background"),
                    timeout_s=10,
                    saturated_retries=0,
                )
            live = asyncio.create_task(
                generate(edge, _req(site="places", request_id="r3"), timeout_s=10)
            )
            await eventually(  # the interactive one got the kept place
                lambda: len(backend.requests) >= 2, interval=0.01, what="r3 served"
            )
            gate.set()
            done = await asyncio.gather(held, live)
        finally:
            await edge.close()
    assert [d.request_id for d in done] == ["r1", "r3"]
