"""The console's fleet link when the hub's config refuses the console's identity.

A real nats-server whose one user may not create JetStream streams (a `deny` rule: the
missing grant of docs/security.md), and one whose account has no JetStream. The fleet
service keeps trying in the background (a hub reload can fix it), logs the refusal once at
ERROR rather than every try, and the console names it: `/healthz` says ``refused``,
`/api/health` gives the error class, message and since when, and every page shows a banner.
When the hub's config is fixed and reloaded, the service connects and all of that clears."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from aivos.cloud.console.app import ConsoleSettings, create_app
from aivos.cloud.fleet.service import FleetService
from aivos.cloud.fleet.tokens import add_operator, create_operator_token
from aivos.shared.natsconf import free_port, nats_server_binary
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

_SERVICE_LOG = "aivos.cloud.fleet.service"
_DENY_CREATE = 'permissions: { publish: { deny: ["$JS.API.STREAM.CREATE.>"] } }'
_USERS_CONF = """
listen: 127.0.0.1:{port}
jetstream {{ store_dir: "{store}" }}
authorization {{
  users = [ {{ user: "console", password: "console", {permissions} }} ]
}}
"""
# the console's account without JetStream, then with it
_ACCOUNT_CONF = """
listen: 127.0.0.1:{port}
jetstream {{ store_dir: "{store}" }}
accounts {{
  CONSOLE: {{ {jetstream} users: [ {{ user: "console", password: "console" }} ] }}
}}
"""


class _Hub:
    """A nats-server run from a config this test rewrites (`reconfigure`: SIGHUP reload;
    `restart`: stop and start on the same port)."""

    def __init__(self, tmp_path: Path, template: str, **values: str) -> None:
        self.dir = tmp_path
        self.port = free_port()
        self.template = template
        self.proc: subprocess.Popen[bytes] | None = None
        self._write(values)

    @property
    def url(self) -> str:
        return f"nats://console:console@127.0.0.1:{self.port}"

    def _write(self, values: dict[str, str]) -> None:
        text = self.template.format(port=self.port, store=self.dir / "js", **values)
        (self.dir / "hub.conf").write_text(text)

    def start(self) -> _Hub:
        with (self.dir / "hub.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(self.dir / "hub.conf")],
                stdout=log,
                stderr=log,
            )
        return self

    def reconfigure(self, **values: str) -> None:
        assert self.proc is not None
        self._write(values)
        self.proc.send_signal(signal.SIGHUP)

    def restart(self, **values: str) -> None:
        self.stop()
        self._write(values)
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def denying_hub(tmp_path: Path) -> Iterator[_Hub]:
    hub = _Hub(tmp_path, _USERS_CONF, permissions=_DENY_CREATE).start()
    yield hub
    hub.stop()


@pytest.fixture
def hub_without_jetstream(tmp_path: Path) -> Iterator[_Hub]:
    hub = _Hub(tmp_path, _ACCOUNT_CONF, jetstream="").start()
    yield hub
    hub.stop()


def _service(data_dir: Path, hub: _Hub) -> FleetService:
    """The console's fleet service, its slow retry of a refusal shortened for the test."""
    data_dir.mkdir(parents=True)
    # domain None: the test server runs JetStream without the hub's domain
    return FleetService(data_dir, hub.url, domain=None, retry_cap_s=0.2, js_ready_timeout_s=5)


class _Records(logging.Handler):
    """The fleet service's log records (caplog's handler sits on the root logger, which
    the console app's logging config replaces)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno == level]


@pytest.fixture
def service_log() -> Iterator[_Records]:
    logger = logging.getLogger(_SERVICE_LOG)
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def _login(client: AsyncTestClient[Any]) -> None:
    page = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    form = {"username": "alice", "password": "correct horse", "csrf": csrf.group(1)}
    assert (await client.post("/login", data=form)).status_code in (200, 303)


async def _banner(client: AsyncTestClient[Any]) -> str | None:
    page = await client.get("/")
    assert page.status_code == 200, page.text
    found = re.search(r'<div class="flash err" id="fleet-link"[^>]*>(.*?)</div>', page.text)
    return found.group(1) if found else None


async def test_a_missing_grant_is_logged_once_shown_and_cleared_by_a_hub_reload(
    tmp_path: Path, denying_hub: _Hub, service_log: _Records
) -> None:
    data_dir = tmp_path / "console"
    service = _service(data_dir, denying_hub)
    add_operator(service.registry, "alice", "correct horse")
    token = create_operator_token(data_dir)
    bearer = {"Authorization": f"Bearer {token}"}
    settings = ConsoleSettings(data_dir=data_dir, connect=False)
    await service.start(wait_for_hub=False)
    try:
        async with AsyncTestClient(create_app(settings, fleet=service)) as client:
            await eventually(
                lambda: service.connect_failures >= 3, timeout=120, what="three refused tries"
            )
            # it keeps trying, but the refusal is logged at ERROR once, not every try
            errors = service_log.at(logging.ERROR)
            assert len(errors) == 1, [r.getMessage() for r in errors]
            logged = errors[0].getMessage()
            assert "the hub refuses this console's identity" in logged
            assert "permission denied" in logged and "$js.api.stream.create.kv_" in logged
            assert service_log.at(logging.WARNING) == []
            assert len(service_log.at(logging.DEBUG)) >= 2  # the repeats
            assert service.config is None

            # /healthz names the state only (it is open); /api/health the why
            assert (await client.get("/healthz")).json() == {
                "status": "ok",
                "fleet_link": "refused",
            }
            assert (await client.get("/api/health")).status_code == 401
            health = (await client.get("/api/health", headers=bearer)).json()
            link = health["fleet_link_detail"]
            assert health["fleet_link"] == link["state"] == "refused"
            assert link["error"] == "JetStreamPermissionDenied"
            assert "permission denied: this identity may not publish to" in link["message"]
            assert link["failures"] >= 3 and link["since"] > 0
            assert "console:console" not in str(health)  # the URL's password never shown

            await _login(client)
            banner = await _banner(client)
            assert banner is not None
            assert banner.startswith("Fleet link down since ")
            assert "the hub refuses this console&#39;s identity" in banner
            assert "Fix the hub&#39;s config and reload the hub" in banner

            # the operator adds the grant and reloads the hub: the next try connects
            denying_hub.reconfigure(permissions="")
            await eventually(lambda: service.config is not None, timeout=60, what="the link up")
            health = (await client.get("/api/health", headers=bearer)).json()
            assert health["fleet_link"] == "up"
            detail = health["fleet_link_detail"]
            assert (detail["error"], detail["message"], detail["failures"]) == (None, None, 0)
            assert await _banner(client) is None
            assert len(service_log.at(logging.ERROR)) == 1
    finally:
        await service.stop()


async def test_an_account_without_jetstream_is_named_until_the_hub_enables_it(
    tmp_path: Path, hub_without_jetstream: _Hub, service_log: _Records
) -> None:
    data_dir = tmp_path / "console"
    service = _service(data_dir, hub_without_jetstream)
    await service.start(wait_for_hub=False)
    try:
        await eventually(
            lambda: service.connect_failures >= 3, timeout=120, what="three refused tries"
        )
        assert len(service_log.at(logging.ERROR)) == 1
        link = service.link.status()
        assert (link.state, link.error) == ("refused", "JetStreamNotEnabled")
        assert link.message is not None and "`jetstream: enabled`" in link.message

        hub_without_jetstream.restart(jetstream="jetstream: enabled,")
        await eventually(lambda: service.config is not None, timeout=60, what="the link up")
        assert service.link.status().state == "up"
    finally:
        await service.stop()
