"""Console auth and JSON API: operator token or session required, CSRF on every write,
cookies HttpOnly + SameSite=Strict, operator actions audited, pages mirror the API."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from aivos.cloud.console.app import ConsoleSettings, create_app
from aivos.cloud.fleet.registry import SqliteRegistry
from aivos.cloud.fleet.tokens import add_operator, create_operator_token
from aivos.shared.fleet import Decisions, Heartbeat


def _hb(site: str, bundle: str = "v1") -> Heartbeat:
    return Heartbeat(
        site_id=site,
        agent_version="0.1",
        bundle_version=bundle,
        provider="CPU",
        link_state="up",
        outbox_depth=3,
        job_backlog=0,
        request_rate=2.0,
        decisions=Decisions(10, 2, 1),
        p50_ms=2.0,
        p99_ms=8.0,
        cpu_percent=5,
        mem_percent=6,
        disk_percent=7,
        interval_s=10,
    )


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[TestClient[Any], str, SqliteRegistry]]:
    reg = SqliteRegistry.open(tmp_path)
    add_operator(reg, "alice", "correct horse battery")
    now = time.time()
    reg.ingest_heartbeats([(_hb("shop-1"), now - 5), (_hb("shop-2", "v0"), now - 500)])
    reg.close()
    token = create_operator_token(tmp_path)
    app = create_app(ConsoleSettings(data_dir=tmp_path, connect=False))
    with TestClient(app) as client:
        yield client, token, app.state.registry


def _login(client: TestClient[Any], password: str = "correct horse battery") -> Any:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return client.post(
        "/login",
        data={"username": "alice", "password": password, "csrf": csrf.group(1), "next": "/"},
        follow_redirects=False,
    )


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def test_api_requires_an_operator_credential(console: Any) -> None:
    client, token, _ = console
    assert client.get("/api/sites").status_code == 401
    assert (
        client.get("/api/sites", headers={"Authorization": "Bearer aop_wrong"}).status_code == 401
    )
    resp = client.get("/api/sites", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    sites = {s["site_id"]: s for s in resp.json()}
    assert sites["shop-1"]["state"] == "online" and sites["shop-1"]["bundle_version"] == "v1"
    assert sites["shop-2"]["state"] == "offline" and sites["shop-2"]["last_seen_age_s"] >= 500
    filtered = client.get(
        "/api/sites?state=offline", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert [s["site_id"] for s in filtered] == ["shop-2"]


def test_login_session_cookie_and_pages(console: Any) -> None:
    client, _, registry = console
    assert client.get("/", follow_redirects=False).headers["location"] == "/login?next=/"
    bad = _login(client, "wrong password")
    assert bad.headers["location"].startswith("/login?error=")
    ok = _login(client)
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = next(c for c in ok.headers.get_list("set-cookie") if c.startswith("aivos_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")

    page = client.get("/")
    assert page.status_code == 200
    assert 'data-site="shop-1"' in page.text and 'data-site="shop-2"' in page.text
    assert 'id="count-online">1<' in page.text and 'id="count-offline">1<' in page.text
    only_offline = client.get("/?state=offline")
    assert (
        'data-site="shop-2"' in only_offline.text and 'data-site="shop-1"' not in only_offline.text
    )
    site = client.get("/sites/shop-1")
    assert site.status_code == 200 and "<svg" in site.text
    # a session also works for the API (reads)
    assert client.get("/api/sites").status_code == 200
    actions = [a.action for a in registry.actions()]
    assert "login" in actions and "login.failed" in actions


def test_repeated_failed_logins_are_throttled(console: Any) -> None:
    client, _, registry = console
    for _ in range(5):
        assert "Wrong" in _login(client, "guess").headers["location"].replace("+", " ")
    # now even the right password is refused for this username, for a while
    refused = _login(client)
    assert "Too many" in refused.headers["location"].replace("+", " ")
    assert client.get("/", follow_redirects=False).status_code == 303
    assert "login.throttled" in {a.action for a in registry.actions()}


def test_writes_need_csrf_and_are_audited(console: Any) -> None:
    client, token, registry = console
    _login(client)
    # a form post without the session's CSRF token is refused
    resp = client.post("/rollouts", data={"bundle_version": "v2", "csrf": "forged"})
    assert resp.status_code == 403
    # JSON writes with a session cookie need X-CSRF-Token
    assert client.post("/api/rollouts", json={"bundle_version": "v2"}).status_code == 403

    csrf = _csrf(client.get("/rollouts").text)
    resp = client.post(
        "/rollouts",
        data={
            "csrf": csrf,
            "bundle_version": "v2",
            "sites": "shop-1,shop-2",
            "canary_percent": "50",
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303
    rollout_url = resp.headers["location"].split("?")[0]
    rollout_id = rollout_url.rsplit("/", 1)[-1]
    page = client.get(rollout_url)
    assert "Wave 1" in page.text and "Wave 2" in page.text
    resp = client.post(f"{rollout_url}/abort", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 303
    assert registry.rollout(rollout_id).state == "aborted"

    # the same through the API with the bearer token (no CSRF needed, no cookies sent)
    client.cookies.clear()
    auth = {"Authorization": f"Bearer {token}"}
    resp = client.post(
        "/api/rollouts", json={"bundle_version": "v3", "sites": ["shop-1"]}, headers=auth
    )
    assert resp.status_code == 201, resp.text
    rid = resp.json()["id"]
    assert client.post(f"/api/rollouts/{rid}/pause", headers=auth).json()["state"] == "paused"
    dup = client.post(
        "/api/rollouts", json={"bundle_version": "v4", "sites": ["shop-1"]}, headers=auth
    )
    assert dup.status_code == 400  # shop-1 is already in an active rollout
    assert client.get(f"/api/rollouts/{rid}", headers=auth).json()["state"] == "paused"

    audited = {(a.actor, a.action) for a in registry.actions()}
    assert ("alice", "rollout.start") in audited and ("alice", "rollout.abort") in audited
    assert ("token:operator", "rollout.start") in audited
    assert ("token:operator", "rollout.pause") in audited


def test_audit_search_over_synced_records(tmp_path: Path) -> None:
    from aivos.cloud.ingest.store import CloudStore
    from aivos.shared.syncwire import SyncEnvelope

    def env(site: str, seq: int, intent: str, decision: str, ts: str) -> SyncEnvelope:
        return SyncEnvelope(
            id=f"r{seq}",
            site=site,
            data_class="audit",
            kind="decision",
            seq=seq,
            created_at=ts,
            payload={
                "id": f"r{seq}",
                "ts": ts,
                "kind": "decision",
                "intent": intent,
                "decision": decision,
                "confidence": 0.9,
                "latency_ms": 2.0,
                "model_version": "v1",
                "pii_counts": {"EMAIL": 1},
                "detail": {"text": "<EMAIL>"},
            },
        )

    store = CloudStore.open(tmp_path)
    store.upsert_many(
        [
            env("shop-1", 1, "balance", "local", "2026-01-01T10:00:00.000Z"),
            env("shop-1", 2, "lost_card", "escalate", "2026-01-01T11:00:00.000Z"),
            env("shop-2", 1, "balance", "refuse", "2026-01-02T09:00:00.000Z"),
        ]
    )
    store.close()
    token = create_operator_token(tmp_path)
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(ConsoleSettings(data_dir=tmp_path, connect=False))) as client:
        hits = client.get("/api/audit", headers=auth).json()
        assert [(h["site"], h["id"]) for h in hits] == [
            ("shop-2", "r1"),
            ("shop-1", "r2"),
            ("shop-1", "r1"),
        ]
        by_intent = client.get("/api/audit?intent=balance", headers=auth).json()
        assert {h["site"] for h in by_intent} == {"shop-1", "shop-2"}
        assert [
            h["id"]
            for h in client.get("/api/audit?site=shop-1&decision=escalate", headers=auth).json()
        ] == ["r2"]
        window = client.get(
            "/api/audit?since=2026-01-01T10:30&until=2026-01-02T00:00", headers=auth
        ).json()
        assert [h["id"] for h in window] == ["r2"]
        # shown as synced: masked text and PII counts only
        assert hits[0]["detail"] == {"text": "<EMAIL>"} and hits[0]["pii_counts"] == {"EMAIL": 1}


def test_console_serves_the_registry_while_the_hub_is_unreachable(tmp_path: Path) -> None:
    from aivos.shared.natsconf.server import free_port

    token = create_operator_token(tmp_path)
    auth = {"Authorization": f"Bearer {token}"}
    settings = ConsoleSettings(data_dir=tmp_path, nats_url=f"nats://127.0.0.1:{free_port()}")
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/sites", headers=auth).status_code == 200
        resp = client.put("/api/config/shop-1", json={"thresholds": {"x": 0.5}}, headers=auth)
        assert resp.status_code == 503
        assert resp.json()["extra"]["code"] == "link_down"
