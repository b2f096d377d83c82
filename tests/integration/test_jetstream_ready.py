"""JetStream calls retried while JetStream cannot answer (`aivos.shared.jsready`).

Against the session hub, through `FlakyApi` (tests/fixtures/flaky_jetstream.py): a
responder on a private API prefix that answers each JetStream request as scripted (no
answer, a 503, or the real server's answer, optionally dropped after the server applied
it) — the helper retries timeouts and 503s and nothing else. Against a 3-node cluster that
has lost its quorum: the config bucket is created at R3 once the nodes are back, and the
console's fleet connector keeps trying through JetStream timeouts instead of giving up."""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATSClient
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import KeyValueConfig, StreamConfig
from nats.js.errors import NotFoundError, ServiceUnavailableError

from aivos.cloud.fleet.config import ConfigStore
from aivos.cloud.fleet.service import FleetService
from aivos.cloud.jetstream import open_key_value
from aivos.cloud.models.catalogue_store import CATALOGUE_KEY, CatalogueStore, decode_pushed
from aivos.shared.jsready import NOT_READY, JetStreamPermissionDenied, until_jetstream_answers
from aivos.shared.natsconf import NatsServer
from aivos.shared.subjects import CONFIG_BUCKET
from tests.fixtures.flaky_jetstream import PREFIX, FlakyApi, WritesViaFlaky
from tests.fixtures.nats import completes_once_quorum_returns, serve_config
from tests.fixtures.wait import eventually

_RAISED = {"silent": NatsTimeoutError, "503": ServiceUnavailableError}

_OURS = ("READY_", "KV_ready_", "KV_raced_", "OBJ_ready_")  # streams made on the shared hub


@pytest.fixture
async def hub_nc(nats_hub: NatsServer) -> AsyncIterator[NATSClient]:
    nc = await nats.connect(nats_hub.url)
    yield nc
    js = nc.jetstream()
    for info in await js.streams_info():
        if info.config.name and info.config.name.startswith(_OURS):
            await js.delete_stream(info.config.name)
    await nc.close()


def _name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


async def test_retries_timeouts_and_503s_until_jetstream_answers(
    hub_nc: NATSClient, caplog: pytest.LogCaptureFixture
) -> None:
    stream = _name("READY")
    await hub_nc.jetstream().add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
    api = await FlakyApi(hub_nc, {"STREAM.INFO": ["silent", "503", "silent", "503"]}).start()
    js = hub_nc.jetstream(prefix=PREFIX, timeout=0.5)
    caplog.set_level("INFO", logger="aivos.shared.jsready")

    info = await until_jetstream_answers(lambda: js.stream_info(stream), what="probe")

    assert info.config.name == stream
    assert api.actions("STREAM.INFO") == ["silent", "503", "silent", "503", "pass"]
    retries = [r.getMessage() for r in caplog.records if "probe: JetStream not ready" in r.message]
    assert len(retries) == 4, retries
    assert "TimeoutError" in retries[0] and "ServiceUnavailableError" in retries[1]


async def test_at_the_deadline_the_last_error_is_raised(hub_nc: NATSClient) -> None:
    """A 503, then no answer at all: a try outlasts the deadline, and what it raised (the
    timeout, not the first 503) is what the caller gets."""
    api = await FlakyApi(hub_nc, {"STREAM.INFO": ["503"]}, default="silent").start()
    js = hub_nc.jetstream(prefix=PREFIX, timeout=3.0)

    with pytest.raises(NOT_READY) as raised:
        await until_jetstream_answers(lambda: js.stream_info("ANY"), what="probe", timeout_s=2.0)

    served = api.actions("STREAM.INFO")
    assert served[0] == "503"
    assert type(raised.value) is _RAISED[served[-1]]


async def test_zero_timeout_is_one_try(hub_nc: NATSClient) -> None:
    api = await FlakyApi(hub_nc, {"STREAM.INFO": ["503"]}).start()
    js = hub_nc.jetstream(prefix=PREFIX)

    with pytest.raises(ServiceUnavailableError):
        await until_jetstream_answers(lambda: js.stream_info("ANY"), what="probe", timeout_s=0)

    assert api.actions("STREAM.INFO") == ["503"]


async def test_other_errors_are_raised_at_once(
    hub_nc: NATSClient, caplog: pytest.LogCaptureFixture
) -> None:
    js = hub_nc.jetstream()
    tries = 0

    async def lookup() -> object:
        nonlocal tries
        tries += 1
        return await js.stream_info(_name("MISSING"))

    caplog.set_level("INFO", logger="aivos.shared.jsready")
    with pytest.raises(NotFoundError):
        await until_jetstream_answers(lookup, what="probe", timeout_s=60)

    assert tries == 1
    assert "JetStream not ready" not in caplog.text


async def test_a_create_that_timed_out_but_was_applied_is_found_by_the_retry(
    hub_nc: NATSClient,
) -> None:
    """The server creates the bucket but its answer is lost: the retry looks it up (no
    second create) and returns the bucket."""
    bucket = _name("ready")
    api = await FlakyApi(hub_nc, {"STREAM.CREATE": ["apply_silent"]}).start()
    js = hub_nc.jetstream(prefix=PREFIX, timeout=1.0)

    kv = await open_key_value(js, KeyValueConfig(bucket=bucket, history=3))

    assert kv._name == bucket  # noqa: SLF001 (nats-py has no public name)
    assert api.actions("STREAM.CREATE") == ["apply_silent"]
    assert api.actions("STREAM.INFO") == ["pass", "pass"]  # missing, then found
    info = await hub_nc.jetstream().stream_info(f"KV_{bucket}")
    assert info.config.max_msgs_per_subject == 3


async def test_a_bucket_created_meanwhile_with_another_config_is_opened(
    hub_nc: NATSClient,
) -> None:
    """The lookup finds no bucket, then another process creates it (with another config)
    before our create lands: "already in use" is no error, the bucket is opened as it is."""
    bucket = _name("raced")
    real = hub_nc.jetstream()

    async def rival() -> None:
        await real.create_key_value(KeyValueConfig(bucket=bucket, history=7))

    api = await FlakyApi(hub_nc, {"STREAM.INFO": ["stale"]}, on_stale=rival).start()
    js = hub_nc.jetstream(prefix=PREFIX)

    kv = await open_key_value(js, KeyValueConfig(bucket=bucket, history=2), ready_timeout_s=0)

    assert kv._name == bucket  # noqa: SLF001
    assert api.actions("STREAM.CREATE") == ["pass"]  # refused: in use
    assert api.actions("STREAM.INFO") == ["stale", "pass"]
    info = await real.stream_info(f"KV_{bucket}")
    assert info.config.max_msgs_per_subject == 7  # the rival's config stays


async def _bucket_via_flaky(
    hub_nc: NATSClient, script: dict[str, list[str]]
) -> tuple[Any, FlakyApi]:
    """A fresh KV bucket (history 5), opened through `FlakyApi` with `script`."""
    bucket = _name("ready")
    await hub_nc.jetstream().create_key_value(KeyValueConfig(bucket=bucket, history=5))
    api = await FlakyApi(hub_nc, script).start()
    return await WritesViaFlaky(hub_nc).key_value(bucket), api


async def _history(kv: Any, key: str) -> list[bytes]:
    return [entry.value for entry in await kv.history(key)]


async def test_config_put_whose_answer_was_lost_is_written_again_with_the_same_value(
    hub_nc: NATSClient,
) -> None:
    """The config value is stored but its answer is lost: the put is retried with the same
    bytes (same version), so the key gets one more revision with the same content."""
    kv, api = await _bucket_via_flaky(hub_nc, {"$KV": ["pass", "apply_silent"]})
    store = ConfigStore(kv)

    version = await store.put("s1", {"bundle_version": "b-1"})

    assert version == 1
    assert api.actions("$KV") == ["pass", "apply_silent", "pass"]  # counter, value twice
    first, second = await _history(kv, "s1")
    assert first == second and json.loads(first)["version"] == 1
    assert await store.get_raw("s1") == {"bundle_version": "b-1", "version": 1}


async def test_config_version_taken_without_an_answer_is_skipped_not_shared(
    hub_nc: NATSClient,
) -> None:
    """The counter's compare-and-set is applied but its answer is lost: the retry reads the
    counter again, finds it moved and takes the next number; version 1 is skipped rather
    than assumed ours (another put may have taken it). A 503 on the next write is retried
    too."""
    kv, api = await _bucket_via_flaky(hub_nc, {"$KV": ["apply_silent", "pass", "503"]})
    store = ConfigStore(kv)

    version = await store.put(None, {"heartbeat_interval_s": 30})

    assert version == 2
    # the counter's create (applied, unanswered), its update to 2, the value (503, again)
    assert api.actions("$KV") == ["apply_silent", "pass", "503", "pass"]
    assert await _history(kv, "_version") == [b"1", b"2"]
    assert (await store.get_raw(None))["version"] == 2


_CATALOGUE = """
[models.primary]
backend = "llamacpp"
version = "p-2"

[classes.small]
chain = ["primary"]
"""


@pytest.mark.parametrize("stored_before", [False, True], ids=["create", "update"])
async def test_catalogue_push_whose_answer_was_lost_is_done_once(
    hub_nc: NATSClient, stored_before: bool
) -> None:
    """The catalogue is stored but the answer is lost: the retry is refused (wrong last
    sequence), the push reads again, finds exactly what it wrote and is done: one new
    revision, one version (watchers would apply a second one again)."""
    kv, api = await _bucket_via_flaky(hub_nc, {})
    store = CatalogueStore(kv)
    if stored_before:
        assert await store.push(_CATALOGUE) == 1
    api.script["$KV"] = ["apply_silent"]

    version = await store.push(_CATALOGUE)

    expected = 2 if stored_before else 1
    assert version == expected
    values = await _history(kv, CATALOGUE_KEY)
    assert [decode_pushed(v)[0] for v in values] == list(range(1, expected + 1))
    assert api.actions("$KV")[-2:] == ["apply_silent", "pass"]  # the retry: refused


_PERMISSIONS_CONF = """
listen: 127.0.0.1:{port}
jetstream {{ store_dir: "{store}" }}
authorization {{
  users = [
    {{ user: "limited", password: "limited",
       permissions: {{ publish: {{ deny: ["$JS.API.STREAM.CREATE.>"] }} }} }}
  ]
}}
"""


@pytest.fixture
def limited_hub(tmp_path: Path) -> Iterator[str]:
    """A hub whose one user may use JetStream but not create streams (a missing grant)."""
    for port in serve_config(tmp_path, _PERMISSIONS_CONF):
        yield f"nats://limited:limited@127.0.0.1:{port}"


async def test_a_missing_jetstream_grant_is_named_at_once_not_retried(
    limited_hub: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server drops the denied create (the client would time out, again and again) but
    sends a permissions violation: the open fails at once, naming the subject."""
    nc = await eventually(lambda: nats.connect(limited_hub), timeout=30, what="the hub up")
    caplog.set_level("INFO", logger="aivos.cloud.jetstream")
    try:
        with pytest.raises(JetStreamPermissionDenied) as raised:
            await open_key_value(
                nc.jetstream(timeout=1.0), KeyValueConfig(bucket="denied"), ready_timeout_s=30
            )
    finally:
        await nc.close()

    denied = "$JS.API.STREAM.CREATE.KV_denied".lower()  # nats-py lower-cases the -ERR line
    assert (raised.value.action, raised.value.subject.lower()) == ("publish", denied)
    assert f"may not publish to '{denied}'" in str(raised.value).lower()
    assert "JetStream not ready" not in caplog.text  # no retry


def _clients_named(node: NatsServer, name: str) -> int:
    url = f"http://{node.conf.host}:{node.conf.monitor_port}/connz?limit=1000"
    with urllib.request.urlopen(url, timeout=5) as resp:
        conns = json.load(resp).get("connections") or []
    return sum(1 for c in conns if c.get("name") == name)


async def _config_bucket_replicas(nc: NATSClient) -> int:
    """The config bucket's replica count, asked until JetStream answers."""
    info = await eventually(
        lambda: nc.jetstream().stream_info(f"KV_{CONFIG_BUCKET}"),
        timeout=60,
        what="the bucket's stream info",
        ignore=NOT_READY,
    )
    return info.config.num_replicas or 1  # unset: one


@pytest.mark.slow
async def test_config_bucket_is_created_at_r3_once_the_cluster_regains_quorum(
    nats_cluster_factory: Callable[..., list[NatsServer]], caplog: pytest.LogCaptureFixture
) -> None:
    """Two of three hub nodes are down: creating the R3 config bucket waits (retrying)
    instead of failing, and completes when the nodes are back."""
    survivor, *downed = nats_cluster_factory(3)
    for node in downed:
        node.kill()
    nc = await nats.connect(survivor.url)
    try:
        store = await completes_once_quorum_returns(
            downed,
            ConfigStore.open(nc.jetstream(), replicas=3, ready_timeout_s=300),
            caplog,
            logger="aivos.cloud.jetstream",
            retry_text=f"KV bucket {CONFIG_BUCKET}: JetStream not ready",
        )
        assert store.kv._name == CONFIG_BUCKET  # noqa: SLF001
        assert await _config_bucket_replicas(nc) == 3
    finally:
        await nc.close()


@pytest.mark.slow
async def test_console_fleet_connector_keeps_trying_through_jetstream_timeouts(
    tmp_path: Path,
    nats_cluster_factory: Callable[..., list[NatsServer]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The console's background connector (``wait_for_hub=False``) meets a hub whose
    JetStream cannot answer: each try fails with a timeout, is logged, and is tried again
    (on a new connection; the failed ones are closed) until the nodes are back."""
    survivor, *downed = nats_cluster_factory(3)
    for node in downed:
        node.kill()
    caplog.set_level("INFO", logger="aivos.cloud.fleet.service")
    service = FleetService(tmp_path / "data", survivor.url, js_replicas=3, js_ready_timeout_s=1.0)
    await service.start(wait_for_hub=False)
    try:
        await eventually(
            lambda: service.connect_failures >= 2, timeout=180, what="two failed tries"
        )
        assert "fleet: hub JetStream not ready (" in caplog.text
        assert service.config is None and service.nc is None
        for node in downed:
            node.spawn()
        await eventually(lambda: service.config is not None, timeout=300, what="the fleet up")
        nc = service.nc
        assert nc is not None and nc.is_connected

        # the failed tries' connections are closed: one stays (a leak would keep more)
        async def one_connection() -> bool:
            return await asyncio.to_thread(_clients_named, survivor, "aivos-fleet") == 1

        await eventually(
            one_connection,
            timeout=30,
            what="one fleet connection",
        )
        assert await _config_bucket_replicas(nc) == 3
    finally:
        await service.stop()
