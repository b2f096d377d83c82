"""Closing a NATS connection in every state it can be in at shutdown (`close_nats`).

nats-py 2.16 can raise CancelledError from `close()` when a reconnect is under way: it
cancels its reconnect task, that cancel reaches the transport's close future, and the
close then awaits the cancelled future. A service stopping while its WAN link is down must
still stop cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats
import pytest

from aivos.edge.uplink.link import Uplink
from aivos.shared.natsconf import NatsServer
from aivos.shared.natsconf.connect import close_nats, connect_nats
from tests.fixtures.nats import UNPATCHED_CLOSE, TcpProxy

ROUNDS = 12


@pytest.fixture(autouse=True)
def _library_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite wraps nats-py's close (tests/fixtures/nats.py); these tests need its own."""
    monkeypatch.setattr(nats.NATS, "close", UNPATCHED_CLOSE)


async def _reconnecting(nc: nats.NATS) -> None:
    """Wait, turn by turn of the loop, until the client has noticed the cut (a polling
    interval would let the reconnect task get past the window the test is after)."""
    for _ in range(100_000):
        if nc.is_reconnecting:
            return
        await asyncio.sleep(0)
    raise AssertionError("the client did not notice the cut")


async def test_close_while_reconnecting_finishes_without_error(
    nats_hub: NatsServer, tcp_proxy_factory: Callable[[str, int], TcpProxy]
) -> None:
    proxy = tcp_proxy_factory(nats_hub.conf.host, nats_hub.conf.port)
    for round_no in range(ROUNDS):
        proxy.restore()
        nc = await nats.connect(f"nats://{proxy.url_hostport}", reconnect_time_wait=0.2)
        proxy.cut()
        await _reconnecting(nc)
        # Closing within a few loop turns of the cut catches the reconnect task while it
        # still awaits the old transport's close (where nats-py's own cancel lands);
        # later rounds close from its backoff or its connect to the restored link.
        for _ in range(round_no % 3):
            await asyncio.sleep(0)
        if round_no >= ROUNDS // 2:
            proxy.restore()
            await asyncio.sleep(0.05 * (round_no % 4))
        await close_nats(nc)
        assert nc.is_closed, f"round {round_no}"


async def test_close_when_connected_drains_what_was_published(nats_hub: NatsServer) -> None:
    reader = await nats.connect(nats_hub.url)
    sub = await reader.subscribe("close.drain")
    await reader.flush()
    writer = await nats.connect(nats_hub.url)
    for i in range(100):
        await writer.publish("close.drain", str(i).encode())
    await close_nats(writer)
    assert writer.is_closed
    got = [int((await sub.next_msg(timeout=10)).data) for _ in range(100)]
    assert got == list(range(100))
    await close_nats(reader)
    await close_nats(reader)  # closing twice is fine
    assert reader.is_closed


async def test_our_own_cancellation_still_propagates(
    nats_hub: NatsServer, tcp_proxy_factory: Callable[[str, int], TcpProxy]
) -> None:
    proxy = tcp_proxy_factory(nats_hub.conf.host, nats_hub.conf.port)
    nc = await nats.connect(f"nats://{proxy.url_hostport}", reconnect_time_wait=5)
    proxy.cut()
    await _reconnecting(nc)
    closing = asyncio.create_task(close_nats(nc))
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing


async def test_the_edge_uplink_stops_while_its_link_is_down(
    nats_hub: NatsServer, tcp_proxy_factory: Callable[[str, int], TcpProxy]
) -> None:
    """Before close_nats the uplink only drained, which nats-py refuses while reconnecting:
    the connection and its reconnect task outlived the agent."""
    proxy = tcp_proxy_factory(nats_hub.conf.host, nats_hub.conf.port)
    uplink = Uplink(f"nats://{proxy.url_hostport}", "site-close")
    await uplink.start()
    assert await uplink.wait_up(30)
    nc = uplink.nc
    assert nc is not None
    proxy.cut()
    await _reconnecting(nc)
    await uplink.stop()
    assert nc.is_closed
    assert uplink.state == "closed"


async def test_connect_nats_reports_closed_once_however_the_close_ends(
    nats_hub: NatsServer, tcp_proxy_factory: Callable[[str, int], TcpProxy]
) -> None:
    """nats-py runs its closed callback last in its close, so the close that ends in its own
    CancelledError (a close while the reconnect task awaits the old transport's close,
    here one extra loop turn after the cut) skipped it: `on_state` saw nothing at all,
    not even "disconnected", and a consumer kept showing the link up. A close that
    nats-py finishes itself (a drain, a close from the reconnect backoff) must not report
    it twice."""
    proxy = tcp_proxy_factory(nats_hub.conf.host, nats_hub.conf.port)
    seen: dict[str, list[str]] = {}
    for extra_turns in range(3):
        proxy.restore()
        states = seen[f"reconnecting, {extra_turns} extra turns"] = []
        nc = await connect_nats(f"nats://{proxy.url_hostport}", name="t", on_state=states.append)
        proxy.cut()
        await _reconnecting(nc)
        for _ in range(extra_turns):
            await asyncio.sleep(0)
        await close_nats(nc)
        assert nc.is_closed
    proxy.restore()
    states = seen["connected (drained)"] = []
    nc = await connect_nats(f"nats://{proxy.url_hostport}", name="t", on_state=states.append)
    await close_nats(nc)
    await close_nats(nc)
    assert nc.is_closed
    closed = {case: states.count("closed") for case, states in seen.items()}
    assert closed == dict.fromkeys(seen, 1), seen


async def test_a_cancelled_close_reports_closed_and_still_propagates(
    nats_hub: NatsServer, tcp_proxy_factory: Callable[[str, int], TcpProxy]
) -> None:
    """Our caller's cancellation, landing in the middle of nats-py's close, skipped the
    closed callback too; it is reported, then the cancellation goes on."""
    proxy = tcp_proxy_factory(nats_hub.conf.host, nats_hub.conf.port)
    states: list[str] = []
    nc = await connect_nats(f"nats://{proxy.url_hostport}", name="t", on_state=states.append)
    proxy.cut()
    await _reconnecting(nc)
    closing = asyncio.create_task(close_nats(nc))
    while not nc.is_closed:  # nats-py marks the client closed first, then closes it
        await asyncio.sleep(0)
    assert not closing.done()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert states.count("closed") == 1, states
