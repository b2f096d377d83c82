"""The workflow HTTP surface (runs + events controllers) on a Litestar app assembled the way
`create_app` does: bearer-token auth, scopes, structured errors, `workflows` injected."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.testing import TestClient

from aivos.edge.api.auth import OPEN_PATHS, TokenAuthMiddleware
from aivos.edge.api.controllers.events import EventsController
from aivos.edge.api.controllers.runs import RunsController
from aivos.edge.api.errors import exception_handlers
from aivos.edge.api.ratelimit import RateLimiter
from aivos.edge.store import Store
from aivos.edge.workflows import WorkflowEngine, WorkflowSettings
from aivos.edge.workflows.demo.corebank import CoreBank
from aivos.edge.workflows.secrets import Credential, Secrets, WebhookSecret
from aivos.edge.workflows.settings import ConnectorSettings
from aivos.edge.workflows.signatures import sign, signed_headers
from tests.fixtures.wait import eventually_sync

WEBHOOK_SECRET = "whsec-test"

DISPUTE = """
name = "dispute_event"
[trigger]
events = ["corebank.dispute"]
intents = ["report_fraud"]

[[steps]]
id = "check"
kind = "approve"
message = "Dispute for {inputs.account_id} ({inputs.email})"
timeout_s = 3600

[[steps]]
id = "open"
kind = "http"
connector = "corebank"
method = "POST"
path = "/disputes"
body = { account_id = "{inputs.account_id}" }

[[steps]]
id = "answer"
kind = "respond"
template = "opened {steps.open.body.id} for {inputs.email}"
"""


class Api:
    def __init__(
        self, client: TestClient[Any], engine: WorkflowEngine, tokens: dict[str, str]
    ) -> None:
        self.client = client
        self.engine = engine
        self.tokens = tokens

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    def wait(self, run_id: str, *states: str) -> dict[str, Any]:
        """Poll the run until it reaches one of `states` (a condition, not a timing)."""

        def reached() -> dict[str, Any] | None:
            # runs a webhook started are the site's: operators see them (clients get 404)
            resp = self.client.get(f"/v1/runs/{run_id}", headers=self.auth("operator"))
            body: dict[str, Any] = resp.json()
            return body if body["run"]["state"] in states else None

        return eventually_sync(
            reached, timeout=30, interval=0.01, what=f"run {run_id} in state {states}"
        )

    def event(
        self,
        body: dict[str, Any],
        *,
        secret: str = WEBHOOK_SECRET,
        ts: int | None = None,
        **headers: str,
    ) -> Any:
        raw = json.dumps(body).encode()
        signed = {
            **signed_headers(secret, body["type"], raw, timestamp=ts),
            "Content-Type": "application/json",
        }
        return self.client.post("/v1/events/corebank", content=raw, headers={**signed, **headers})


@pytest.fixture
def bank() -> Iterator[CoreBank]:
    with CoreBank(token="tok") as b:
        yield b


@pytest.fixture
def api(tmp_path: Path, bank: CoreBank) -> Iterator[Api]:
    (tmp_path / "dispute.toml").write_text(DISPUTE)
    settings = WorkflowSettings(
        files=[str(tmp_path / "dispute.toml")],
        connectors={"corebank": ConnectorSettings(base_url=bank.url, credential="corebank")},
    )
    secrets = Secrets(
        credentials={"corebank": Credential(value="Bearer tok")},
        webhooks={"corebank": WebhookSecret(secret=WEBHOOK_SECRET)},
    )
    store = Store.open(tmp_path / "edge")
    tokens = {s: store.create_token_sync(s, f"t-{s}")[1] for s in ("client", "operator")}
    engine = WorkflowEngine(store, settings, secrets=secrets)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await engine.start()  # on the app's loop, as create_app does
        try:
            yield
        finally:
            await engine.stop()

    app = Litestar(
        route_handlers=[RunsController, EventsController],
        dependencies={"workflows": Provide(lambda: engine, sync_to_thread=False)},
        middleware=[DefineMiddleware(TokenAuthMiddleware, exclude=OPEN_PATHS)],
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
    )
    app.state.tokens = store.tokens
    app.state.rate_limiter = RateLimiter(10_000, 10_000)
    with TestClient(app) as client:
        yield Api(client, engine, tokens)
    store.close()


BODY = {"type": "dispute", "account_id": "ACC-1001", "email": "jane.doe@example.com"}


def test_signed_event_starts_a_run_and_operator_approves_it(api: Api, bank: CoreBank) -> None:
    resp = api.event(BODY)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert accepted["event"] == "corebank.dispute"
    (run,) = accepted["runs"]
    run_id = run["run_id"]
    api.wait(run_id, "waiting_approval")

    listed = api.client.get("/v1/runs", headers=api.auth("operator"))
    assert listed.status_code == 200
    assert [r["run_id"] for r in listed.json()["runs"]] == [run_id]
    assert listed.json()["runs"][0]["state"] == "waiting_approval"

    # issue 12 (repro 4): a client token sees only the runs started for its own requests;
    # this run is the site's (a webhook started it), so a client neither sees nor decides it
    mine = api.client.get("/v1/runs", headers=api.auth("client"))
    assert mine.status_code == 200 and mine.json()["runs"] == []
    assert api.client.get(f"/v1/runs/{run_id}", headers=api.auth("client")).status_code == 404
    forbidden = api.client.post(f"/v1/runs/{run_id}/approve", headers=api.auth("client"))
    assert forbidden.status_code == 403
    assert bank.side_effects == []

    ok = api.client.post(
        f"/v1/runs/{run_id}/approve", headers=api.auth("operator"), json={"note": "verified"}
    )
    assert ok.status_code == 200, ok.text
    api.wait(run_id, "succeeded")
    again = api.client.post(f"/v1/runs/{run_id}/approve", headers=api.auth("operator"))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "run_conflict"

    detail = (api.client.get(f"/v1/runs/{run_id}", headers=api.auth("operator"))).json()
    assert detail["run"]["state"] == "succeeded"
    assert [s["step"] for s in detail["steps"]] == ["check", "open", "answer"]
    assert detail["steps"][0]["approval"]["decided_by"] == "t-operator"
    assert detail["steps"][1]["attempts"] == 1 and detail["steps"][1]["idempotency_key"]
    # the timeline is PII-masked: the e-mail never appears, a placeholder does
    text = json.dumps(detail)
    assert "jane.doe@example.com" not in text
    assert "<EMAIL_" in text
    assert len(bank.side_effects) == 1


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "unsigned"),
        ("wrong_secret", "bad_signature"),
        ("stale", "stale_timestamp"),
        ("tampered", "bad_signature"),
    ],
)
def test_bad_webhook_signature_is_rejected_and_counted(api: Api, case: str, reason: str) -> None:
    if case == "unsigned":
        resp = api.client.post("/v1/events/corebank", json=BODY)
    elif case == "wrong_secret":
        resp = api.event(BODY, secret="guess")
    elif case == "stale":
        resp = api.event(BODY, ts=int(time.time()) - 3600)
    else:
        raw = json.dumps(BODY).encode()
        resp = api.client.post(
            "/v1/events/corebank",
            content=raw.replace(b"ACC-1001", b"ACC-2002"),
            headers=signed_headers(WEBHOOK_SECRET, "dispute", raw),
        )
    assert resp.status_code == 401
    # one answer whatever the reason; the reason is only in the metric
    assert resp.json()["error"]["code"] == "bad_signature"
    assert "detail" not in resp.json()["error"] or not resp.json()["error"]["detail"]
    assert api.engine.list_runs() == []
    metrics = api.engine.registry.render()
    assert f'aivos_workflow_webhooks_refused_total{{reason="{reason}"}} 1' in metrics


def test_replayed_and_redelivered_events_start_no_second_run(api: Api) -> None:
    raw = json.dumps(BODY).encode()
    headers = signed_headers(WEBHOOK_SECRET, "dispute", raw)
    first = api.client.post("/v1/events/corebank", content=raw, headers=headers)
    replay = api.client.post("/v1/events/corebank", content=raw, headers=headers)
    assert (first.status_code, replay.status_code) == (202, 401)
    # a redelivery (new timestamp and signature, same delivery id) is a replay too
    stamp = int(time.time()) - 1
    again = {
        **headers,
        "X-Aivos-Timestamp": str(stamp),
        "X-Aivos-Signature": sign(
            WEBHOOK_SECRET,
            timestamp=stamp,
            delivery_id=headers["X-Aivos-Delivery"],
            event="dispute",
            body=raw,
        ),
    }
    assert api.client.post("/v1/events/corebank", content=raw, headers=again).status_code == 401
    assert len(api.engine.list_runs()) == 1


def test_unknown_source_and_unknown_run(api: Api) -> None:
    resp = api.event(BODY, secret="x")
    assert resp.status_code == 401
    other = api.client.post(
        "/v1/events/nosuch", content=b"{}", headers=signed_headers("x", "dispute", b"{}")
    )
    assert other.status_code == 401
    assert other.json() == resp.json()  # sources cannot be told apart
    missing = api.client.get("/v1/runs/NOPE", headers=api.auth("client"))
    assert missing.status_code == 404
    unauth = api.client.get("/v1/runs")
    assert unauth.status_code == 401


def test_cancel_and_retry_endpoints(api: Api) -> None:
    run_id = (api.event(BODY)).json()["runs"][0]["run_id"]
    api.wait(run_id, "waiting_approval")
    assert (
        api.client.post(f"/v1/runs/{run_id}/cancel", headers=api.auth("client"))
    ).status_code == 403
    cancelled = api.client.post(f"/v1/runs/{run_id}/cancel", headers=api.auth("operator"))
    assert cancelled.json()["state"] == "cancelled"
    retried = api.client.post(f"/v1/runs/{run_id}/retry", headers=api.auth("operator"))
    assert retried.status_code == 202
    assert api.wait(run_id, "waiting_approval")["run"]["state"] == "waiting_approval"
    rejected = api.client.post(f"/v1/runs/{run_id}/reject", headers=api.auth("operator"))
    assert rejected.status_code == 200
    assert api.wait(run_id, "rejected")["run"]["state"] == "rejected"
