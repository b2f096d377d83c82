"""The edge agent's HTTP API over a real bundle, SQLite store and usearch index."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from tests.fixtures.edge import EdgeHarness
from tests.fixtures.wait import eventually_sync

FAQ = """# Lost or stolen card

If your card is lost or stolen, freeze it at once in the app or call the branch.
A replacement card arrives within five working days.

# Opening hours

The branch is open Monday to Friday from 9:00 to 17:00 and on Saturday from 9:00 to 12:00.
"""


def _audit_count(h: EdgeHarness) -> int:
    with sqlite3.connect(h.data_dir / "aivos.db") as conn:
        return int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])


def test_open_routes_need_no_token(edge_harness: EdgeHarness) -> None:
    c = edge_harness.client
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["provider"] == "CPUExecutionProvider"
    assert c.get("/schema/openapi.json").status_code == 200


def test_infer_in_scope_is_answered_locally_and_audited(edge_harness: EdgeHarness) -> None:
    resp = edge_harness.post(
        "/v1/infer", json={"text": "what is the balance in my checking account"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["intent"] == "balance"
    assert body["decision"] == "local"
    assert body["answer"]
    assert body["model_version"]
    assert body["latency_ms"] > 0
    with sqlite3.connect(edge_harness.data_dir / "aivos.db") as conn:
        row = conn.execute(
            "SELECT intent, decision, model_version FROM audit WHERE id = ?", (body["request_id"],)
        ).fetchone()
    assert row == ("balance", "local", body["model_version"])


def test_out_of_scope_escalates_to_a_durable_job(edge_harness: EdgeHarness) -> None:
    resp = edge_harness.post("/v1/infer", json={"text": "how tall is mount everest"})
    body = resp.json()
    assert body["decision"] == "escalate"
    assert body["answered_by"] == "fallback"
    assert body["job_id"] and body["job_id"] in body["answer"]
    job = edge_harness.get(f"/v1/jobs/{body['job_id']}").json()
    assert job["status"] == "waiting_for_uplink"


def test_knowledge_ingest_search_and_delete(edge_harness: EdgeHarness) -> None:
    created = edge_harness.post(
        "/v1/knowledge", scope="operator", json={"source": "faq.md", "text": FAQ}
    )
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["n_chunks"] >= 1
    found = edge_harness.get("/v1/knowledge/search", params={"q": "my card was stolen"}).json()
    assert found["passages"][0]["source"] == "faq.md"
    assert "stolen" in found["passages"][0]["text"]
    assert (
        edge_harness.client.delete(
            f"/v1/knowledge/{doc['doc_id']}", headers=edge_harness.headers("operator")
        ).status_code
        == 204
    )
    assert (
        edge_harness.get("/v1/knowledge/search", params={"q": "my card was stolen"}).json()[
            "passages"
        ]
        == []
    )


def test_knowledge_writes_need_operator_scope(edge_harness: EdgeHarness) -> None:
    resp = edge_harness.post("/v1/knowledge", scope="client", json={"source": "x.md", "text": FAQ})
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "forbidden"


def test_session_memory_turns_and_facts(edge_harness: EdgeHarness) -> None:
    edge_harness.post("/v1/infer", json={"text": "what's my account balance", "session_id": "s1"})
    put = edge_harness.client.put(
        "/v1/sessions/s1/facts/preferred_branch",
        json={"value": "Main St"},
        headers=edge_harness.headers(),
    )
    assert put.status_code == 200, put.text
    session = edge_harness.get("/v1/sessions/s1").json()
    assert [t["role"] for t in session["turns"]] == ["user", "assistant"]
    assert session["facts"][0]["value"] == "Main St"
    assert edge_harness.get("/v1/sessions/s1/facts/preferred_branch").json()["value"] == "Main St"
    assert (
        edge_harness.client.delete(
            "/v1/sessions/s1/facts/preferred_branch", headers=edge_harness.headers()
        ).status_code
        == 204
    )
    assert edge_harness.get("/v1/sessions/s1/facts/preferred_branch").status_code == 404


def test_async_job_completes(edge_harness: EdgeHarness) -> None:
    resp = edge_harness.post("/v1/jobs", json={"text": "set an alarm for 7 am"})
    assert resp.status_code == 202
    job_id = resp.json()["job_id"]

    def dequeued() -> dict[str, Any] | None:
        job: dict[str, Any] = edge_harness.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] != "queued" else None

    job = eventually_sync(dequeued, timeout=30, what="the job to leave the queue")
    assert job["status"] == "done"
    assert job["result"]["intent"] == "alarm"


def test_callback_host_must_be_loopback_or_allowed(edge_harness: EdgeHarness) -> None:
    resp = edge_harness.post(
        "/v1/jobs", json={"text": "set an alarm", "callback_url": "http://evil.example.com/hook"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "callback_host_not_allowed"


def test_metrics_need_a_token_and_expose_series(edge_harness: EdgeHarness) -> None:
    assert edge_harness.client.get("/metrics").status_code == 401
    edge_harness.post("/v1/infer", json={"text": "what is my balance"})
    text = edge_harness.get("/metrics").text
    for series in (
        "aivos_requests_total",
        "aivos_request_latency_seconds_bucket",
        "aivos_batch_size_bucket",
        "aivos_cpu_percent",
    ):
        assert series in text


BAD_REQUESTS = [
    (
        "malformed json",
        {"content": b'{"text": "hi"', "headers": {"content-type": "application/json"}},
        400,
    ),
    ("wrong type", {"json": {"text": 42}}, 400),
    ("unknown field", {"json": {"text": "hello", "nope": 1}}, 400),
    ("missing text", {"json": {}}, 400),
    (
        "invalid utf-8",
        {"content": b'{"text": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
        400,
    ),
    ("empty text", {"json": {"text": "   "}}, 400),
    ("text too long", {"json": {"text": "a" * 5000}}, 413),
    ("body too large", {"json": {"text": "a" * 70_000}}, 413),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "status"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_gets_structured_error_and_writes_nothing(
    edge_harness: EdgeHarness, name: str, kwargs: dict, status: int
) -> None:
    before = _audit_count(edge_harness)
    headers = {**kwargs.pop("headers", {}), **edge_harness.headers()}
    resp = edge_harness.client.post("/v1/infer", headers=headers, **kwargs)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] and error["message"]
    assert "Traceback" not in resp.text
    assert _audit_count(edge_harness) == before


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"Authorization": "Basic abc"}, 401)],
)
def test_auth_failures_are_rejected(edge_harness: EdgeHarness, headers: dict, status: int) -> None:
    before = _audit_count(edge_harness)
    resp = edge_harness.client.post(
        "/v1/infer", json={"text": "what is my balance"}, headers=headers
    )
    assert resp.status_code == status
    assert resp.json()["error"]["code"] == "unauthorized"
    assert _audit_count(edge_harness) == before


def test_unknown_job_is_404(edge_harness: EdgeHarness) -> None:
    resp = edge_harness.get("/v1/jobs/does-not-exist")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "job_not_found"
