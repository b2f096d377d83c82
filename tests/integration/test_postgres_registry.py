"""The fleet registry on both engines (SQLite file, real PostgreSQL): the same operations
give the same rows; migrations are recorded the same way; an old SQLite file is migrated."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgspec
import pytest

from aivos.cloud.db import applied_migrations, apply_migrations, open_engine
from aivos.cloud.fleet.registry import (
    HISTORY_ROWS,
    Registry,
    SiteFilter,
    SqliteRegistry,
    open_registry,
)
from aivos.cloud.fleet.registry import (
    MIGRATIONS as REGISTRY_MIGRATIONS,
)
from aivos.cloud.fleet.rollout import start_rollout
from aivos.shared.errors import ConfigError, NotFound
from aivos.shared.fleet import BundleReport, ConfigReport
from tests.fixtures.fleet import heartbeat

pytestmark = pytest.mark.slow

MIGRATIONS = [
    "registry_0001_tables",
    "registry_0002_operator_roles_expiry",
    "registry_0003_site_overview",
    "registry_0004_rollout_tick",
]


_hb = heartbeat


@pytest.fixture
def registry(tmp_path: Path, db_url: str | None) -> Registry:
    reg = open_registry(db_url, tmp_path / "fleet")
    yield reg  # type: ignore[misc]
    reg.close()


def test_heartbeats_register_sites_keep_history_and_latest(registry: Registry) -> None:
    now = time.time()
    t0 = now - 2000
    beats = [(_hb(p99_ms=float(i)), t0 + i) for i in range(HISTORY_ROWS + 30)]
    assert registry.ingest_heartbeats(beats) == HISTORY_ROWS + 30
    history = registry.history("site-a")
    assert len(history) == HISTORY_ROWS
    assert history[-1].p99_ms == HISTORY_ROWS + 29 and history[0].p99_ms == 30.0
    # a late heartbeat never moves last_seen back
    registry.ingest_heartbeats([(_hb(), t0)])
    site = registry.site("site-a", now=now)
    assert site.last_seen == pytest.approx(t0 + HISTORY_ROWS + 29)
    assert site.registered_by == "auto" and site.state == "offline"
    registry.ingest_heartbeats([(_hb("site-b", request_rate=7.5), now)])
    b = registry.site("site-b", now=now)
    assert b.state == "online" and b.request_rate == 7.5 and b.health == "healthy"
    assert registry.heartbeat("site-b") == _hb("site-b", request_rate=7.5)
    assert registry.register_site("site-c") is True and registry.register_site("site-c") is False
    assert [s.site_id for s in registry.sites(now=now)] == ["site-a", "site-b", "site-c"]
    with pytest.raises(NotFound):
        registry.site("nope")


def test_one_batch_with_two_heartbeats_of_a_site(registry: Registry) -> None:
    now = time.time()
    batch = [
        (_hb("a", p99_ms=1.0), now - 2),
        (_hb("b"), now - 2),
        (_hb("a", p99_ms=9.0, bundle_version="v2"), now - 1),
    ]
    assert registry.ingest_heartbeats(batch) == 3
    a = registry.site("a", now=now)
    assert (a.p99_ms, a.bundle_version) == (9.0, "v2")  # the latest heartbeat wins
    assert a.first_seen == pytest.approx(now - 2) and a.last_seen == pytest.approx(now - 1)
    assert [p.p99_ms for p in registry.history("a")] == [1.0, 9.0]


def test_overview_counts_the_fleet_and_pages_problems_first(registry: Registry) -> None:
    now = time.time()
    registry.ingest_heartbeats(
        [(_hb(f"ok-{i:02d}", request_rate=float(i)), now - 1) for i in range(12)]
        + [(_hb("gone-1"), now - 100), (_hb("gone-2"), now - 200)]  # 3 x 10 s: offline
        + [(_hb("bad-1", bundle_status="canary_failed"), now - 1)]
        + [(_hb("wait-1", approvals_pending=2, approval_oldest_s=5.0), now - 1)]
        + [(_hb("wait-2", approvals_pending=3, approval_oldest_s=1.0), now - 200)]
    )
    registry.register_site("new-1")
    registry.add_config_reports([(ConfigReport("ok-03", 2, "rejected", error="bad"), now)])

    view = registry.overview(sort="problems", limit=5, now=now)
    c = view.counts
    assert (c.total, c.online, c.offline, c.degraded, c.healthy) == (18, 14, 4, 2, 12)
    assert (c.never_seen, c.approvals, view.matched) == (1, 5, 18)
    # offline (by site id), then degraded, then healthy: each row's state agrees
    assert [(s.site_id, s.state, s.health) for s in view.sites] == [
        ("gone-1", "offline", "stale"),
        ("gone-2", "offline", "stale"),
        ("new-1", "offline", "stale"),
        ("wait-2", "offline", "stale"),
        ("bad-1", "online", "degraded"),
    ]
    page2 = registry.overview(sort="problems", limit=5, offset=5, now=now)
    assert [s.site_id for s in page2.sites] == ["ok-03", "ok-00", "ok-01", "ok-02", "ok-04"]
    assert registry.overview(sort="problems", limit=5, offset=15, now=now).sites[-1].site_id == (
        "wait-1"
    )

    found = registry.overview(SiteFilter(text="OK-1"), now=now)
    assert found.matched == 2 and [s.site_id for s in found.sites] == ["ok-10", "ok-11"]
    assert registry.overview(SiteFilter(text="ok_1"), now=now).matched == 0  # _ is no wildcard
    offline = registry.overview(SiteFilter(state="offline"), limit=0, now=now)
    assert offline.matched == 4 and offline.sites == [] and offline.counts == c
    healthy = registry.overview(SiteFilter(state="online", health="healthy"), now=now)
    assert healthy.matched == 12 and "ok-03" not in {s.site_id for s in healthy.sites}
    by_rate = registry.overview(SiteFilter(text="ok-"), sort="rate", descending=True, now=now)
    assert [s.site_id for s in by_rate.sites[:2]] == ["ok-11", "ok-10"]
    assert [s.site_id for s in registry.overview(now=now).sites] == [
        s.site_id for s in registry.sites(now=now)
    ]


def test_sites_from_before_the_overview_columns_are_backfilled(
    tmp_path: Path, db_url: str | None
) -> None:
    engine = open_engine(db_url, tmp_path / "fleet.db")
    apply_migrations(engine, REGISTRY_MIGRATIONS[:2])
    now = time.time()
    with engine.tx() as conn:
        for site, seen, rate in (("old-on", now - 5, 4.5), ("old-off", now - 500, 1.0)):
            hb = _hb(site, request_rate=rate, approvals_pending=1)
            conn.execute(
                "INSERT INTO sites(site_id, registered_by, first_seen, last_seen, interval_s, "
                "heartbeat, created_at) VALUES (?, 'auto', ?, ?, 10.0, ?, ?)",
                (site, seen, seen, msgspec.json.encode(hb).decode(), seen),
            )
    engine.close()
    with open_registry(db_url, tmp_path) as registry:
        view = registry.overview(sort="rate", descending=True, now=now)
        assert (view.counts.online, view.counts.offline, view.counts.approvals) == (1, 1, 2)
        assert [(s.site_id, s.state) for s in view.sites] == [
            ("old-on", "online"),
            ("old-off", "offline"),
        ]


def test_config_and_bundle_reports(registry: Registry) -> None:
    registry.register_site("s1")
    registry.set_desired(["s1", "s2"], config=4, bundle="v2")
    registry.add_config_reports(
        [(ConfigReport("s1", 3, "applied"), 1.0), (ConfigReport("s1", 2, "applied"), 2.0)]
    )
    s1 = registry.site("s1")
    assert (s1.config_desired, s1.config_applied, s1.bundle_desired) == (4, 3, "v2")
    registry.add_config_reports([(ConfigReport("s1", 4, "rejected", error="bad"), 3.0)])
    assert registry.site("s1").config_error == "bad"
    assert [r.version for r in registry.config_reports("s1")] == [4, 2, 3]
    registry.add_bundle_reports([(BundleReport("s1", "v2", "pending"), 4.0)])
    registry.add_bundle_reports([(BundleReport("s1", "v2", "ok", "live"), 5.0)])
    events = registry.bundle_events("s1")
    assert [(e.status, e.message, e.ts) for e in events] == [
        ("ok", "live", 5.0),
        ("pending", "", 4.0),
    ]
    assert registry.site("s2").registered_by == "operator"


def test_rollouts_and_actions(registry: Registry) -> None:
    now = time.time()
    registry.ingest_heartbeats([(_hb(f"s{i}", bundle_version="v1"), now) for i in range(4)])
    rid = start_rollout(
        registry, bundle_version="v2", sites=None, canary_percent=25, actor="alice", soak_s=5
    )
    rollout = registry.rollout(rid)
    assert rollout.state == "running" and rollout.guards["max_error_rate"] == 0.05
    assert rollout.wave_progress() == [
        {"wave": 1, "total": 1, "counts": {"pending": 1}},
        {"wave": 2, "total": 3, "counts": {"pending": 3}},
    ]
    assert {s.previous_bundle for s in rollout.sites} == {"v1"}
    registry.update_rollout_site(rid, "s0", status="healthy", healthy_since=now)
    registry.update_rollout(rid, current_wave=2, message="wave 2")
    again = registry.rollout(rid)
    assert again.current_wave == 2 and again.sites[0].healthy_since == pytest.approx(now)
    assert [r.id for r in registry.rollouts(states=("running", "paused"))] == [rid]
    assert registry.rollouts(states=("completed",)) == []
    actions = registry.actions(target=rid)
    assert [(a.actor, a.action) for a in actions] == [("alice", "rollout.start")]
    assert actions[0].details["waves"] == [["s0"], ["s1", "s2", "s3"]]


def test_rollout_reads_count_and_page_in_sql(registry: Registry) -> None:
    """The console's rollout reads (per-wave counts, a page of sites problems first, the
    rollouts of a site, bundle counts, busy sites) give the same answers on both engines."""
    now = time.time()
    beats = [(_hb(f"s{i:02d}", bundle_version="v1" if i < 7 else "v0"), now) for i in range(10)]
    registry.ingest_heartbeats(beats)
    registry.register_site("new")  # registered, never seen: no bundle
    assert registry.bundle_counts() == [("v1", 7), ("v0", 3)]
    assert registry.bundle_counts(["s08", "s09", "s00", "new", "nowhere"]) == [
        ("v0", 2),
        ("v1", 1),
    ]
    assert registry.site_bundles(["s09", "nowhere", "new", "s00"]) == {
        "new": None,
        "s00": "v1",
        "s09": "v0",
    }
    assert list(registry.site_bundles()) == ["new", *(f"s{i:02d}" for i in range(10))]

    first = start_rollout(
        registry, bundle_version="v2", sites=None, canary_percent=20, actor="alice"
    )
    registry.update_rollout_site(first, "s05", status="failed", message="canary_failed")
    registry.update_rollout_site(first, "new", status="healthy", healthy_since=now)
    registry.update_rollout_site(first, "s03", status="deploying")
    registry.update_rollout(first, state="halted")
    time.sleep(0.01)  # created_at orders the rollouts
    second = start_rollout(
        registry, bundle_version="v3", sites=["s09", "s08"], canary_percent=50, actor="bob"
    )

    summaries = registry.rollout_summaries()
    assert [s.rollout.id for s in summaries] == [second, first]
    assert all(s.rollout.sites == [] for s in summaries)
    assert [(w.wave, w.total, w.counts, w.healthy) for w in summaries[1].waves] == [
        (1, 3, {"pending": 2, "healthy": 1}, 1),
        (2, 8, {"pending": 6, "failed": 1, "deploying": 1}, 0),
    ]
    assert [(w.wave, w.total) for w in summaries[0].waves] == [(1, 1), (2, 1)]
    assert registry.rollout_summaries(limit=1)[0].rollout.id == second
    # every site of both, in one read, as before
    rows = registry.rollouts()
    assert [len(r.sites) for r in rows] == [2, 11]
    assert [s.site_id for s in rows[0].sites] == ["s08", "s09"]

    view = registry.rollout_view(first, size=4)
    assert (view.shown, view.pages, view.page, view.offset) == (11, 3, 1, 0)
    assert [s.site_id for s in view.sites] == ["s05", "s03", "s00", "s01"]  # problems first
    assert view.rollout.state == "halted" and view.rollout.sites == []
    assert [w.total for w in view.waves] == [3, 8]
    last = registry.rollout_view(first, page=99, size=4)  # clamped to the last page
    assert (last.page, last.offset, [s.site_id for s in last.sites]) == (
        3,
        8,
        ["s08", "s09", "new"],
    )
    failed = registry.rollout_view(first, status="failed")
    assert [(s.site_id, s.message) for s in failed.sites] == [("s05", "canary_failed")]
    assert (failed.shown, failed.pages) == (1, 1)
    with pytest.raises(NotFound):
        registry.rollout_view("r-nope")

    assert [r.id for r in registry.site_rollouts("s09")] == [second, first]
    assert [r.id for r in registry.site_rollouts("s09", limit=1)] == [second]
    assert [r.id for r in registry.site_rollouts("s00")] == [first]
    assert registry.site_rollouts("nowhere") == []

    # only the running second rollout is active: its sites are busy, the halted one's not
    assert registry.busy_sites(("running", "paused")) == {"s08", "s09"}
    assert registry.busy_sites(("running", "paused"), ["s09", "s00", "nowhere"]) == {"s09"}
    assert registry.busy_sites(("halted",), ["s00"]) == {"s00"}
    with pytest.raises(ConfigError, match="already in an active rollout: s08"):
        start_rollout(
            registry, bundle_version="v4", sites=["s08", "s00"], canary_percent=50, actor="a"
        )
    with pytest.raises(NotFound, match="unknown sites: nowhere"):
        start_rollout(
            registry, bundle_version="v4", sites=["nowhere"], canary_percent=50, actor="a"
        )
    third = start_rollout(
        registry, bundle_version="v4", sites=["s01", "new"], canary_percent=50, actor="carol"
    )
    assert [(s.site_id, s.previous_bundle) for s in registry.rollout(third).sites] == [
        ("new", None),
        ("s01", "v1"),
    ]


def test_operators_tokens_sessions(registry: Registry) -> None:
    registry.put_operator("ann", "hash1", role="viewer")
    registry.put_operator("ann", "hash2")  # a new password keeps the role
    assert registry.operator_hash("ann") == "hash2"
    registry.add_session("sess", "ann", "csrf", time.time() + 60)
    assert registry.session("sess") == ("ann", "csrf", "viewer")
    registry.put_operator("ann", "hash2", role="operator")
    assert registry.session("sess") == ("ann", "csrf", "operator")
    registry.drop_session("sess")
    assert registry.session("sess") is None
    registry.add_token("th", "dash", role="viewer")
    registry.add_token("old", "dash", expires_at=time.time() - 1)
    assert registry.token_info("th") == ("dash", "viewer") and registry.token_name("old") is None
    assert registry.revoke_tokens("dash") == 2
    assert registry.token_info("th") is None
    assert applied_migrations(registry.engine) == MIGRATIONS


def test_old_sqlite_file_is_migrated_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE operators (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, "
        "created_at REAL NOT NULL);"
        "CREATE TABLE operator_tokens (token_hash TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "created_at REAL NOT NULL);"
        "INSERT INTO operators VALUES ('old', 'h', 1.0);"
    )
    conn.commit()
    conn.close()
    with SqliteRegistry.open(tmp_path) as registry:
        assert applied_migrations(registry.engine) == MIGRATIONS
        registry.add_session("s", "old", "c", time.time() + 60)
        assert registry.session("s") == ("old", "c", "admin")  # rows from before roles
    with SqliteRegistry.open(tmp_path) as registry:  # nothing applied twice
        assert applied_migrations(registry.engine) == MIGRATIONS
