"""Decisions that get better, over the real agent: `POST /v1/feedback` re-ranks passages (a
vote stores the rated query's embedding), repeated queries are served from the result cache
(and still audited), and a local route the site cannot answer escalates once a generator is
configured."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient

from aivos.edge.api.app import create_app
from aivos.edge.intent.runtime import IntentModel
from tests.fixtures.edge import DOCS, EdgeHarness, issue_token, make_edge_settings

QUESTION = "how much does an international transfer cost"


def _harness(tmp_path: Path, bundle: Path, **overrides: Any) -> Iterator[EdgeHarness]:
    data_dir = tmp_path / "edge"
    tokens = {s: issue_token(data_dir, s, f"t-{s}") for s in ("client", "operator", "admin")}
    settings = make_edge_settings(data_dir, bundle, **overrides)
    with TestClient(create_app(settings)) as client:
        harness = EdgeHarness(client, data_dir, tokens)
        for path in sorted(DOCS.iterdir()):
            added = harness.post(
                "/v1/knowledge",
                scope="operator",
                json={"source": path.name, "text": path.read_text(encoding="utf-8")},
            )
            assert added.status_code == 201, added.text
        yield harness


@pytest.fixture
def kb_harness(tmp_path: Path, small_bundle: Path) -> Iterator[EdgeHarness]:
    # a large weight, so that one vote visibly reorders the passages of this small index
    yield from _harness(tmp_path, small_bundle, **{"knowledge.feedback_weight": 1.0})


def _vote(h: EdgeHarness, request_id: str, helpful: bool, passage: dict[str, Any]) -> Any:
    """`POST /v1/feedback` about one of the request's passages."""
    body = {"doc_id": passage["doc_id"], "chunk_id": passage["chunk_id"]}
    return h.post("/v1/feedback", json={"request_id": request_id, "helpful": helpful, **body})


def _audited(h: EdgeHarness, request_id: str) -> bool:
    with sqlite3.connect(h.data_dir / "aivos.db") as conn:
        row = conn.execute("SELECT 1 FROM audit WHERE id = ?", (request_id,)).fetchone()
    return row is not None


def test_a_not_helpful_vote_moves_the_passage_down_for_that_intent(kb_harness: EdgeHarness) -> None:
    first = kb_harness.post("/v1/infer", json={"text": QUESTION}).json()
    assert len(first["passages"]) >= 2
    top = first["passages"][0]
    voted = _vote(kb_harness, first["request_id"], False, top)
    assert voted.status_code == 201, voted.text
    body = voted.json()
    assert (body["intent"], body["votes_up"], body["votes_down"]) == (first["intent"], 0, 1)

    again = kb_harness.post("/v1/infer", json={"text": QUESTION}).json()
    assert again["intent"] == first["intent"]
    keys = [(p["doc_id"], p["chunk_id"]) for p in again["passages"]]
    assert keys[0] != (top["doc_id"], top["chunk_id"])
    # the passage's own score is still the index's
    scores = {(p["doc_id"], p["chunk_id"]): p["score"] for p in again["passages"]}
    assert scores.get((top["doc_id"], top["chunk_id"]), top["score"]) == top["score"]

    # a second vote on the same request replaces the first
    helpful = _vote(kb_harness, first["request_id"], True, top).json()
    assert (helpful["votes_up"], helpful["votes_down"]) == (1, 0)
    restored = kb_harness.post("/v1/infer", json={"text": QUESTION}).json()
    assert (restored["passages"][0]["doc_id"], restored["passages"][0]["chunk_id"]) == (
        top["doc_id"],
        top["chunk_id"],
    )


def test_a_vote_reorders_the_same_question_typed_again_with_a_slip(
    kb_harness: EdgeHarness,
) -> None:
    # another customer asks the rated question again, with a typo (not the cached string)
    retyped = QUESTION.replace("international", "internatinal")
    before = kb_harness.post("/v1/infer", json={"text": retyped}).json()
    first = kb_harness.post("/v1/infer", json={"text": QUESTION}).json()
    top = first["passages"][0]
    assert (before["passages"][0]["doc_id"], before["passages"][0]["chunk_id"]) == (
        top["doc_id"],
        top["chunk_id"],
    )
    assert _vote(kb_harness, first["request_id"], False, top).status_code == 201

    again = kb_harness.post("/v1/infer", json={"text": retyped}).json()
    assert again["request_id"] != before["request_id"]
    keys = [(p["doc_id"], p["chunk_id"]) for p in again["passages"]]
    assert keys[0] != (top["doc_id"], top["chunk_id"])


def test_a_vote_on_a_served_request_stores_its_query_embedding(
    kb_harness: EdgeHarness, small_bundle: Path
) -> None:
    served = kb_harness.post("/v1/infer", json={"text": QUESTION}).json()
    top = served["passages"][0]
    voted = _vote(kb_harness, served["request_id"], True, top)
    assert voted.status_code == 201, voted.text
    assert set(voted.json()) == {
        "request_id",
        "intent",
        "helpful",
        "doc_id",
        "chunk_id",
        "votes_up",
        "votes_down",
    }
    with sqlite3.connect(kb_harness.data_dir / "aivos.db") as conn:
        blob, version = conn.execute(
            "SELECT embedding, embedding_version FROM passage_feedback WHERE request_id = ?",
            (served["request_id"],),
        ).fetchone()
    model = IntentModel.load(small_bundle)
    assert version == model.embedding_version
    stored = np.frombuffer(blob, dtype=np.float16).astype(np.float32)
    assert stored.shape == (model.embedding_dim,)
    # the query's own (L2-normalised) embedding, to float16 precision
    assert float(stored @ model.classify(QUESTION).embedding) == pytest.approx(1.0, abs=1e-2)


def test_feedback_is_validated(kb_harness: EdgeHarness) -> None:
    unknown = kb_harness.post("/v1/feedback", json={"request_id": "nope", "helpful": True})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "request_not_found"
    answered = kb_harness.post("/v1/infer", json={"text": QUESTION}).json()
    half = kb_harness.post(
        "/v1/feedback",
        json={"request_id": answered["request_id"], "helpful": True, "doc_id": "d1"},
    )
    assert half.status_code == 400
    assert half.json()["error"]["code"] == "invalid_passage_ref"
    extra = kb_harness.post(
        "/v1/feedback", json={"request_id": answered["request_id"], "helpful": 1, "why": "x"}
    )
    assert extra.status_code == 400
    anonymous = kb_harness.client.post(
        "/v1/feedback", json={"request_id": answered["request_id"], "helpful": True}
    )
    assert anonymous.status_code == 401
    plain = kb_harness.post(
        "/v1/feedback", json={"request_id": answered["request_id"], "helpful": True}
    )
    assert plain.status_code == 201
    assert plain.json()["doc_id"] is None


def test_a_repeated_query_is_a_cache_hit_and_still_audited(kb_harness: EdgeHarness) -> None:
    one = kb_harness.post("/v1/infer", json={"text": QUESTION}).json()
    two = kb_harness.post(
        "/v1/infer", json={"text": "  How much does an INTERNATIONAL transfer cost"}
    )
    two_body = two.json()
    assert two.status_code == 200
    assert one["request_id"] != two_body["request_id"]
    assert (two_body["intent"], two_body["passages"]) == (one["intent"], one["passages"])
    assert _audited(kb_harness, one["request_id"]) and _audited(kb_harness, two_body["request_id"])
    metrics = kb_harness.get("/metrics", scope="operator").text
    assert "aivos_edge_cache_hits_total 1" in metrics
    # a session request is not cached unless the router policy says so
    kb_harness.post("/v1/infer", json={"text": QUESTION, "session_id": "s1"})
    metrics = kb_harness.get("/metrics", scope="operator").text
    assert "aivos_edge_cache_hits_total 1" in metrics


@pytest.fixture
def linked_harness(tmp_path: Path, small_bundle: Path) -> Iterator[EdgeHarness]:
    """A generator is configured (the site's leaf node) but the link is down."""
    yield from _harness(tmp_path, small_bundle, **{"uplink.nats_url": "nats://127.0.0.1:9"})


def test_with_a_generator_configured_unanswerable_and_open_ended_requests_escalate(
    linked_harness: EdgeHarness,
) -> None:
    # in scope, but nothing in the knowledge base answers it: no "no document" reply
    balance = linked_harness.post(
        "/v1/infer", json={"text": "what is the balance in my checking account"}
    ).json()
    assert balance["intent"] == "balance"
    assert (balance["decision"], balance["answered_by"]) == ("escalate", "fallback")
    assert "no document" not in balance["answer"]
    assert balance["job_id"] and balance["job_id"] in balance["answer"]
    job = linked_harness.get(f"/v1/jobs/{balance['job_id']}").json()
    assert job["status"] == "waiting_for_uplink"
    # answerable from the site's documents: stays local, cites the passage
    fees = linked_harness.post("/v1/infer", json={"text": "how do I transfer money abroad"}).json()
    assert (fees["intent"], fees["decision"], fees["answered_by"]) == ("transfer", "local", "local")
    assert fees["answer"].startswith(fees["passages"][0]["text"])
    # out of the bundle's scope, but the site's documents answer it
    hours = linked_harness.post("/v1/infer", json={"text": "what are your opening hours"}).json()
    assert (hours["decision"], hours["answered_by"]) == ("local", "local")
    assert "9:00" in hours["answer"]
    # creative, whatever the intent: escalates
    poem = linked_harness.post(
        "/v1/infer", json={"text": "write me a poem about the weather tomorrow"}
    ).json()
    assert (poem["decision"], poem["answered_by"]) == ("escalate", "fallback")
