"""The rollout controller's tick on both engines (SQLite file, real PostgreSQL) with the
real config bucket on a real nats-server: it reads only the sites whose state must move
(`Registry.rollout_moves`), and each transition happens as it did when every site was read:
deploy, live -> healthy, soak -> next wave -> completed, healthy -> deploying when offline,
and a halt for a failed bundle event, a failed bundle status or a breached guard."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from aivos.cloud.db import applied_migrations, apply_migrations, open_engine
from aivos.cloud.fleet.config import ConfigStore
from aivos.cloud.fleet.registry import MIGRATIONS as REGISTRY_MIGRATIONS
from aivos.cloud.fleet.registry import Registry, open_registry
from aivos.cloud.fleet.rollout import FAILED_STATUSES, RolloutController, start_rollout
from aivos.shared.fleet import BundleReport, Decisions, Heartbeat
from aivos.shared.natsconf.connect import connect_nats
from aivos.shared.natsconf.server import NatsServer
from tests.fixtures.fleet import heartbeat

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


def _hb(site: str, bundle: str, **kw: object) -> Heartbeat:
    fields: dict[str, object] = dict(
        bundle_version=bundle,
        decisions=Decisions(1, 0, 0),
        p99_ms=5.0,
        mem_percent=1.0,
        disk_percent=1.0,
        interval_s=60.0,
    )
    return heartbeat(site, **{**fields, **kw})


@pytest.fixture
def registry(tmp_path: Path, db_url: str | None) -> Iterator[Registry]:
    reg = open_registry(db_url, tmp_path / "fleet")
    yield reg
    reg.close()


@pytest.fixture
async def sink(nats_hub: NatsServer) -> AsyncIterator[ConfigStore]:
    nc = await connect_nats(nats_hub.url, name="rollout-tick-test")
    try:
        yield await ConfigStore.open(nc.jetstream())
    finally:
        await nc.close()


def _fleet(registry: Registry, n: int, **kw: object) -> list[str]:
    """`n` online sites on bundle v1 (site ids unique per test: the bucket is shared)."""
    prefix = f"t{uuid.uuid4().hex[:6]}"
    sites = [f"{prefix}-{i:03d}" for i in range(n)]
    beat(registry, sites, "v1", **kw)
    return sites


def beat(registry: Registry, sites: list[str], bundle: str, **kw: object) -> None:
    registry.ingest_heartbeats([(_hb(s, bundle, **kw), time.time()) for s in sites])


def _statuses(registry: Registry, rid: str) -> dict[str, str]:
    return {s.site_id: s.status for s in registry.rollout(rid).sites}


def _moving(registry: Registry, rid: str) -> list[str]:
    rollout = registry.rollout(rid)
    return [s.site_id for s in registry.rollout_moves(rollout, time.time(), FAILED_STATUSES)]


async def test_a_tick_reads_only_what_moves_and_carries_the_rollout_through(
    registry: Registry, sink: ConfigStore
) -> None:
    sites = _fleet(registry, 40)
    assert applied_migrations(registry.engine)[-1] == "registry_0004_rollout_tick"
    rid = start_rollout(
        registry, bundle_version="v2", sites=None, canary_percent=10, actor="a", soak_s=0.2
    )
    canary, rest = sites[:4], sites[4:]
    controller = RolloutController(registry, sink)
    assert _moving(registry, rid) == canary  # the pending canary, never wave 2

    await controller.tick()
    assert {s: st for s, st in _statuses(registry, rid).items() if st != "pending"} == {
        s: "deploying" for s in canary
    }
    for s in canary:
        assert (await sink.get_raw(s))["bundle_version"] == "v2"
        assert registry.site(s).bundle_desired == "v2"
    assert _moving(registry, rid) == []  # deploying, nothing live yet: nothing to read

    beat(registry, canary[:3], "v2")
    assert _moving(registry, rid) == canary[:3]
    await controller.tick()
    assert [_statuses(registry, rid)[s] for s in canary] == ["healthy"] * 3 + ["deploying"]
    assert _moving(registry, rid) == []  # healthy and still live, one still deploying
    await controller.tick()
    assert registry.rollout(rid).current_wave == 1  # the wave is not soaked: one deploying

    beat(registry, canary[3:], "v2")
    await controller.tick()  # the last canary turns healthy; its soak starts now
    assert registry.rollout(rid).current_wave == 1
    time.sleep(0.25)
    await controller.tick()  # soaked: wave 2 starts
    rollout = registry.rollout(rid)
    assert (rollout.current_wave, rollout.message) == (2, "wave 1 healthy; wave 2 started")

    await controller.tick()  # wave 2 deployed
    assert _moving(registry, rid) == []
    beat(registry, rest, "v2")
    assert _moving(registry, rid) == rest
    await controller.tick()
    time.sleep(0.25)
    await controller.tick()
    rollout = registry.rollout(rid)
    assert (rollout.state, rollout.message) == ("completed", "all waves healthy")
    assert set(_statuses(registry, rid).values()) == {"healthy"}
    assert [a.action for a in registry.actions(target=rid)] == [
        "rollout.complete",
        "rollout.start",
    ]


async def test_a_healthy_site_that_goes_offline_deploys_again(
    registry: Registry, sink: ConfigStore
) -> None:
    sites = _fleet(registry, 3)
    rid = start_rollout(
        registry, bundle_version="v2", sites=None, canary_percent=100, actor="a", soak_s=3600
    )
    controller = RolloutController(registry, sink)
    await controller.tick()
    beat(registry, sites, "v2")
    await controller.tick()
    assert set(_statuses(registry, rid).values()) == {"healthy"}
    since = {s.site_id: s.healthy_since for s in registry.rollout(rid).sites}
    # its last heartbeat (interval 0.05 s) is stale 0.15 s later: offline
    beat(registry, sites[1:2], "v2", interval_s=0.05)
    time.sleep(0.2)
    assert _moving(registry, rid) == sites[1:2]
    await controller.tick()
    assert _statuses(registry, rid) == {
        sites[0]: "healthy",
        sites[1]: "deploying",
        sites[2]: "healthy",
    }
    kept = {s.site_id: s.healthy_since for s in registry.rollout(rid).sites}
    assert kept[sites[0]] == since[sites[0]] and kept[sites[1]] is None
    beat(registry, sites[1:2], "v2")  # back online: healthy again, a new soak
    await controller.tick()
    assert set(_statuses(registry, rid).values()) == {"healthy"}
    assert registry.rollout(rid).state == "running"


@pytest.mark.parametrize(
    "breach, reason",
    [
        ("event", "canary_failed: accuracy 0.41"),
        ("status", "verify_failed: bad signature"),
        ("error_rate", "error rate 0.300 above guard 0.1"),
        ("p99", "p99 900 ms above guard 500 ms"),
    ],
)
async def test_a_failing_canary_halts_with_the_reason(
    registry: Registry, sink: ConfigStore, breach: str, reason: str
) -> None:
    sites = _fleet(registry, 4)
    # an old failure of the same bundle, from before this rollout, is not this rollout's
    registry.add_bundle_reports(
        [(BundleReport(site=sites[0], bundle_version="v2", status="canary_failed"), 1.0)]
    )
    rid = start_rollout(
        registry,
        bundle_version="v2",
        sites=None,
        canary_percent=50,
        actor="a",
        soak_s=3600,
        guards={"max_error_rate": 0.1, "max_p99_ms": 500.0},
    )
    controller = RolloutController(registry, sink)
    await controller.tick()
    beat(registry, sites[:2], "v2")
    await controller.tick()
    assert _moving(registry, rid) == []  # the old event does not make it a suspect
    assert registry.rollout(rid).state == "running"
    bad = sites[1]
    if breach == "event":
        report = BundleReport(
            site=bad, bundle_version="v2", status="canary_failed", message="accuracy 0.41"
        )
        registry.add_bundle_reports([(report, time.time())])
    elif breach == "status":
        beat(
            registry,
            [bad],
            "v1",
            bundle_status="verify_failed",
            bundle_target="v2",
            bundle_message="bad signature",
        )
    elif breach == "error_rate":
        beat(registry, [bad], "v2", error_rate=0.3)
    else:
        beat(registry, [bad], "v2", p99_ms=900.0)
    assert _moving(registry, rid) == [bad]
    await controller.tick()
    rollout = registry.rollout(rid)
    assert rollout.state == "halted"
    assert rollout.message == f"halted: canary site failed ({bad}: {reason})"
    assert _statuses(registry, rid) == {
        sites[0]: "healthy",
        bad: "failed",
        sites[2]: "pending",
        sites[3]: "pending",
    }
    halts = [a for a in registry.actions(target=rid) if a.action == "rollout.halt"]
    assert [a.details for a in halts] == [{"failed": [f"{bad}: {reason}"]}]


async def test_a_site_on_another_failed_bundle_is_read_but_not_failed(
    registry: Registry, sink: ConfigStore
) -> None:
    """A failed bundle status of another target makes the site a suspect (the column has no
    target), and the tick's own check keeps it deploying, as before."""
    sites = _fleet(registry, 2)
    rid = start_rollout(
        registry, bundle_version="v2", sites=sites[:1], canary_percent=100, actor="a"
    )
    controller = RolloutController(registry, sink)
    await controller.tick()
    beat(registry, sites[:1], "v1", bundle_status="rolled_back", bundle_target="v0")
    assert _moving(registry, rid) == sites[:1]
    await controller.tick()
    assert _statuses(registry, rid) == {sites[0]: "deploying"}
    assert registry.rollout(rid).state == "running"


async def test_sites_from_before_the_tick_columns_are_backfilled(
    tmp_path: Path, db_url: str | None
) -> None:
    """Migration ``registry_0004_rollout_tick``: a site's error rate, stored only in its
    heartbeat before, becomes the column the guard is read from; the indexes exist."""
    engine = open_engine(db_url, tmp_path / "fleet.db")
    apply_migrations(engine, REGISTRY_MIGRATIONS[:3])
    now = time.time()
    with engine.tx() as conn:
        for site, rate in (("old-bad", 0.4), ("old-ok", 0.01)):
            hb = _hb(site, "v2", error_rate=rate)
            conn.execute(
                "INSERT INTO sites(site_id, registered_by, first_seen, last_seen, stale_at, "
                "interval_s, heartbeat, bundle_version, bundle_status, p99_ms, created_at) "
                "VALUES (?, 'auto', ?, ?, ?, 60.0, ?, 'v2', 'ok', 5.0, ?)",
                (site, now, now, now + 180, msgspec.json.encode(hb).decode(), now),
            )
    engine.close()
    with open_registry(db_url, tmp_path) as registry:
        assert applied_migrations(registry.engine)[-1] == "registry_0004_rollout_tick"
        sql = (
            "SELECT name FROM sqlite_master WHERE type = 'index'"
            if registry.engine.dialect == "sqlite"
            else "SELECT indexname AS name FROM pg_indexes"
        )
        names = registry.engine.read(lambda c: {r["name"] for r in c.execute(sql).fetchall()})
        assert {"idx_rollout_sites_site", "idx_rollout_sites_wave"} <= names
        rid = start_rollout(
            registry, bundle_version="v2", sites=None, canary_percent=100, actor="a"
        )
        for site in ("old-bad", "old-ok"):
            registry.update_rollout_site(rid, site, status="healthy", healthy_since=now)
        assert _moving(registry, rid) == ["old-bad"]  # 0.4 above the default guard 0.05


class _FailingAfter:
    """The real config bucket, until its `n`-th put: then the link to the hub is gone."""

    def __init__(self, store: ConfigStore, n: int) -> None:
        self.store, self.left = store, n

    async def put(self, site: str | None, data: dict[str, object], *, merge: bool = False) -> int:
        self.left -= 1
        if self.left < 0:
            raise ConnectionError("hub unreachable")
        return await self.store.put(site, data, merge=merge)


async def test_sites_deployed_before_a_failed_put_are_recorded(
    registry: Registry, sink: ConfigStore
) -> None:
    sites = _fleet(registry, 5)
    rid = start_rollout(registry, bundle_version="v2", sites=None, canary_percent=100, actor="a")
    with pytest.raises(ConnectionError):
        await RolloutController(registry, _FailingAfter(sink, 2)).tick()
    assert list(_statuses(registry, rid).values()) == ["deploying"] * 2 + ["pending"] * 3
    assert [registry.site(s).bundle_desired for s in sites] == ["v2"] * 2 + [None] * 3
    versions = [registry.site(s).config_desired for s in sites[:2]]
    assert versions == [(await sink.get_raw(s))["version"] for s in sites[:2]]
    await RolloutController(registry, sink).tick()  # the next tick deploys the rest
    assert set(_statuses(registry, rid).values()) == {"deploying"}
    assert [registry.site(s).bundle_desired for s in sites] == ["v2"] * 5


class _LapsingLease:
    """Held for the first `puts` config puts of a tick, then lost (as when a put waited
    on JetStream longer than the lease's TTL)."""

    def __init__(self, sink: ConfigStore, puts: int) -> None:
        self.sink, self.puts_left = sink, puts
        self._put = sink.put

    @property
    def held(self) -> bool:
        return self.puts_left > 0

    async def put(self, site: str | None, data: dict[str, object], *, merge: bool = False) -> int:
        self.puts_left -= 1
        return await self._put(site, data, merge=merge)


async def test_a_lease_lost_during_a_tick_stops_its_puts(
    registry: Registry, sink: ConfigStore
) -> None:
    sites = _fleet(registry, 10)
    rid = start_rollout(
        registry, bundle_version="v2", sites=None, canary_percent=50, actor="a", soak_s=0.2
    )
    lease = _LapsingLease(sink, puts=2)
    controller = RolloutController(registry, lease, leadership=lease)
    await controller.tick()
    deploying = [s for s, st in _statuses(registry, rid).items() if st == "deploying"]
    assert deploying == sites[:2]  # the canary has 5 sites: the other 3 wait for a leader
    for s in sites[2:5]:
        assert await sink.get_raw(s) == {}
