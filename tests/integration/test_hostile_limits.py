"""Issue 12: unauthenticated routes are rate-limited per client address.

A real agent (bundle, SQLite, usearch) behind Litestar's test client, with an uplink
configured (so refused requests *could* queue sync rows) on a closed port. The open routes
and every failed bearer authentication take from one token bucket per client address;
a valid token from the same address keeps only its own per-token limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from aivos.edge.api.app import create_app
from aivos.edge.api.ratelimit import RateLimiter
from aivos.shared.natsconf.server import free_port
from tests.fixtures.edge import EdgeHarness, issue_token, make_edge_settings

BURST = 6
PEER = "x-test-peer"  # the test's stand-in for the TCP peer address (see _Peer)


class _Peer:
    """Sets the ASGI `client` address from the `x-test-peer` header: Litestar's test client
    always reports `testclient`, and the limiter keys on that address."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = dict(scope["headers"]).get(PEER.encode())
            if peer:
                scope["client"] = (peer.decode(), 40000)
        await self.app(scope, receive, send)


@pytest.fixture
def limited(tmp_path: Path, small_bundle: Path) -> Iterator[EdgeHarness]:
    data_dir = tmp_path / "edge"
    tokens = {"client": issue_token(data_dir, "client", "kiosk")}
    settings = make_edge_settings(
        data_dir,
        small_bundle,
        **{
            # no refill during the test: the counts below are exact
            "limits.anon_rate_per_second": 0.001,
            "limits.anon_rate_burst": BURST,
            # an uplink that never comes up: rows that must sync stay in the outbox
            "uplink.nats_url": f"nats://127.0.0.1:{free_port()}",
        },
    )
    with TestClient(_Peer(create_app(settings))) as client:
        yield EdgeHarness(client, data_dir, tokens)


def _outbox(h: EdgeHarness) -> int:
    with sqlite3.connect(h.data_dir / "aivos.db") as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def _audit(h: EdgeHarness) -> int:
    with sqlite3.connect(h.data_dir / "aivos.db") as conn:
        return int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])


def _assert_rate_limited(resp: Any) -> None:
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == "rate_limited"
    assert "client address" in resp.json()["error"]["message"]
    assert int(resp.headers["Retry-After"]) >= 1


def test_a_flood_from_one_address_is_limited_but_a_valid_token_still_works(
    limited: EdgeHarness,
) -> None:
    c = limited.client
    # rows that must sync do queue on this box (so "nothing queued" below is not vacuous)
    before = _outbox(limited)
    answered = limited.post("/v1/infer", json={"text": "what is the balance in my account"})
    assert answered.status_code == 200, answered.text
    assert _outbox(limited) > before
    outbox, audit = _outbox(limited), _audit(limited)

    webhooks = [
        c.post("/v1/events/corebank", content=b'{"a": 1}', headers={"X-Aivos-Event": "dispute"})
        for _ in range(40)
    ]
    statuses = [r.status_code for r in webhooks]
    assert statuses[:BURST] == [401] * BURST  # the burst: refused by the signature check
    assert statuses[BURST:] == [429] * (40 - BURST)
    _assert_rate_limited(webhooks[-1])

    # token guessing from the same address: the bucket is empty, every try is a 429
    for headers in ({}, {"Authorization": "Bearer guess-1"}, {"Authorization": "Basic x"}):
        _assert_rate_limited(c.get("/v1/knowledge/search", params={"q": "card"}, headers=headers))
    _assert_rate_limited(c.get("/healthz"))

    # a valid token from the same address is not charged to the address
    for _ in range(3 * BURST):
        ok = limited.get("/v1/knowledge/search", params={"q": "card"})
        assert ok.status_code == 200, ok.text

    # the flood wrote nothing: no outbox row, no audit row
    assert _outbox(limited) == outbox
    assert _audit(limited) == audit


def test_failed_authentications_are_limited_per_address(limited: EdgeHarness) -> None:
    c = limited.client
    attacker, neighbour = {PEER: "10.0.0.66"}, {PEER: "10.0.0.7"}
    bad = {"Authorization": "Bearer not-a-token", **attacker}
    statuses = [c.get("/v1/jobs/j1", headers=bad).status_code for _ in range(BURST + 10)]
    assert statuses == [401] * BURST + [429] * 10
    _assert_rate_limited(c.post("/v1/infer", json={"text": "hi"}, headers=attacker))
    # another address is not affected, on open routes or when it fails to authenticate
    assert c.get("/healthz", headers=neighbour).status_code == 200
    guess = {"Authorization": "Bearer x", **neighbour}
    assert c.get("/v1/jobs/j1", headers=guess).status_code == 401
    # and the attacker's valid token works (its own per-token limit)
    token = {"Authorization": f"Bearer {limited.tokens['client']}", **attacker}
    assert c.get("/v1/knowledge/search", params={"q": "card"}, headers=token).status_code == 200


def test_default_limits_let_health_probes_through(tmp_path: Path, small_bundle: Path) -> None:
    settings = make_edge_settings(tmp_path / "edge", small_bundle)
    assert (settings.limits.anon_rate_per_second, settings.limits.anon_rate_burst) == (20.0, 40)
    with TestClient(create_app(settings)) as client:
        for _ in range(20):
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200


def test_the_limiter_holds_a_bounded_number_of_addresses() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 2, max_keys=100, clock=lambda: now[0])
    for i in range(10_000):  # a spoofing flood: every request from a new address
        limiter.allow(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(limiter) == 100
    # an address that keeps sending stays limited while the flood goes on
    assert limiter.allow("victim") == 0.0
    assert limiter.allow("victim") == 0.0
    assert limiter.allow("victim") > 0
    for i in range(50):
        limiter.allow(f"spoof-{i}")
    assert limiter.allow("victim") > 0
    # buckets that have refilled are dropped: after a quiet spell, only the new key is held
    now[0] += 10.0
    assert limiter.allow("late") == 0.0
    assert len(limiter) == 1
