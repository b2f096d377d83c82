"""Schemathesis against the real servers (issue 12): `aivos edge serve` with a real admin
token (every route reachable) and `aivos cloud console` with an operator token (admin role).

Every operation of each OpenAPI schema gets every built-in check (`not_a_server_error`,
`status_code_conformance`, `content_type_conformance`, `response_schema_conformance`,
`negative_data_rejection`, ...): 0 server errors, and every status a route answers is
documented in its schema. Bounded by `FUZZ_EXAMPLES` examples per operation and pass
(default 10, a few minutes for both servers on 2 cores); set it higher for a deeper run.

The schemas are built in-process from the same route handlers the servers run (schemathesis
makes one test per operation from a schema known at collection time); the edge fixture
checks that the agent serves exactly that document at `/schema/openapi.json`. The console
does not publish one (`openapi_config=None`: its pages are HTML), so the schema of its
JSON API (`/api/*`) comes from its `ApiController`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from schemathesis.checks import (
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
)

from aivos.cloud.console.api import ApiController
from aivos.edge.api.app import create_app
from aivos.shared.natsconf import NatsServer
from tests.fixtures.agent_proc import AgentProcess, ConsoleProcess, aivos_cli, create_token
from tests.fixtures.edge import make_edge_settings

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples every run: a CI failure reproduces locally
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


def edge_schema_doc() -> dict[str, Any]:
    """The OpenAPI document of the edge API (the app is built, not started)."""
    settings = make_edge_settings(Path("unused"), Path("unused"))
    return create_app(settings).openapi_schema.to_schema()


def console_schema_doc() -> dict[str, Any]:
    """The OpenAPI document of the console's JSON API, from the controller it serves."""
    app = Litestar(
        route_handlers=[ApiController],
        dependencies={
            name: Provide(lambda: None, sync_to_thread=False) for name in ("fleet", "registry")
        },
        openapi_config=OpenAPIConfig(title="aivos console API", version="1"),
    )
    return app.openapi_schema.to_schema()


class Target:
    """A running server: where to send the cases, and with which credential."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory, small_bundle: Path) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz-edge")
    data_dir = root / "edge"
    token = create_token(data_dir, "admin", "fuzz")
    agent = AgentProcess(data_dir, small_bundle, log=root / "agent.log").start()
    try:
        served = httpx.get(f"{agent.url}/schema/openapi.json", timeout=10).json()
        assert served == json.loads(json.dumps(edge_schema_doc()))  # what we fuzz is what it serves
        yield Target(agent.url, token)
        alive = agent.proc is not None and agent.proc.poll() is None
        assert alive, f"the agent died under fuzzing: {agent.tail()}"
    finally:
        agent.stop()
    assert "Traceback" not in agent.tail(10**7), agent.tail()


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, nats_hub: NatsServer
) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz-console")
    data_dir = root / "cloud"
    made = aivos_cli(
        "fleet", "operator-token", "create", "--data-dir", str(data_dir), "--name", "fuzz"
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    console = ConsoleProcess(data_dir, nats_hub.url, log=root / "console.log").start()
    try:
        yield Target(console.url, token)
        alive = console.proc is not None and console.proc.poll() is None
        assert alive, f"the console died under fuzzing: {console.tail()}"
    finally:
        console.stop()
    assert "Traceback" not in console.tail(10**7), console.tail()


edge_schema = schemathesis.openapi.from_dict(edge_schema_doc())
console_schema = schemathesis.openapi.from_dict(console_schema_doc())


# Two passes per server: server errors alone (each operation explores its whole budget
# for a 5xx instead of stopping at its first conformance failure), then every check.


@edge_schema.parametrize()
@FUZZ
def test_edge_api_never_answers_5xx(case: Any, edge_server: Target) -> None:
    case.call_and_validate(
        base_url=edge_server.url, headers=edge_server.headers, checks=[not_a_server_error]
    )


# Open findings (docs/faults.md): operations that deviate from their schema in one named way
# today. Only that one check is left out for them, and only until the named decision is
# taken; every other check (5xx, status codes, bodies, headers) still runs on them.
OPEN_FINDINGS: dict[str, tuple[Any, str]] = {
    "POST /v1/infer": (
        negative_data_rejection,
        "Litestar decodes bodies leniently: 'stream': 0 is taken as false, not refused",
    ),
    "POST /v1/jobs": (
        positive_data_acceptance,
        "callback hosts are an allow-list from settings (jobs.callback_allow_hosts) that a "
        "static schema cannot state: other hosts answer 400",
    ),
    "POST /api/rollouts": (
        positive_data_acceptance,
        "Litestar's generated schema drops the site-id pattern on list items, the guards' "
        "lower bounds and the nested bodies' closed keys, so schema-valid bodies get a 400",
    ),
}


def _excluded(case: Any) -> list[Any]:
    finding = OPEN_FINDINGS.get(f"{case.operation.method.upper()} {case.operation.path}")
    return [finding[0]] if finding else []


@edge_schema.parametrize()
@FUZZ
def test_edge_api_conforms_to_its_schema(case: Any, edge_server: Target) -> None:
    case.call_and_validate(
        base_url=edge_server.url, headers=edge_server.headers, excluded_checks=_excluded(case)
    )


@console_schema.parametrize()
@FUZZ
def test_console_api_never_answers_5xx(case: Any, console_server: Target) -> None:
    case.call_and_validate(
        base_url=console_server.url, headers=console_server.headers, checks=[not_a_server_error]
    )


@console_schema.parametrize()
@FUZZ
def test_console_api_conforms_to_its_schema(case: Any, console_server: Target) -> None:
    case.call_and_validate(
        base_url=console_server.url,
        headers=console_server.headers,
        excluded_checks=_excluded(case),
    )
