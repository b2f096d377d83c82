"""Issue 12, reproductions 1 and 6: webhooks under attack.

A signature covers the event name and the delivery id (a body signed for one event cannot
start another), the replay cache survives a restart, every refusal answers the same 401,
a non-ASCII signature header is a 401 (not a 500), and refused requests are counted and
rolled up (an unauthenticated flood cannot fill the outbox).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.testing import TestClient

from aivos.edge.api.controllers.events import EventsController
from aivos.edge.api.errors import exception_handlers
from aivos.edge.store import Store
from aivos.edge.workflows import WorkflowEngine, WorkflowSettings
from aivos.edge.workflows.secrets import Secrets, WebhookSecret
from aivos.edge.workflows.signatures import signed_headers

SECRET = "whsec-hostile"
WORKFLOW = """
name = "dispute_event"
[trigger]
events = ["corebank.dispute"]

[[steps]]
id = "answer"
kind = "respond"
template = "dispute for {inputs.account_id}"
"""
BODY = json.dumps({"account_id": "ACC-1001"}).encode()
REFUSED = {"error": {"code": "bad_signature", "message": "the event is not correctly signed"}}


class Edge:
    def __init__(self, client: TestClient[Any], engine: WorkflowEngine, store: Store) -> None:
        self.client, self.engine, self.store = client, engine, store

    def post(self, headers: dict[str, Any], body: bytes = BODY, source: str = "corebank") -> Any:
        return self.client.post(f"/v1/events/{source}", content=body, headers=headers)

    def refused_json(self, resp: Any) -> Any:
        assert resp.status_code == 401, resp.text
        body = resp.json()
        body["error"].pop("detail", None)
        return body


@contextmanager
def edge(tmp_path: Path, *, quota: int = 100_000) -> Iterator[Edge]:
    (tmp_path / "wf.toml").write_text(WORKFLOW)
    settings = WorkflowSettings(files=[str(tmp_path / "wf.toml")])
    secrets = Secrets(webhooks={"corebank": WebhookSecret(secret=SECRET)})
    store = Store.open(tmp_path / "edge", outbox_quota=quota)
    engine = WorkflowEngine(store, settings, secrets=secrets)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = Litestar(
        route_handlers=[EventsController],
        dependencies={"workflows": Provide(lambda: engine, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
    )
    try:
        with TestClient(app) as client:
            yield Edge(client, engine, store)
    finally:
        store.close()


def test_the_event_name_is_signed(tmp_path: Path) -> None:
    with edge(tmp_path) as e:
        viewed = signed_headers(SECRET, "statement.viewed", BODY)
        resp = e.post({**viewed, "X-Aivos-Event": "dispute"})
        assert e.refused_json(resp) == REFUSED
        assert e.engine.list_runs() == []
        ok = e.post(signed_headers(SECRET, "dispute", BODY))
        assert ok.status_code == 202, ok.text
        assert ok.json()["event"] == "corebank.dispute"
        assert len(e.engine.list_runs()) == 1


def test_a_captured_request_is_refused_after_a_restart(tmp_path: Path) -> None:
    captured = signed_headers(SECRET, "dispute", BODY)
    with edge(tmp_path) as e:
        assert e.post(captured).status_code == 202
    with edge(tmp_path) as e:
        assert e.refused_json(e.post(captured)) == REFUSED
        assert len(e.engine.list_runs()) == 1
        # the cache is keyed by delivery id: a new delivery of the same body is accepted
        assert e.post(signed_headers(SECRET, "dispute", BODY)).status_code == 202


def test_every_refusal_answers_the_same(tmp_path: Path) -> None:
    with edge(tmp_path) as e:
        good = signed_headers(SECRET, "dispute", BODY)
        assert e.post(good).status_code == 202
        attempts = {
            "unknown_source": e.post(signed_headers(SECRET, "dispute", BODY), source="payroll"),
            "bad_source_name": e.post(signed_headers(SECRET, "dispute", BODY), source="a.b"),
            "unsigned": e.post({}),
            "wrong_secret": e.post(signed_headers("guess", "dispute", BODY)),
            "stale": e.post(signed_headers(SECRET, "dispute", BODY, timestamp=1_000_000)),
            "replayed": e.post(good),
            "tampered": e.post(good, body=BODY.replace(b"1001", b"2002")),
        }
        for name, resp in attempts.items():
            assert e.refused_json(resp) == REFUSED, name
        metrics = e.engine.registry.render()
        for reason in ("unknown_source", "unsigned", "bad_signature", "stale_timestamp"):
            assert f'webhooks_refused_total{{reason="{reason}"}}' in metrics


def test_a_non_ascii_signature_header_is_a_401_not_a_500(tmp_path: Path) -> None:
    with edge(tmp_path) as e:
        headers: dict[str, Any] = signed_headers(SECRET, "dispute", BODY)
        headers["X-Aivos-Signature"] = ("v1=" + "é" * 64).encode()
        assert e.refused_json(e.post(headers)) == REFUSED
        headers["X-Aivos-Signature"] = signed_headers(SECRET, "dispute", BODY)["X-Aivos-Signature"]
        headers["X-Aivos-Delivery"] = "dé".encode()
        assert e.refused_json(e.post(headers)) == REFUSED
        assert e.engine.list_runs() == []


def test_an_unauthenticated_flood_cannot_fill_the_outbox(tmp_path: Path) -> None:
    with edge(tmp_path, quota=30) as e:
        for i in range(120):
            resp = e.post({"X-Aivos-Event": "dispute"}, source="corebank" if i % 2 else f"s{i}")
            assert resp.status_code == 401
        # nothing was written per refused request
        assert e.store.outbox_depth() == 0
        assert e.store.audit_count() == 0
        # a signed event still gets through (before: 507 quota_exceeded)
        assert e.post(signed_headers(SECRET, "dispute", BODY)).status_code == 202
    # the refusals are rolled up into one audit row (written at the latest on stop)
    rows = [r for r in store_rows(tmp_path) if r["kind"] == "auth_failure"]
    assert len(rows) == 1
    detail = json.loads(rows[0]["detail"])
    assert detail["count"] == 120
    assert detail["by_reason"] == {"unknown_source": 60, "unsigned": 60}
    assert detail["by_source"] == {"corebank": 60, "unknown": 60}  # no attacker strings


def store_rows(tmp_path: Path) -> list[Any]:
    with Store.open(tmp_path / "edge") as store:
        conn = store.readers.get()
        return [dict(r) for r in conn.execute("SELECT kind, detail FROM audit ORDER BY seq")]
