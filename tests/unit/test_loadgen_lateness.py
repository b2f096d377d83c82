"""The paced load generator keeps its own lateness apart from the server's latency: each
request's scheduled time, actual write and answer are traced, and the summary reports the
latency from the schedule (the headline), from the write (`service_*`) and how late the
generator itself wrote (`gen_lag_*`), so a tail the generator caused is not read as the
server's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from benchmarks._loadgen import run_load


async def _serve() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_paced_run_traces_schedule_write_and_answer_and_reports_its_own_lag(
    tmp_path: Path,
) -> None:
    server, port = await _serve()
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
