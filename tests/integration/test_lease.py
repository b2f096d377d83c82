"""The rollout lease (`aivos.cloud.fleet.lease.Lease`) when a write's answer is lost.

On a private hub (the lease bucket has a fixed name and a TTL), through `FlakyApi`
(tests/fixtures/flaky_jetstream.py), which forwards the lease's KV writes to the server and
can drop an answer after the server applied the write. The lease's TTL is long (60 s), so
only the renewals the test makes (`renew()`) happen while it runs, and no validity runs out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.aio.client import Client as NATSClient
from nats.js.kv import KeyValue

from aivos.cloud.fleet.lease import LEASE_BUCKET, Lease
from aivos.shared.natsconf import NatsServer
from tests.fixtures.flaky_jetstream import FlakyApi, WritesViaFlaky

pytestmark = pytest.mark.asyncio(loop_scope="session")

_NAME = "t"
_TTL_S = 60.0


@pytest.fixture
async def hub_nc(nats_hub_factory: Callable[[], NatsServer]) -> AsyncIterator[NATSClient]:
    nc = await nats.connect(nats_hub_factory().url)
    yield nc
    await nc.close()


async def _lease(nc: NATSClient, api: FlakyApi, holder: str = "one") -> Lease:
    """A lease whose writes go through `api`, taken (its create answered)."""
    lease = await Lease(WritesViaFlaky(nc), _NAME, holder=holder, ttl_s=_TTL_S).start()
    assert lease.held and api.actions("$KV") == ["pass"]
    return lease


async def _bucket(nc: NATSClient) -> KeyValue:
    return await nc.jetstream().key_value(LEASE_BUCKET)


async def test_a_renewal_whose_answer_was_lost_keeps_the_lease(
    hub_nc: NATSClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The server applies a renewal but its answer is lost: the next renewal is refused
    (wrong last sequence), finds this holder's value stored and renews from that revision.
    The lease is kept, not lost and retaken after the TTL."""
    api = await FlakyApi(hub_nc, {}).start()
    lease = await _lease(hub_nc, api)
    caplog.set_level("INFO", logger="aivos.cloud.fleet.lease")
    try:
        api.script["$KV"] = ["apply_silent"]
        await lease.renew()  # applied (revision 2), unanswered: a timeout
        assert lease.held  # still within the validity of the create

        await lease.renew()  # refused (last=1), then renewed with last=2

        assert lease.held and lease.acquired == 1
        assert "lease t lost by one" not in caplog.text
        # create, the lost renewal, the refused one, the renewal from the stored revision
        assert api.actions("$KV") == ["pass", "apply_silent", "pass", "pass"]
        entry = await (await _bucket(hub_nc)).get(_NAME)
        assert (entry.value, entry.revision) == (b"one", 3)
        await lease.renew()  # the lease now renews from the right revision, first time
        assert api.actions("$KV")[4:] == ["pass"]
        assert (await (await _bucket(hub_nc)).get(_NAME)).revision == 4
    finally:
        await lease.stop()


async def test_a_take_whose_answer_was_lost_is_held_at_the_next_step(
    hub_nc: NATSClient,
) -> None:
    """The server applies the create but its answer is lost: the next step's create is
    refused, finds this holder's value and renews it (instead of failing until the TTL)."""
    api = await FlakyApi(hub_nc, {"$KV": ["apply_silent"]}).start()
    lease = await Lease(WritesViaFlaky(hub_nc), _NAME, holder="one", ttl_s=_TTL_S).start()
    try:
        assert not lease.held  # the create's answer never came

        await lease.renew()

        assert lease.held and lease.acquired == 1
        assert api.actions("$KV") == ["apply_silent", "pass", "pass"]  # refused, renewed
        entry = await (await _bucket(hub_nc)).get(_NAME)
        assert (entry.value, entry.revision) == (b"one", 2)
    finally:
        await lease.stop()


async def test_a_lease_another_holder_took_is_lost_at_once(
    hub_nc: NATSClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Another holder's value is stored (it took the lease over): the next renewal is
    refused and reads the entry, and the lease is lost then — not renewed over the other
    holder, and not kept until its validity runs out."""
    api = await FlakyApi(hub_nc, {}).start()
    lease = await _lease(hub_nc, api)
    caplog.set_level("INFO", logger="aivos.cloud.fleet.lease")
    kv = await _bucket(hub_nc)
    try:
        taken = await kv.put(_NAME, b"two")

        await lease.renew()

        assert not lease.held
        assert "lease t lost by one" in caplog.text
        entry = await kv.get(_NAME)
        assert (entry.value, entry.revision) == (b"two", taken)  # left alone
        await lease.renew()  # a take while "two" holds it: refused, still not ours
        assert not lease.held and lease.acquired == 1
        assert (await kv.get(_NAME)).revision == taken
    finally:
        await lease.stop()


async def test_a_lease_whose_entry_is_gone_is_lost_then_taken_again(
    hub_nc: NATSClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The entry was deleted (another holder took the lease and released it): the renewal
    is refused, the lease is lost (another replica may have led meanwhile), and the next
    step takes it again."""
    api = await FlakyApi(hub_nc, {}).start()
    lease = await _lease(hub_nc, api)
    caplog.set_level("INFO", logger="aivos.cloud.fleet.lease")
    kv = await _bucket(hub_nc)
    try:
        await kv.delete(_NAME)

        await lease.renew()
        assert not lease.held
        assert "lease t lost by one" in caplog.text

        await lease.renew()
        assert lease.held and lease.acquired == 2
        assert (await kv.get(_NAME)).value == b"one"
    finally:
        await lease.stop()
