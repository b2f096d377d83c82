"""Tracing overhead on the edge's local path: p50/p99 of `POST /v1/infer` (answered locally)
with tracing in its default mode (ids only, nothing recorded) and with an OTLP exporter
configured (spans recorded, batched and sent over HTTP to a stand-in collector).

Run:  python benchmarks/tracing_overhead.py --bundle DIR [--n 400] [--out FILE]

The real agent (bundle, SQLite store, usearch index) runs in process behind Litestar's test
client; the two modes alternate in blocks so drift on a shared machine hits both. Also
reported: spans exported per request (so the number says what was traced), and the raw
cost of one span in each mode.

Results go to benchmarks/results/tracing_overhead.json.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from litestar.testing import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.edge.api.app import create_app  # noqa: E402
from aivos.edge.settings import load_edge_settings  # noqa: E402
from aivos.edge.store import Store  # noqa: E402
from aivos.shared.paths import default_bundle_dir  # noqa: E402
from aivos.shared.tracing import setup_tracing, shutdown_tracing, tracer  # noqa: E402

QUERIES = [
    "what is the balance in my checking account",
    "how much money do i have in savings",
    "what's my account balance",
    "tell me my current balance please",
]


class _Collector(http.server.BaseHTTPRequestHandler):
    posts = 0
    spans = 0

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts += 1
        request = ExportTraceServiceRequest.FromString(body)
        type(self).spans += sum(
            len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def span_cost_us(n: int = 2_000) -> float:
    t = tracer("bench")
    start = time.perf_counter()
    for _ in range(n):
        with t.start_as_current_span("x"):
            pass
    return (time.perf_counter() - start) / n * 1e6


def emulate_edge_spans() -> bool:
    """Until edge/agent.py opens its own spans, wrap the agent's steps in the span names the
    integration uses (edge.http.infer > edge.model, edge.retrieval, edge.router), so the
    benchmark measures the cost of a realistic span tree. Returns True when it did."""
    import inspect

    import aivos.edge.agent as agent_mod
    from aivos.edge.batcher import MicroBatcher

    if "shared.tracing" in inspect.getsource(agent_mod):
        return False
    t = tracer("edge.agent")
    infer, submit, retrieve, route = (
        agent_mod.Agent.infer,
        MicroBatcher.submit,
        agent_mod.Agent._retrieve,
        agent_mod.route,
    )

    async def infer_traced(self: Any, req: Any) -> Any:
        with t.start_as_current_span("edge.http.infer"):
            return await infer(self, req)

    async def submit_traced(self: Any, *a: Any, **k: Any) -> Any:
        with t.start_as_current_span("edge.model"):
            return await submit(self, *a, **k)

    def retrieve_traced(self: Any, *a: Any, **k: Any) -> Any:
        with t.start_as_current_span("edge.retrieval"):
            return retrieve(self, *a, **k)

    def route_traced(*a: Any, **k: Any) -> Any:
        with t.start_as_current_span("edge.router"):
            return route(*a, **k)

    agent_mod.Agent.infer = infer_traced  # type: ignore[method-assign]
    MicroBatcher.submit = submit_traced  # type: ignore[method-assign]
    agent_mod.Agent._retrieve = retrieve_traced  # type: ignore[method-assign]
    agent_mod.route = route_traced  # type: ignore[assignment]
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=default_bundle_dir())
    ap.add_argument("--n", type=int, default=400, help="requests per mode")
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "tracing_overhead.json",
    )
    args = ap.parse_args()
    emulated = emulate_edge_spans()
    if not (args.bundle / "manifest.json").exists():
        sys.exit(f"no model bundle at {args.bundle}; build one with `aivos models build`")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"

    lat: dict[str, list[float]] = {"ids_only": [], "otlp_exporter": []}
    cost = {}
    with tempfile.TemporaryDirectory(prefix="aivos-trace-bench-") as d:
        data = Path(d)
        store = Store.open(data)
        token = store.create_token_sync("client", "bench")[1]
        store.close()
        settings = load_edge_settings(
            None,
            data_dir=str(data),
            **{"model.bundle": str(args.bundle), "server.json_logs": False},
        )
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(create_app(settings)) as client:
            for q in QUERIES * 5:  # warm up
                client.post("/v1/infer", json={"text": q}, headers=headers)
            decisions: dict[str, int] = {}
            done = 0
            while done < args.n:
                for mode in lat:
                    if mode == "ids_only":
                        shutdown_tracing()
                    else:
                        setup_tracing("aivos-edge-bench", otlp_endpoint=endpoint)
                    for i in range(args.block):
                        t0 = time.perf_counter()
                        r = client.post(
                            "/v1/infer", json={"text": QUERIES[i % len(QUERIES)]}, headers=headers
                        )
                        dt = time.perf_counter() - t0
                        body = r.json()
                        decisions[body["decision"]] = decisions.get(body["decision"], 0) + 1
                        if body["decision"] == "local":
                            lat[mode].append(dt * 1000)
                done += args.block
            shutdown_tracing()  # flush the request spans before counting them
            request_spans = _Collector.spans
            setup_tracing("aivos-edge-bench", otlp_endpoint=endpoint)
            cost["otlp_exporter"] = span_cost_us()
            shutdown_tracing()
            cost["ids_only"] = span_cost_us()
    server.shutdown()
    requests_traced = max(1, sum(decisions.values()) // 2)
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "requests_per_mode": args.n,
        "decisions": decisions,
        "local_path_ms": {
            mode: {
                "n": len(v),
                "p50": round(statistics.median(v), 3) if v else None,
                "p99": round(pct(v, 0.99), 3) if v else None,
            }
            for mode, v in lat.items()
        },
        "spans_exported_per_request": round(request_spans / requests_traced, 2),
        "spans_emulated": emulated,
        "one_span_us": {k: round(v, 2) for k, v in cost.items()},
    }
    a, b = result["local_path_ms"]["ids_only"], result["local_path_ms"]["otlp_exporter"]
    if a["p50"] and b["p50"]:
        result["added_p50_ms"] = round(b["p50"] - a["p50"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title="Edge local path with and without an exporter")
    for col in ("mode", "n", "p50 ms", "p99 ms", "one span (us)"):
        table.add_column(col)
    for mode, v in result["local_path_ms"].items():
        table.add_row(
            mode, str(v["n"]), str(v["p50"]), str(v["p99"]), str(result["one_span_us"][mode])
        )
    Console().print(table)
    Console().print(
        f"spans exported per request: {result['spans_exported_per_request']}, "
        f"added p50: {result.get('added_p50_ms')} ms -> {args.out}"
    )


if __name__ == "__main__":
    main()
