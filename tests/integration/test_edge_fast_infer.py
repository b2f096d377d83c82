"""The lean `POST /v1/infer` path (edge/api/fast_infer.py) answers exactly as Litestar does.

A real agent (bundle, SQLite, usearch) behind Litestar's test client. Every request is sent
twice, once with the lean path on and once with it off (Litestar's own route), and the two
answers are compared: status, headers and body (for a 200, every field but the request id
and latency). A spy on Litestar's handler shows which path served each request.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from litestar.types import Receive, Scope, Send

from aivos.edge.api.app import create_app
from aivos.edge.api.fast_infer import FastInfer
from aivos.edge.api.schemas import MAX_METADATA_DEPTH
from tests.fixtures.edge import EdgeHarness, issue_token, make_edge_settings

_VARYING = {"request_id", "latency_ms"}


class _Fixture:
    def __init__(self, harness: EdgeHarness, fast: FastInfer) -> None:
        self.h = harness
        self.fast = fast
        self.litestar_calls = 0
        inner = fast.inner

        async def spy(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == "/v1/infer":
                self.litestar_calls += 1
            await inner(scope, receive, send)

        fast.inner = spy

    def both(self, send: Callable[[], Any]) -> tuple[Any, Any, bool]:
        """(lean answer, Litestar's answer, whether the lean path served it itself)."""
        self.fast.enabled = True
        before = self.litestar_calls
        lean = send()
        served = self.litestar_calls == before
        self.fast.enabled = False
        try:
            plain = send()
        finally:
            self.fast.enabled = True
        return lean, plain, served


def _make(tmp_path: Path, bundle: Path, **limits: Any) -> Iterator[_Fixture]:
    data_dir = tmp_path / "edge"
    tokens = {s: issue_token(data_dir, s, f"t-{s}") for s in ("client", "admin")}
    app = create_app(make_edge_settings(data_dir, bundle, **limits))
    fast = app.asgi_handler
    assert isinstance(fast, FastInfer)
    with TestClient(app) as client:
        yield _Fixture(EdgeHarness(client, data_dir, tokens), fast)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory, small_bundle: Path) -> Iterator[_Fixture]:
    # one agent for the module's comparisons: starting one costs seconds
    yield from _make(tmp_path_factory.mktemp("fast"), small_bundle)


def _headers(resp: Any) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in resp.headers.items() if k.lower() != "content-length")


def _audited(h: EdgeHarness, request_id: str) -> tuple[Any, ...] | None:
    with sqlite3.connect(h.data_dir / "aivos.db") as conn:
        row: tuple[Any, ...] | None = conn.execute(
            "SELECT intent, decision, model_version FROM audit WHERE id = ?", (request_id,)
        ).fetchone()
    return row


@pytest.mark.parametrize(
    "text",
    ["what is the balance in my checking account", "how many moons does jupiter have in total"],
)
def test_a_plain_request_is_served_lean_with_litestars_answer(paths: _Fixture, text: str) -> None:
    h = paths.h
    lean, plain, served = paths.both(lambda: h.post("/v1/infer", json={"text": text}))
    assert served  # the lean path answered without Litestar's route
    assert lean.status_code == plain.status_code == 200, lean.text
    assert _headers(lean) == _headers(plain)
    assert lean.headers["content-length"] == str(len(lean.content))
    a, b = lean.json(), plain.json()
    assert a.keys() == b.keys()
    if a["job_id"]:  # an escalation: each request makes its own job
        for body in (a, b):
            body["answer"] = body["answer"].replace(body["job_id"], "JOB")
            body["job_id"] = "JOB"
    assert {k: v for k, v in a.items() if k not in _VARYING} == {
        k: v for k, v in b.items() if k not in _VARYING
    }
    assert a["request_id"] != b["request_id"]
    # audited like any request, before the answer
    assert _audited(h, a["request_id"]) == (a["intent"], a["decision"], a["model_version"])
    assert _audited(h, b["request_id"]) == (b["intent"], b["decision"], b["model_version"])


def test_an_admin_token_and_a_json_charset_are_plain_requests(paths: _Fixture) -> None:
    h = paths.h
    lean, plain, served = paths.both(
        lambda: h.client.post(
            "/v1/infer",
            content=b'{"text": "freeze my card"}',
            headers={**h.headers("admin"), "content-type": "application/json; charset=utf-8"},
        )
    )
    assert served
    assert lean.status_code == plain.status_code == 200
    assert lean.json()["intent"] == plain.json()["intent"]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"k": value}
    return value


_BIG = "x" * (70 * 1024)  # over limits.max_body_bytes (64 KiB)


@pytest.mark.parametrize(
    ("body", "headers", "lean_serves"),
    [
        # failures inside the pipeline: rendered by the app's exception handlers
        ({"text": "   "}, {}, True),
        ({"text": "card " * 5000}, {}, True),
        # everything below goes to Litestar untouched
        ({"txt": "hi"}, {}, False),
        ({}, {}, False),
        ({"text": 5}, {}, False),
        ({"text": "hi", "metadata": _nested(MAX_METADATA_DEPTH + 2)}, {}, False),
        ({"text": "hi", "session_id": "not a valid id"}, {}, False),
        (b"{not json", {}, False),
        (b"", {}, False),
        (_BIG.encode(), {}, False),
        ({"text": "hi"}, {"authorization": "Bearer nope"}, False),
        ({"text": "hi"}, {"authorization": "Basic abc"}, False),
        ({"text": "hi"}, {"authorization": ""}, False),
        ({"text": "hi"}, {"content-type": "text/plain"}, False),
        ({"text": "hi"}, {"accept": "text/event-stream"}, False),
        ({"text": "hi", "stream": True}, {}, False),
    ],
)
def test_every_other_answer_is_litestars(
    paths: _Fixture, body: Any, headers: dict[str, str], lean_serves: bool
) -> None:
    h = paths.h
    sent = {**h.headers("client"), "content-type": "application/json", **headers}
    content = body if isinstance(body, bytes) else None
    json_body = None if isinstance(body, bytes) else body

    def send() -> Any:
        return h.client.post("/v1/infer", content=content, json=json_body, headers=sent)

    lean, plain, served = paths.both(send)
    assert served is lean_serves
    assert lean.status_code == plain.status_code
    assert _headers(lean) == _headers(plain)
    if lean.headers.get("content-type", "").startswith("text/event-stream"):
        assert lean.status_code == 200
        assert "event: meta" in lean.text and "event: meta" in plain.text
    elif lean.status_code == 200:  # a JSON body under another content type: Litestar takes it
        assert lean.json()["intent"] == plain.json()["intent"]
    else:
        assert lean.json() == plain.json()


def test_other_routes_and_methods_are_litestars(paths: _Fixture) -> None:
    h = paths.h
    before = paths.litestar_calls
    resp = h.get("/v1/infer")
    assert resp.status_code == 405
    assert paths.litestar_calls == before + 1
    assert h.get("/healthz").json() == {"status": "ok"}


@pytest.fixture
def limited(tmp_path: Path, small_bundle: Path) -> Iterator[_Fixture]:
    # one request per token, no refill during the test
    yield from _make(
        tmp_path, small_bundle, **{"limits.rate_per_second": 0.001, "limits.rate_burst": 1}
    )


def test_the_token_rate_limit_is_charged_once_and_answers_like_litestar(
    limited: _Fixture,
) -> None:
    h = limited.h
    limiter = h.client.app.state.rate_limiter
    first = h.post("/v1/infer", json={"text": "freeze my card"})
    assert first.status_code == 200
    assert limiter.rejected == 0
    lean, plain, served = limited.both(lambda: h.post("/v1/infer", json={"text": "hi"}))
    assert served
    assert lean.status_code == plain.status_code == 429
    a, b = lean.json()["error"], plain.json()["error"]
    assert a["code"] == b["code"] == "rate_limited"
    assert a["message"] == b["message"]
    assert a["detail"].keys() == b["detail"].keys() == {"retry_after_s"}
    assert lean.headers["retry-after"] == plain.headers["retry-after"]
    assert _headers(lean) == _headers(plain)
    assert limiter.rejected == 2  # one each: the lean path charged the bucket once


def test_announced_lengths_and_repeated_headers_go_to_litestar(paths: _Fixture) -> None:
    """Litestar refuses an unparsable or too large announced `content-length` before it reads
    the body; the lean path hands such requests (and repeated headers) over untouched."""
    h = paths.h
    body = b'{"text": "freeze my card"}'
    auth = (b"authorization", f"Bearer {h.tokens['client']}".encode())

    def admitted(*headers: tuple[bytes, bytes]) -> bool:
        scope: Any = {"type": "http", "method": "POST", "path": "/v1/infer", "headers": headers}
        return paths.fast._admit(scope, body) is not None

    assert admitted(auth, (b"content-length", str(len(body)).encode()))
    assert admitted(auth)  # no announced length: the bytes received are checked
    assert not admitted(auth, (b"content-length", b"12x"))
    assert not admitted(auth, (b"content-length", str(70 * 1024).encode()))
    assert not admitted(auth, (b"content-length", b"26"), (b"content-length", b"26"))
    assert not admitted(auth, auth)
    assert not admitted((b"authorization", b"Bearer aivos_unknown"))
