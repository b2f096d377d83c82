"""Issue 12, reproductions 4, 5 and 9, against the real edge app (real bundle, SQLite, a fake
core-banking service behind a real workflow):

* 4: sessions, jobs and runs belong to the token that made them; another client token gets
  404 for all of them; operators see everything; ids are not guessable.
* 5: a workflow's inputs are declared; a client's metadata cannot override `text` or
  `session_id`, nor choose the account a connector touches (that comes from the token).
* 9: hostile input is a 4xx, never a 500 or a traceback: JSON nested 1,000 deep, OPTIONS on
  guarded routes, malformed callback URLs; a streamed answer that cannot be recorded (a
  full disk) ends with an `error` event.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.testing import TestClient

from aivos.edge.agent import Agent
from aivos.edge.api.app import create_app
from aivos.edge.api.auth import OPEN_PATHS, TokenAuthMiddleware
from aivos.edge.api.controllers.infer import InferController
from aivos.edge.api.errors import exception_handlers
from aivos.edge.api.ratelimit import RateLimiter
from aivos.edge.results import Caller, StreamEvent, StreamMeta
from aivos.edge.store import Store
from aivos.edge.store import tokens as store_tokens
from aivos.edge.workflows.demo.corebank import CoreBank
from aivos.shared.errors import DiskFull
from aivos.shared.ids import new_id
from tests.fixtures.edge import make_edge_settings

CARD = "4111 1111 1111 1111"
WORKFLOW = """
name = "balance_check"
[trigger]
intents = ["balance"]

[inputs.account_id]
type = "string"
source = "token"
pattern = "ACC-[0-9]{4}"

[inputs.channel]
source = "request"
required = false
pattern = "[a-z]{1,16}"

[[steps]]
id = "billing"
kind = "http"
connector = "corebank"
path = "/accounts/{inputs.account_id}/billing-check"

[[steps]]
id = "answer"
kind = "respond"
template = "checked {inputs.account_id} via {inputs.channel} for: {inputs.text}"
"""
BALANCE = "what's my account balance"


class Edge:
    def __init__(self, client: TestClient[Any], tokens: dict[str, str], bank: CoreBank) -> None:
        self.client = client
        self.tokens = tokens
        self.bank = bank

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, path: str, who: str) -> Any:
        return self.client.get(path, headers=self.h(who))

    def post(self, path: str, who: str, **kwargs: Any) -> Any:
        return self.client.post(path, headers=self.h(who), **kwargs)


def _token(store: Store, scope: str, name: str, bound: dict[str, str] | None = None) -> str:
    return store.transact_sync(lambda c: store_tokens.create(c, name, scope, bound=bound))[1]


@pytest.fixture
def edge(tmp_path: Path, small_bundle: Path) -> Iterator[Edge]:
    data_dir = tmp_path / "edge"
    with Store.open(data_dir) as store:
        tokens = {
            "alice": _token(store, "client", "alice", {"account_id": "ACC-1001"}),
            "bob": _token(store, "client", "bob"),
            "operator": _token(store, "operator", "ops"),
        }
    (tmp_path / "balance.toml").write_text(WORKFLOW)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[credentials.corebank]\nheader = "Authorization"\nvalue = "Bearer tok"\n')
    secrets.chmod(0o600)
    with CoreBank(token="tok") as bank:
        settings = make_edge_settings(
            data_dir,
            small_bundle,
            **{
                "workflows.files": [str(tmp_path / "balance.toml")],
                "workflows.secrets_file": str(secrets),
                "workflows.connectors": {
                    "corebank": {"base_url": bank.url, "credential": "corebank"}
                },
            },
        )
        with TestClient(create_app(settings)) as client:
            yield Edge(client, tokens, bank)


# -- reproduction 4: ownership ------------------------------------------------------------------


def test_ids_are_not_guessable_but_still_sort_by_creation() -> None:
    ids = [new_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    values = [int("".join(f"{'0123456789ABCDEFGHJKMNPQRSTVWXYZ'.index(c):05b}" for c in i), 2)
              for i in ids]  # fmt: skip
    same_ms = [(a, b) for a, b in zip(values, values[1:], strict=False) if a >> 80 == b >> 80]
    assert same_ms, "no two ids were made in the same millisecond"
    # ids of the same millisecond are not neighbours: no id is its predecessor plus one
    assert all(b - a > 1 for a, b in same_ms)


def test_another_client_token_cannot_read_or_delete_a_session(edge: Edge) -> None:
    first = edge.post("/v1/infer", "bob", json={"text": BALANCE, "session_id": "cust-42"})
    assert first.status_code == 200, first.text
    put = edge.client.put(
        "/v1/sessions/cust-42/facts/card", json={"value": CARD}, headers=edge.h("bob")
    )
    assert put.status_code == 200, put.text

    # alice (another client) gets exactly what a session that does not exist gets
    missing = edge.get("/v1/sessions/no-such-session", "alice")
    assert missing.status_code == 404
    for method, path, body in [
        ("GET", "/v1/sessions/cust-42", None),
        ("GET", "/v1/sessions/cust-42/facts", None),
        ("GET", "/v1/sessions/cust-42/facts/card", None),
        ("DELETE", "/v1/sessions/cust-42/facts/card", None),
        ("DELETE", "/v1/sessions/cust-42", None),
        ("PUT", "/v1/sessions/cust-42/facts/card", {"value": "overwritten"}),
        ("POST", "/v1/infer", {"text": BALANCE, "session_id": "cust-42"}),
        ("POST", "/v1/infer", {"text": BALANCE, "session_id": "cust-42", "stream": True}),
        ("POST", "/v1/jobs", {"text": BALANCE, "session_id": "cust-42"}),
    ]:
        resp = edge.client.request(method, path, json=body, headers=edge.h("alice"))
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["error"]["code"] == missing.json()["error"]["code"]
        assert CARD not in resp.text

    # the owner and an operator still see it, unchanged
    for who in ("bob", "operator"):
        session = edge.get("/v1/sessions/cust-42", who)
        assert session.status_code == 200, session.text
        assert session.json()["facts"][0]["value"] == CARD
        assert len(session.json()["turns"]) == 2


def test_jobs_belong_to_the_token_that_submitted_them(edge: Edge) -> None:
    accepted = edge.post("/v1/jobs", "bob", json={"text": "set an alarm for 7 am"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    # an escalation that falls back (no uplink here) hands out a job id too
    oos = edge.post("/v1/infer", "bob", json={"text": "how do I fix my car's transmission"})
    assert oos.status_code == 200, oos.text
    ids = [job_id] + ([oos.json()["job_id"]] if oos.json()["job_id"] else [])
    for jid in ids:
        assert edge.get(f"/v1/jobs/{jid}", "bob").status_code == 200
        assert edge.get(f"/v1/jobs/{jid}", "operator").status_code == 200
        stolen = edge.get(f"/v1/jobs/{jid}", "alice")
        unknown = edge.get("/v1/jobs/01NOSUCHJOB", "alice")
        assert stolen.status_code == unknown.status_code == 404
        assert stolen.json()["error"]["code"] == unknown.json()["error"]["code"] == "job_not_found"


# -- reproduction 5: trusted workflow inputs ----------------------------------------------------


def test_workflow_inputs_come_from_the_token_not_from_metadata(edge: Edge) -> None:
    hostile = {"account_id": "ACC-2002", "text": "ignore", "session_id": "cust-42"}
    resp = edge.post(
        "/v1/infer", "alice", json={"text": BALANCE, "metadata": {**hostile, "channel": "app"}}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["answered_by"] == "workflow", body
    assert body["answer"] == f"checked ACC-1001 via app for: {BALANCE}"
    paths = [r["path"] for r in edge.bank.requests]
    assert paths == ["/accounts/ACC-1001/billing-check"]
    run = edge.get(f"/v1/runs/{body['run_id']}", "alice").json()
    assert run["inputs"] == {"account_id": "ACC-1001", "channel": "app", "text": BALANCE,
                             "session_id": None}  # fmt: skip

    # a malformed value of a request input is the client's error
    bad = edge.post("/v1/infer", "alice", json={"text": BALANCE, "metadata": {"channel": 7}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"

    # a token bound to no account never runs the workflow, whatever its metadata says
    unbound = edge.post("/v1/infer", "bob", json={"text": BALANCE, "metadata": hostile})
    assert unbound.status_code == 200, unbound.text
    assert unbound.json()["answered_by"] != "workflow"
    assert [r["path"] for r in edge.bank.requests] == paths

    # runs belong to the token they ran for
    assert edge.get(f"/v1/runs/{body['run_id']}", "bob").status_code == 404
    assert edge.get("/v1/runs", "bob").json()["runs"] == []
    assert [r["run_id"] for r in edge.get("/v1/runs", "alice").json()["runs"]] == [body["run_id"]]
    assert edge.get(f"/v1/runs/{body['run_id']}", "operator").status_code == 200


# -- reproduction 9: hostile input --------------------------------------------------------------


def _deep(n: int = 1000) -> str:
    return "[" * n + "]" * n


def test_deeply_nested_json_is_a_400_without_a_traceback(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    deep = _deep()
    cases = [
        ("POST", "/v1/infer", "alice", '{"text": "hi", "metadata": {"a": ' + deep + "}}"),
        ("POST", "/v1/infer", "alice", deep),
        ("POST", "/v1/jobs", "alice", '{"text": "hi", "metadata": {"a": ' + deep + "}}"),
        ("PUT", "/v1/sessions/s-deep/facts/k", "alice", '{"value": ' + deep + "}"),
        ("POST", "/v1/knowledge", "operator", '{"source": "x", "text": ' + deep + "}"),
        ("POST", "/v1/runs/NOPE/approve", "operator", '{"note": ' + deep + "}"),
        # within the decoder's reach, but deeper than metadata may nest
        ("POST", "/v1/infer", "alice", '{"text": "hi", "metadata": {"a": ' + _deep(40) + "}}"),
    ]
    for method, path, who, body in cases:
        headers = {**edge.h(who), "Content-Type": "application/json"}
        resp = edge.client.request(method, path, content=body.encode(), headers=headers)
        assert resp.status_code in (400, 404), (path, resp.status_code, resp.text)
        if path != "/v1/runs/NOPE/approve":
            assert resp.status_code == 400, (path, resp.text)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_options_on_guarded_routes_is_never_a_500(edge: Edge) -> None:
    paths = [
        "/v1/infer",
        "/v1/jobs",
        "/v1/jobs/x",
        "/v1/runs",
        "/v1/runs/x",
        "/v1/runs/x/approve",
        "/v1/sessions/s1",
        "/v1/sessions/s1/facts/k",
        "/v1/knowledge",
        "/metrics",
    ]
    for path in paths:
        anonymous = edge.client.options(path)
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert "scope" not in anonymous.text and "Middleware" not in anonymous.text
        allowed = edge.client.options(path, headers=edge.h("alice"))
        assert allowed.status_code < 500, (path, allowed.text)
        assert "Middleware" not in allowed.text


@pytest.mark.parametrize(
    "url", ["http://[::1/", "http://127.0.0.1/\u0000", "http://127.0.0.1:99999/", "http://a b/"]
)
def test_malformed_callback_urls_are_a_400(edge: Edge, url: str) -> None:
    resp = edge.post("/v1/jobs", "alice", json={"text": "set an alarm", "callback_url": url})
    assert resp.status_code == 400, resp.text
    assert "callback_url" in resp.text


class _FullDiskPipeline:
    """The pipeline seam: the answer is understood (meta sent), then recording it fails."""

    async def admit(self, query: Any, caller: Caller) -> None:
        return None

    async def events(self, query: Any, caller: Caller) -> AsyncGenerator[StreamEvent, None]:
        yield StreamMeta(request_id="r1", intent="balance", confidence=0.9, decision="local",
                         passages=[])  # fmt: skip
        raise DiskFull("/data")


def _agent() -> Agent:
    agent = Agent.__new__(Agent)  # nothing started: the controller only reaches the pipeline
    agent.pipeline = _FullDiskPipeline()  # type: ignore[assignment]
    return agent


def test_a_stream_that_cannot_be_recorded_ends_with_an_error_event(tmp_path: Path) -> None:
    with Store.open(tmp_path / "edge") as store:
        token = _token(store, "client", "c")
        app = Litestar(
            route_handlers=[InferController],
            dependencies={"agent": Provide(_agent, sync_to_thread=False)},
            middleware=[DefineMiddleware(TokenAuthMiddleware, exclude=OPEN_PATHS)],
            exception_handlers=exception_handlers,
        )
        app.state.tokens = store.tokens
        app.state.rate_limiter = RateLimiter(1000, 1000)
        with TestClient(app) as client:
            resp = client.post(
                "/v1/infer",
                json={"text": "hi", "stream": True},
                headers={"Authorization": f"Bearer {token}"},
            )
    events = [line[7:] for line in resp.text.splitlines() if line.startswith("event: ")]
    assert events == ["meta", "error"], resp.text
    data = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == {"error": {"code": "disk_full", "message": str(DiskFull("/data"))}}


def test_tokens_create_bind_sets_the_trusted_attributes(tmp_path: Path) -> None:
    aivos = [sys.executable, "-c", "import sys; from aivos.cli import main; main(sys.argv[1:])"]
    args = ["tokens", "create", "--data-dir", str(tmp_path), "--scope", "client"]
    done = subprocess.run(
        [*aivos, *args, "--name", "kiosk", "--bind", "account_id=ACC-1001"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    with Store.open(tmp_path, token_recheck_s=0.0) as store:
        info = store.authenticate(token)
    assert info is not None and info.bound == {"account_id": "ACC-1001"}
    bad = subprocess.run(
        [*aivos, *args, "--bind", "no-equals-sign"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "key=value" in bad.stderr
