"""shared.tracing: modes, W3C propagation through NATS-style headers, span trees."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aivos.shared.tracing import (
    current_trace_id,
    extract_context,
    inject_headers,
    setup_tracing,
    shutdown_tracing,
    tracer,
    tracing_enabled,
)

_t = tracer(__name__)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    setup_tracing("test", exporter=exp)
    yield exp
    shutdown_tracing()


def test_default_mode_records_nothing_but_has_trace_ids() -> None:
    shutdown_tracing()
    assert not tracing_enabled()
    assert current_trace_id() is None
    with _t.start_as_current_span("edge.http.infer") as span:
        trace_id = current_trace_id()
        assert trace_id is not None and len(trace_id) == 32 and int(trace_id, 16) != 0
        assert not span.is_recording()
        headers = inject_headers({})
    assert headers["traceparent"].split("-")[1] == trace_id
    assert int(headers["traceparent"][-2:], 16) & 1 == 0  # not sampled: peers do not record


def test_span_tree_across_a_header_hop(exporter: InMemorySpanExporter) -> None:
    assert tracing_enabled()
    with _t.start_as_current_span("edge.http.infer"):
        with _t.start_as_current_span("edge.router"):
            pass
        with (
            _t.start_as_current_span("edge.escalate"),
            _t.start_as_current_span("nats.request"),
        ):
            headers = inject_headers({"Nats-Msg-Id": "x"})
        root_trace = current_trace_id()
    # the other side of the hop (worker): a fresh context, only the headers
    with _t.start_as_current_span("worker.generate", context=extract_context(headers)):
        assert current_trace_id() == root_trace
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        "edge.http.infer",
        "edge.router",
        "edge.escalate",
        "nats.request",
        "worker.generate",
    }

    def parent(name: str) -> str | None:
        p = spans[name].parent
        return next((n for n, s in spans.items() if p and s.context.span_id == p.span_id), None)

    assert parent("edge.http.infer") is None
    assert parent("edge.router") == "edge.http.infer"
    assert parent("edge.escalate") == "edge.http.infer"
    assert parent("nats.request") == "edge.escalate"
    assert parent("worker.generate") == "nats.request"
    assert spans["worker.generate"].parent.is_remote  # type: ignore[union-attr]
    assert {format(s.context.trace_id, "032x") for s in spans.values()} == {root_trace}


def test_extract_without_headers_starts_a_new_trace(exporter: InMemorySpanExporter) -> None:
    with _t.start_as_current_span("worker.generate", context=extract_context(None)):
        pass
    with _t.start_as_current_span("worker.generate", context=extract_context({"x": "y"})):
        pass
    a, b = exporter.get_finished_spans()
    assert a.parent is None and b.parent is None
    assert a.context.trace_id != b.context.trace_id


def test_headers_are_case_insensitive(exporter: InMemorySpanExporter) -> None:
    with _t.start_as_current_span("a"):
        headers = {k.upper(): v for k, v in inject_headers({}).items()}
        trace_id = current_trace_id()
    with _t.start_as_current_span("b", context=extract_context(headers)):
        assert current_trace_id() == trace_id


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_otlp_endpoint_exports_over_http() -> None:
    """A stand-in OTLP/HTTP collector (the true external seam) receives the spans."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        setup_tracing("aivos-edge", otlp_endpoint=endpoint)
        assert tracing_enabled()
        with _t.start_as_current_span("edge.http.infer") as span:
            assert span.is_recording()
            trace_id = current_trace_id()
        shutdown_tracing()  # flushes the batch processor
    finally:
        server.shutdown()
    assert not tracing_enabled()
    path, content_type, body = _Collector.received[-1]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert b"edge.http.infer" in body and b"aivos-edge" in body
    assert trace_id is not None and bytes.fromhex(trace_id) in body
