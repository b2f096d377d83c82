"""Least privilege, TLS and revocation on the secured hub, with real nats-server processes.

One secured hub (TLS + certificate-mapped users, `cloud.fleet.enroll`) and enrolled site
leaves started from their kits. The denial matrix runs every attempt from a client of
site A's leaf; each row must be denied and leave no trace at the cloud side.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig

from aivos.cloud.fleet.enroll import (
    enroll_site,
    retire_rotated,
    revoke_site,
    rotate_site,
    secure_hub_config,
    service_identity,
)
from aivos.cloud.models.catalogue_store import CatalogueStore, CatalogueWatch
from aivos.edge.fleet.config_watch import KeyEntry, watch_key
from aivos.shared.fleet import bundle_report_subject, config_report_subject
from aivos.shared.natsconf import NatsServer, free_port, nats_server_binary
from aivos.shared.natsconf.connect import tls_context
from aivos.shared.natsconf.permissions import service_inbox_prefix, site_inbox_prefix
from aivos.shared.natsconf.pki import init_pki
from aivos.shared.subjects import (
    CONFIG_BUCKET,
    MODELS_BUCKET,
    SYNC_STREAM,
    gen_subject,
    heartbeat_subject,
    sync_subject,
)
from aivos.shared.syncwire import ensure_sync_stream
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.asyncio


class Leaf:
    """A site leaf started from its enrollment kit (``nats-server -c KIT/leaf.conf``)."""

    def __init__(self, kit: Path, port: int) -> None:
        self.kit, self.port = kit, port
        self.url = f"nats://127.0.0.1:{port}"
        log = (kit / "leaf.log").open("ab")
        self.proc = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(kit / "leaf.conf")], stdout=log, stderr=log
        )
        log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Rig:
    data_dir: Path
    hub: NatsServer
    leaves: dict[str, Leaf] = field(default_factory=dict)

    def start_site(self, site: str, *, rotate: bool = False) -> Leaf:
        port = free_port()
        out = self.data_dir / f"kit-{site}-{len(self.leaves)}"
        make = rotate_site if rotate else enroll_site
        kit = make(self.data_dir, site, out, leaf_port=port)
        leaf = Leaf(kit, port)
        self.leaves[f"{site}-{len(self.leaves)}"] = leaf
        return leaf

    async def admin(self) -> NATS:
        ident = service_identity(self.data_dir, "admin")
        return await nats.connect(
            self.hub.url, tls=tls_context(ident), inbox_prefix=service_inbox_prefix("admin")
        )


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    data_dir = tmp_path_factory.mktemp("secure-hub")
    conf = secure_hub_config(
        data_dir, port=free_port(), leaf_port=free_port(), monitor_port=free_port()
    )
    hub = NatsServer(conf, data_dir / "nats").start()
    rig = Rig(data_dir, hub)
    try:
        yield rig
    finally:
        for leaf in rig.leaves.values():
            leaf.stop()
        hub.stop()


async def _leaf_count(rig: Rig, n: int) -> None:
    await eventually(
        lambda: rig.hub.leafnode_count() >= n, timeout=60, what=f"{n} leaf connections"
    )


async def _received(nc: NATS, subject: str, action: Callable[[], Awaitable[object]]) -> list[str]:
    """Subscribe `nc` to `subject`, run `action`, return the subjects that arrived."""
    got: list[str] = []

    async def cb(msg: nats.aio.msg.Msg) -> None:
        got.append(msg.subject)

    sub = await nc.subscribe(subject, cb=cb)
    await nc.flush()
    await asyncio.sleep(0.3)  # interest crosses the leaf link asynchronously
    await action()
    await asyncio.sleep(0.5)
    await sub.unsubscribe()
    return got


async def _arrives(nc: NATS, subject: str, action: Callable[[], Awaitable[object]]) -> list[str]:
    """Subscribe `nc` to `subject` and run `action` until a message arrives (the interest
    crosses the leaf link asynchronously: an early one may find nobody); return the
    subjects that arrived, each once."""
    got: list[str] = []

    async def cb(msg: nats.aio.msg.Msg) -> None:
        got.append(msg.subject)

    sub = await nc.subscribe(subject, cb=cb)
    await nc.flush()

    async def sent_and_arrived() -> bool:
        if not got:
            await action()
        return bool(got)

    try:
        await eventually(sent_and_arrived, timeout=60, interval=0.2, what=f"a message on {subject}")
    finally:
        await sub.unsubscribe()
    return sorted(set(got))


async def _fails(coro: Awaitable[object]) -> bool:
    try:
        await asyncio.wait_for(coro, 2.0)
    except Exception:
        return True
    return False


@pytest.fixture(scope="module")
async def world(rig: Rig) -> AsyncIterator[dict[str, object]]:
    admin = await rig.admin()
    js = admin.jetstream()
    await ensure_sync_stream(js, duplicate_window_s=60, update=False)
    kv = await js.create_key_value(KeyValueConfig(bucket=CONFIG_BUCKET, history=5))
    for key in ("a", "b", "_defaults"):
        await kv.put(key, b'{"v": 1}')
    obj = await js.create_object_store(MODELS_BUCKET)
    await obj.put("v1/manifest.json", b"{}")
    rig.start_site("a")
    rig.start_site("b")
    await _leaf_count(rig, 2)
    site_a = await nats.connect(rig.leaves["a-0"].url, inbox_prefix=site_inbox_prefix("a"))
    yield {"admin": admin, "a": site_a}
    await site_a.close()
    await admin.close()


async def test_site_can_do_what_it_needs(world: dict[str, NATS], rig: Rig) -> None:
    admin, a = world["admin"], world["a"]
    # its own heartbeat reaches the cloud
    got = await _arrives(admin, "aivos.hb.*", lambda: a.publish(heartbeat_subject("a"), b"hb"))
    assert got == [heartbeat_subject("a")]
    # its own sync record is stored (domain "hub", as the edge drainer publishes)
    ack = await a.jetstream(domain="hub").publish(sync_subject("a", "audit"), b"{}")
    assert ack.stream == SYNC_STREAM
    # its own config key and the defaults, and bundles, are readable
    # (the edge watches its keys with edge.fleet.config_watch.watch_key)
    for key in ("a", "_defaults"):
        # the watch's JetStream requests (1 s each) cross the leaf that just connected: on a
        # busy box, one may time out, so the site asks again, as the edge's watch does
        value = await eventually(
            lambda key=key: _watch_value(a, key),
            timeout=60,
            what=f"config key {key} read by the site",
            ignore=(TimeoutError,),
        )
        assert value == b'{"v": 1}'
    store = await a.jetstream(domain="hub").object_store(MODELS_BUCKET)
    assert (await store.get("v1/manifest.json")).data == b"{}"
    # a generation request reaches a worker (worker identity) and the reply comes back
    worker_id = service_identity(rig.data_dir, "worker")
    worker = await nats.connect(
        rig.hub.url, tls=tls_context(worker_id), inbox_prefix=service_inbox_prefix("worker")
    )

    async def answer(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(b"ok:" + msg.data)

    await worker.subscribe("aivos.gen.*", queue="aivos-gen", cb=answer)
    await worker.flush()

    async def replied() -> bool:
        return (await a.request(gen_subject("a"), b"hi", timeout=1)).data == b"ok:hi"

    await eventually(replied, timeout=60, what="a worker reply", ignore=(Exception,))
    await worker.close()


async def _sync_state(admin: NATS) -> tuple[int, int]:
    info = await admin.jetstream().stream_info(SYNC_STREAM)
    return info.state.messages, info.state.consumer_count


async def test_denial_matrix_from_site_a(world: dict[str, NATS], rig: Rig) -> None:
    admin, a = world["admin"], world["a"]
    js = a.jetstream(domain="hub", timeout=1.0)
    jsm_plain = a.jetstream(timeout=1.0)
    before = await _sync_state(admin)

    async def cloud_sees(subject: str, action: Callable[[], Awaitable[object]]) -> bool:
        return bool(await _received(admin, subject, action))

    async def site_sees(subject: str, cloud_subjects: list[str]) -> bool:
        async def publish() -> None:
            for s in cloud_subjects:
                await admin.publish(s, b"secret")
            await admin.flush()

        return bool(await _received(a, subject, publish))

    async def kv_put(key: str) -> bool:
        kv = await admin.jetstream().key_value(CONFIG_BUCKET)
        await _fails(a.publish(f"$KV.{CONFIG_BUCKET}.{key}", b'{"v": 999}'))
        await a.flush()
        await asyncio.sleep(0.3)
        return (await kv.get(key)).value != b'{"v": 1}'

    async def obj_put() -> bool:
        await _fails(_put_object(a))
        store = await admin.jetstream().object_store(MODELS_BUCKET)
        names = [o.name for o in await store.list()]
        return "evil/manifest.json" in names

    b_subjects = [heartbeat_subject("b"), gen_subject("b"), "aivos.evt.b.alarm"]
    rows: list[tuple[str, Callable[[], Awaitable[bool]]]] = [
        ("subscribe B heartbeat", lambda: site_sees(heartbeat_subject("b"), b_subjects)),
        ("subscribe B generation", lambda: site_sees(gen_subject("b"), b_subjects)),
        ("subscribe >", lambda: site_sees(">", b_subjects)),
        ("subscribe B inbox", lambda: site_sees("_INBOX.>", ["_INBOX.site-b.x1"])),
        (
            "publish heartbeat as B",
            lambda: cloud_sees("aivos.hb.b", lambda: a.publish(heartbeat_subject("b"), b"x")),
        ),
        (
            "publish generation as B",
            lambda: cloud_sees("aivos.gen.b", lambda: a.publish(gen_subject("b"), b"x")),
        ),
        (
            "publish sync as B",
            lambda: _succeeds(js.publish(sync_subject("b", "audit"), b"{}")),
        ),
        ("stream info AIVOS_SYNC", lambda: _succeeds(js.stream_info(SYNC_STREAM))),
        (
            "stream info AIVOS_SYNC (no domain)",
            lambda: _succeeds(jsm_plain.stream_info(SYNC_STREAM)),
        ),
        ("stream purge AIVOS_SYNC", lambda: _succeeds(js.purge_stream(SYNC_STREAM))),
        ("stream delete AIVOS_SYNC", lambda: _succeeds(js.delete_stream(SYNC_STREAM))),
        (
            "consumer create on AIVOS_SYNC",
            lambda: _succeeds(
                js.pull_subscribe("aivos.sync.>", durable="evil", stream=SYNC_STREAM)
            ),
        ),
        (
            "publish generation for a model class as B",
            lambda: cloud_sees("aivos.gen.b.*", lambda: a.publish("aivos.gen.b.small", b"x")),
        ),
        (
            "publish to own model subject (skipping the router and its quota)",
            lambda: cloud_sees("aivos.model.>", lambda: a.publish("aivos.model.a.smol", b"x")),
        ),
        (
            "publish to B's model subject",
            lambda: cloud_sees("aivos.model.>", lambda: a.publish("aivos.model.b.smol", b"x")),
        ),
        (
            "subscribe own model subject (joining a model's queue group)",
            lambda: site_sees("aivos.model.a.*", ["aivos.model.a.smol"]),
        ),
        ("KV get B's config", lambda: _succeeds(_kv_get(js, "b"))),
        ("watch B's config (named consumer on B's key)", lambda: _reads(_watch_value(a, "b"))),
        ("watch B's config (unnamed consumer)", lambda: _reads(_kv_watch(js, "b"))),
        ("watch every config key", lambda: _reads(_watch_all(js))),
        ("KV put own config", lambda: kv_put("a")),
        ("KV put B's config", lambda: kv_put("b")),
        ("object store put", obj_put),
    ]
    results = {name: await attempt() for name, attempt in rows}
    assert [name for name, got_through in results.items() if got_through] == []
    assert await _sync_state(admin) == before  # nothing stored, purged or consumed
    assert "aivos.sync.b.audit" not in {m.subject for m in await _sync_messages(admin)}


async def test_only_the_router_role_sends_to_model_workers(
    world: dict[str, NATS], rig: Rig
) -> None:
    """A site's class request reaches a router (router identity), which forwards it to a
    model's workers (worker identity); a worker identity cannot send to a model subject."""
    admin, a = world["admin"], world["a"]
    conns = {}
    for role in ("router", "worker"):
        conns[role] = await nats.connect(
            rig.hub.url,
            tls=tls_context(service_identity(rig.data_dir, role)),
            inbox_prefix=service_inbox_prefix(role),
        )
    router, worker = conns["router"], conns["worker"]

    async def model_answers(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(b"model:" + msg.data)

    async def route(msg: nats.aio.msg.Msg) -> None:
        site = msg.subject.split(".")[2]
        reply = await router.request(f"aivos.model.{site}.smol", msg.data, timeout=1)
        await msg.respond(reply.data)

    try:
        await worker.subscribe("aivos.model.*.smol", queue="aivos-model-smol", cb=model_answers)
        await router.subscribe("aivos.gen.*.*", queue="aivos-route", cb=route)
        await worker.flush()
        await router.flush()

        async def routed() -> bool:
            reply = await a.request("aivos.gen.a.small", b"hi", timeout=1)
            return reply.data == b"model:hi"

        await eventually(routed, timeout=60, what="a routed reply", ignore=(Exception,))
        sent = await _received(
            admin, "aivos.model.>", lambda: worker.publish("aivos.model.a.smol", b"x")
        )
        assert sent == []
    finally:
        for nc in conns.values():
            await nc.close()


async def test_each_kind_of_own_subject_still_reaches_the_cloud(
    world: dict[str, NATS], rig: Rig
) -> None:
    """The site's grant lists its subject kinds one by one (no ``aivos.*.<site>.>``, which
    would reach model subjects): every kind it sends still arrives."""
    admin, a = world["admin"], world["a"]
    sent = (
        heartbeat_subject("a"),
        gen_subject("a"),
        "aivos.gen.a.small",
        "aivos.evt.a.alarm",
        config_report_subject("a"),
        bundle_report_subject("a"),
    )
    for subject in sent:
        got = await _arrives(admin, subject, lambda s=subject: a.publish(s, b"x"))
        assert got == [subject]


async def _succeeds(coro: Awaitable[object]) -> bool:
    return not await _fails(coro)


async def _kv_get(js: object, key: str) -> object:
    kv = await js.key_value(CONFIG_BUCKET)  # type: ignore[attr-defined]
    return await kv.get(key)


async def _reads(coro: Awaitable[bytes | None]) -> bool:
    """True when the attempt returned a config value (a denial raises or times out)."""
    try:
        return await asyncio.wait_for(coro, 3.0) is not None
    except Exception:
        return False


async def _watch_value(nc: NATS, key: str) -> bytes | None:
    """The value of `key` as the edge's config watch reads it (named, filtered consumer)."""
    out: asyncio.Queue[KeyEntry] = asyncio.Queue()
    sub = await watch_key(nc.jetstream(domain="hub", timeout=1.0), key, out)
    try:
        while True:
            entry = await asyncio.wait_for(out.get(), 2.0)
            if entry.settled:
                return entry.value
    finally:
        await sub.unsubscribe()


async def _kv_watch(js: object, key: str) -> bytes | None:
    kv = await js.key_value(CONFIG_BUCKET)  # type: ignore[attr-defined]
    watcher = await kv.watch(key)
    try:
        entry = await watcher.updates(timeout=2.0)
        return None if entry is None else entry.value  # type: ignore[no-any-return]
    finally:
        await watcher.stop()


async def _watch_all(js: object) -> bytes | None:
    sub = await js.subscribe(  # type: ignore[attr-defined]
        f"$KV.{CONFIG_BUCKET}.>", stream=f"KV_{CONFIG_BUCKET}", ordered_consumer=True
    )
    try:
        return (await sub.next_msg(timeout=2.0)).data  # type: ignore[no-any-return]
    finally:
        await sub.unsubscribe()


async def _put_object(a: NATS) -> None:
    store = await a.jetstream(domain="hub", timeout=1.0).object_store(MODELS_BUCKET)
    await store.put("evil/manifest.json", io.BytesIO(b"{}"))


async def _sync_messages(admin: NATS) -> list[nats.aio.msg.Msg]:
    js = admin.jetstream()
    sub = await js.subscribe("aivos.sync.>", ordered_consumer=True)
    msgs = []
    try:
        while True:
            msgs.append(await sub.next_msg(timeout=0.5))
    except nats.errors.TimeoutError:
        pass
    await sub.unsubscribe()
    return msgs


async def _refused(url: str, **options: object) -> bool:
    try:
        nc = await nats.connect(
            url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **options
        )
    except Exception:
        return True
    try:
        await nc.publish("aivos.hb.a", b"x")
        await nc.flush(timeout=1)
    except Exception:
        return True
    finally:
        await nc.close()
    return False


async def test_plain_text_and_wrong_ca_are_refused(rig: Rig, tmp_path: Path) -> None:
    port = rig.hub.conf.port
    assert await _refused(f"nats://127.0.0.1:{port}")  # plain text
    rogue = init_pki(tmp_path / "rogue")
    creds = rogue.issue_client("aivos-svc-admin", tmp_path / "rogue-admin")  # same name, wrong CA
    ctx = tls_context(service_identity(rig.data_dir, "admin"))
    ctx.load_cert_chain(creds.cert, creds.key)  # trusts the hub, presents a rogue certificate
    assert await _refused(f"tls://127.0.0.1:{port}", tls=ctx)
    # a leaf whose certificate comes from another CA never gets a link
    before = rig.hub.leafnode_count()
    kit = tmp_path / "rogue-kit"
    rogue_creds = rogue.issue_client("aivos-site-a-1", kit)
    conf = (rig.leaves["a-0"].kit / "leaf.conf").read_text()
    good = rig.leaves["a-0"].kit / "credentials"
    conf = conf.replace(str(good / "aivos-site-a-1.crt"), rogue_creds.cert)
    conf = conf.replace(str(good / "aivos-site-a-1.key"), rogue_creds.key)
    conf = conf.replace(f"port: {rig.leaves['a-0'].port}", f"port: {free_port()}")
    (kit / "leaf.conf").write_text(conf.replace('"aivos-leaf-a-g1"', '"rogue"'))
    leaf = Leaf(kit, 0)
    try:
        await asyncio.sleep(2.0)
        assert rig.hub.leafnode_count() == before
        assert "TLS" in (rig.data_dir / "nats" / "hub.log").read_text()
    finally:
        leaf.stop()


async def test_revoked_site_is_cut_off_and_stays_refused(rig: Rig) -> None:
    """Revoking reloads the hub, which cuts the site's live link at once (without the
    reload the link would stay up for good). How fast is not asserted: on a quiet box it is
    within 5 s, on a loaded one the reload alone can take longer."""
    leaf = rig.start_site("c")
    await eventually(lambda: "aivos-leaf-c-g1" in _leaf_names(rig), timeout=60, what="leaf c")
    await asyncio.to_thread(revoke_site, rig.data_dir, "c")
    await eventually(
        lambda: "aivos-leaf-c-g1" not in _leaf_names(rig), timeout=120, what="leaf c cut off"
    )
    await asyncio.sleep(2.0)  # the leaf keeps retrying and stays refused
    assert "aivos-leaf-c-g1" not in _leaf_names(rig)
    leaf.stop()


async def test_rotation_retires_old_credentials_once_new_ones_connect(rig: Rig) -> None:
    old = rig.start_site("r")
    await eventually(lambda: "aivos-leaf-r-g1" in _leaf_names(rig), timeout=60, what="leaf r g1")
    new = rig.start_site("r", rotate=True)  # both generations are accepted meanwhile
    assert await asyncio.to_thread(retire_rotated, rig.data_dir, wait_s=10) == ["r"]
    try:
        await eventually(
            lambda: "aivos-leaf-r-g1" not in _leaf_names(rig), timeout=60, what="old cut"
        )
        await asyncio.sleep(2.0)  # the old kit keeps redialling and stays out
        assert _leaf_names(rig) >= {"aivos-leaf-r-g2"}
        assert "aivos-leaf-r-g1" not in _leaf_names(rig)
    finally:
        old.stop()
        new.stop()


def _leaf_names(rig: Rig) -> set[str]:
    import json
    import urllib.request

    url = f"http://127.0.0.1:{rig.hub.conf.monitor_port}/leafz"
    with urllib.request.urlopen(url, timeout=1) as resp:
        return {leaf["name"] for leaf in json.loads(resp.read()).get("leafs") or []}


CATALOGUE = """
[models.primary]
backend = "llamacpp"
version = "p-2"

[classes.small]
chain = ["primary"]
"""


async def test_pushed_catalogue_reaches_routers_and_workers_read_only(rig: Rig) -> None:
    """The fleet role pushes the model catalogue; router and worker identities watch it
    (stream info, a consumer filtered on its key, flow control) but cannot write it."""
    conns: dict[str, NATS] = {}
    for role in ("fleet", "router", "worker"):
        conns[role] = await nats.connect(
            rig.hub.url,
            tls=tls_context(service_identity(rig.data_dir, role)),
            inbox_prefix=service_inbox_prefix(role),
        )
    watches: list[CatalogueWatch] = []
    try:
        store = await CatalogueStore.open(conns["fleet"].jetstream())
        assert await store.push(CATALOGUE) >= 1
        for role in ("router", "worker"):
            applied: list[int] = []

            async def apply(_c: object, version: int, _t: str, seen: list[int] = applied) -> None:
                seen.append(version)

            watch = CatalogueWatch(apply, retry_s=0.2)
            watch.start(conns[role])
            watches.append(watch)
            await eventually(lambda seen=applied: bool(seen), timeout=60, what=f"{role} watch")
            assert watch.failures == 0
            mine = await CatalogueStore.open(conns[role].jetstream(), create=False)
            assert await _fails(mine.push(CATALOGUE)), f"{role} wrote the catalogue"
    finally:
        for watch in watches:
            await watch.stop()
        for nc in conns.values():
            await nc.close()
