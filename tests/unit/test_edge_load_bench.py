"""The edge load benchmark's bookkeeping: the load generator reports how many queries it
took so the next level goes on from there (no query repeats within a run: the agent's
result cache must not turn a level into cache hits), the per-level counters and ratios, and
the paced generator's own lateness kept apart from the server's latency."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from benchmarks._loadgen import run_load
from benchmarks.edge_load import _counter_delta, _ratio


async def _serve(seen: list[str]) -> tuple[asyncio.Server, int]:
    """A keep-alive HTTP/1.1 server that answers every POST with 200 and records its text."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                seen.append(json.loads(await reader.readexactly(length))["text"])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_levels_that_go_on_from_the_last_taken_query_never_repeat_one() -> None:
    texts = [f"query {i}" for i in range(5000)]
    seen: list[str] = []
    server, port = await _serve(seen)
    offset = 0
    try:
        for concurrency in (1, 8):
            order = texts[offset:] + texts[:offset]
            result = await run_load(
                f"http://127.0.0.1:{port}/v1/infer", "t", order, concurrency, 300, 5.0, 0.05
            )
            assert result["completed"] == 300
            taken = int(result["queries_taken"])  # type: ignore[call-overload]
            assert taken >= 300  # warm-up and requests in flight at the end count too
            offset = (offset + taken) % len(texts)
    finally:
        server.close()
        await server.wait_closed()
    assert len(seen) == len(set(seen))  # every request the server saw was a new query
    assert seen[0] == "query 0" and len(seen) <= offset


def test_counter_delta_reports_the_levels_hit_rate_and_decisions() -> None:
    before = {"hits": 10.0, "misses": 90.0, "decision:local": 80.0, "decision:escalate": 20.0}
    after = {"hits": 10.0, "misses": 390.0, "decision:local": 340.0, "decision:escalate": 60.0}
    assert _counter_delta(before, after) == {
        "decisions": {"escalate": 40, "local": 260},
        "cache_hit_rate": 0.0,
    }
    assert _counter_delta(None, after) == {}  # a server without /metrics (the baseline)


def test_a_ratio_over_a_level_that_completed_nothing_is_nan_not_a_crash() -> None:
    assert _ratio(650.0, 65.0) == 10.0
    assert math.isnan(_ratio(65.2, 0.0))
    assert math.isnan(_ratio(None, 2.0))


async def test_a_paced_run_traces_schedule_write_and_answer_and_reports_its_own_lag(
    tmp_path: Path,
) -> None:
    server, port = await _serve([])
    trace = tmp_path / "trace.json"
    texts = [f"query {i}" for i in range(500)]
    try:
        result = await run_load(
            f"http://127.0.0.1:{port}/v1/infer", "t", texts, 4, 60, 5.0, 0.05, 200.0, trace
        )
    finally:
        server.close()
        await server.wait_closed()
    rows = json.loads(trace.read_text())
    assert result["completed"] == 60
    assert len(rows) >= 60  # every recorded answer (the last ones may land after the count)
    for qi, due, sent, done, status in rows:
        assert 0 <= qi < len(texts) and status == 200
        assert sent <= done and due <= done
    for name in ("service", "gen_lag"):
        for stat in ("p50", "p99", "max"):
            assert isinstance(result[f"{name}_{stat}_ms"], float)
    assert float(result["gen_lag_p50_ms"]) >= 0.0  # type: ignore[arg-type]
