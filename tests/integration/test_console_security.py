"""Console hardening: operator tokens expire and can be revoked, roles are checked on every
page and API route, login throttling per address and user name without locking the real
operator out, CSP and frame headers on every response."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from aivos.cloud.console.app import ConsoleSettings, create_app
from aivos.cloud.console.auth import LoginThrottle
from aivos.cloud.fleet.registry import SqliteRegistry
from aivos.cloud.fleet.tokens import add_operator, hash_token, new_token

PASSWORD = "correct horse battery"


def _token(reg: SqliteRegistry, name: str, role: str, expires_in_s: float = 3600) -> str:
    token = new_token()
    reg.add_token(hash_token(token), name, role, time.time() + expires_in_s)
    return token


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Litestar]:
    reg = SqliteRegistry.open(tmp_path)
    for name, role in (("vera", "viewer"), ("otto", "operator"), ("alice", "admin")):
        add_operator(reg, name, PASSWORD)
        reg.put_operator(name, reg.operator_hash(name) or "", role)
    reg.close()
    app = create_app(ConsoleSettings(data_dir=tmp_path, connect=False))
    yield app
    app.state.registry.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _login(client: TestClient[Any], username: str, password: str = PASSWORD) -> Any:
    csrf = _csrf(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf": csrf, "next": "/"},
        follow_redirects=False,
    )


def test_expired_and_revoked_tokens_are_refused(app: Litestar, tmp_path: Path) -> None:
    reg: SqliteRegistry = app.state.registry
    live = _token(reg, "ci", "viewer")
    expired = _token(reg, "old", "admin", expires_in_s=-1)
    with TestClient(app) as client:
        assert client.get("/api/sites", headers=_bearer(live)).status_code == 200
        assert client.get("/api/sites", headers=_bearer(expired)).status_code == 401
        revoke = [sys.executable, "-m", "aivos", "fleet", "operator-token", "revoke", "ci"]
        done = subprocess.run(
            [*revoke, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "revoked 1 token" in done.stdout
        assert client.get("/api/sites", headers=_bearer(live)).status_code == 401
        # revoking an unknown name fails loudly
        again = subprocess.run(
            [*revoke, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        assert again.returncode != 0
        assert "operator_token.revoke" in {a.action for a in reg.actions()}


def test_token_create_cli_sets_role_and_expiry(tmp_path: Path) -> None:
    create = [sys.executable, "-m", "aivos", "fleet", "operator-token", "create"]
    args = ["--name", "dash", "--role", "viewer", "--expires-days", "1"]
    done = subprocess.run(
        [*create, *args, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    with SqliteRegistry.open(tmp_path) as reg:
        assert reg.token_info(hash_token(token)) == ("dash", "viewer")
        row = reg._read(
            lambda c: c.execute(
                "SELECT expires_at FROM operator_tokens WHERE name = 'dash'"
            ).fetchone()
        )
    assert 0 < row["expires_at"] - time.time() <= 86400


# (route, method, least role) for every API route; the matrix checks each role on each row
API_ROUTES = [
    ("/api/sites", "GET", "viewer"),
    ("/api/ingest", "GET", "viewer"),
    ("/api/overview", "GET", "viewer"),
    ("/api/sites/shop-1", "GET", "viewer"),
    ("/api/rollouts", "GET", "viewer"),
    ("/api/rollouts/r-1", "GET", "viewer"),
    ("/api/actions", "GET", "viewer"),
    ("/api/config/shop-1", "PUT", "operator"),
    ("/api/rollouts", "POST", "operator"),
    ("/api/rollouts/r-1/pause", "POST", "operator"),
    ("/api/health", "GET", "viewer"),
    ("/api/audit", "GET", "admin"),
]
ROLES = ("viewer", "operator", "admin")


def test_roles_on_every_api_route(app: Litestar) -> None:
    reg: SqliteRegistry = app.state.registry
    tokens = {role: _token(reg, f"t-{role}", role) for role in ROLES}
    routes = {
        (route.path, method)
        for route in app.routes
        if route.path.startswith("/api")
        for method in getattr(route, "methods", ())
        if method not in ("HEAD", "OPTIONS")
    }
    covered = {(re.sub(r"shop-1|r-1|pause", "*", p), m) for p, m, _ in API_ROUTES}
    declared = {(re.sub(r"\{[^}]+\}", "*", p), m) for p, m in routes}
    assert declared <= covered, f"routes missing from API_ROUTES: {declared - covered}"
    with TestClient(app) as client:
        for path, method, least in API_ROUTES:
            for role in ROLES:
                resp = client.request(method, path, headers=_bearer(tokens[role]), json={})
                allowed = ROLES.index(role) >= ROLES.index(least)
                assert (resp.status_code != 403) == allowed, (path, method, role, resp.text)
                if not allowed:
                    assert f"needs the {least} role" in resp.json()["detail"]


def test_roles_on_pages(app: Litestar) -> None:
    with TestClient(app) as client:  # one lifespan: leaving it closes the registry
        assert _login(client, "vera").status_code == 303
        assert client.get("/").status_code == 200
        assert client.get("/rollouts").status_code == 200
        assert client.get("/audit").status_code == 403
        csrf = _csrf(client.get("/rollouts").text)
        # a valid session and CSRF token, but a viewer may not start a rollout
        resp = client.post("/rollouts", data={"bundle_version": "v2", "csrf": csrf})
        assert resp.status_code == 403
        assert "needs the operator role" in resp.text
        client.cookies.clear()
        assert _login(client, "alice").status_code == 303
        assert client.get("/audit").status_code != 403


async def _login_from(app: Litestar, address: str, username: str, password: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        csrf = _csrf((await client.get("/login")).text)
        return await client.post(
            "/login", data={"username": username, "password": password, "csrf": csrf}
        )


def _throttled(resp: httpx.Response) -> bool:
    return resp.status_code == 303 and "Too+many" in resp.headers["location"]


@pytest.mark.asyncio
async def test_login_throttle_per_address_spares_the_real_operator(app: Litestar) -> None:
    # one address sprays 30 user names: slowed down after 5 failures, whatever the name
    results = [await _login_from(app, "198.51.100.7", f"user{i}", "guess") for i in range(30)]
    assert not any(_throttled(r) for r in results[:5])
    assert all(_throttled(r) for r in results[5:])
    assert "Retry-After" in results[-1].headers
    # ... and guessing alice's password from there is throttled too
    assert _throttled(await _login_from(app, "198.51.100.7", "alice", PASSWORD))
    # the real alice, from her own address, is not locked out
    ok = await _login_from(app, "203.0.113.5", "alice", PASSWORD)
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    assert "aivos_session=" in ok.headers.get("set-cookie", "")


def test_throttle_backs_off_a_distributed_guess_but_not_known_addresses() -> None:
    throttle = LoginThrottle(free_failures=5, base_s=2.0, spread_addresses=10)
    now = 1000.0
    throttle.succeeded("alice", "203.0.113.5")  # alice's usual address
    for i in range(10):  # one wrong guess each from 10 addresses
        throttle.failed("alice", f"198.51.100.{i}", now=now)
    assert throttle.retry_after("alice", "192.0.2.99", now=now + 0.5) > 0  # a new address
    assert throttle.retry_after("alice", "203.0.113.5", now=now + 0.5) == 0  # alice's own
    assert throttle.retry_after("bob", "192.0.2.99", now=now + 0.5) == 0  # other names
    # back-off, not a lock: it ends
    assert throttle.retry_after("alice", "192.0.2.99", now=now + 3) == 0
    # per address the wait doubles with each further failure
    for _ in range(7):
        throttle.failed("x", "192.0.2.1", now=now)
    assert 7 < throttle.retry_after("x", "192.0.2.1", now=now) <= 8


@pytest.mark.parametrize(
    "path", ["/login", "/", "/api/sites", "/healthz", "/static/console.css", "/nope"]
)
def test_security_headers_on_every_response(app: Litestar, path: str) -> None:
    with TestClient(app) as client:
        resp = client.get(path, follow_redirects=False)
    csp = resp.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "script-src" not in csp  # the console serves no script at all
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"
