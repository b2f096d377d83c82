"""Closed-loop HTTP load generator for the edge benchmark (run in its own process).

`concurrency` workers, each with one keep-alive HTTP/1.1 connection, send `POST` requests
with JSON bodies `{"text": ...}` taken round-robin from a query file and measure latency on
the client side (request written -> full response read). Raw asyncio streams with
pre-encoded requests keep the generator's own CPU cost low: on a 2-core machine it shares
the cores with the server under test.

A run warms up for `warmup_s` (not recorded), then records until `count` requests have
completed or `duration_s` has passed, whichever comes first. Prints one JSON object.

With `--rate R` the run is paced instead of closed-loop (the wrk2 method): the workers
together offer R requests/s on a fixed schedule, each connection sending its next request at
its scheduled time (or at once when it is late). Latency is measured from the *scheduled*
time, so a stalled server is charged for the requests it delayed (no coordinated omission).
A closed loop at concurrency c only measures queueing: by Little's law its latency is
c / throughput, whatever the server does.

The generator's own lateness is reported beside the latency, not hidden in it: `gen_lag_*`
is how late a request was written after the later of its scheduled time and the moment its
connection was free again (its previous answer read). The server cannot cause that part: it
is the generator's event loop waking late (on a shared machine, waiting for a core). The
`service_*` figures are the latency from the actual write (what the server and the loopback
took). The headline `p50_ms`/`p99_ms` stay measured from the schedule.
`--trace FILE` writes every recorded request as `[query index, due ns, sent ns, done ns,
status]` (perf_counter nanoseconds: the same clock as the server's `time.perf_counter`).

    python benchmarks/_loadgen.py --url http://127.0.0.1:8080/v1/infer --token T \
        --queries queries.json --concurrency 16 --count 3000 --duration 15 [--rate 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["run_load", "summarise"]


class _State:
    def __init__(self, n_queries: int, count: int) -> None:
        self.next_query = 0
        self.taken = 0  # queries sent, warm-up included: where the next run should go on
        self.n_queries = n_queries
        self.count = count
        self.recording = False
        self.stop = False
        self.record_started = 0.0
        self.record_ended = 0.0
        self.latencies_ns: list[int] = []
        self.service_ns: list[int] = []  # from the actual write, not the schedule
        self.gen_lag_ns: list[int] = []  # written late by the generator itself (module doc)
        self.trace: list[tuple[int, int, int, int, int]] | None = None
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()

    def take(self) -> int:
        i = self.next_query
        self.next_query = (i + 1) % self.n_queries
        self.taken += 1
        return i


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns (status, server wants to close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = -1
    chunked = False
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length > 0:
        await reader.readexactly(length)
    return status, close


async def _worker(
    host: str, port: int, requests: list[bytes], st: _State, interval_s: float, phase_s: float
) -> None:
    """One connection. `interval_s` > 0 paces it: request k is due at start + phase + k*interval."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    due = time.perf_counter() + phase_s
    free = 0  # when this connection could take its next request (its last answer read)
    while not st.stop:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
            free = time.perf_counter_ns()
        assert reader is not None
        qi = st.take()
        req = requests[qi]
        if interval_s > 0:
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            t0 = int(due * 1e9)  # perf_counter_ns() shares perf_counter()'s clock
            due += interval_s
            sent = time.perf_counter_ns()
        else:
            t0 = sent = time.perf_counter_ns()
        lag = max(0, sent - max(t0, free))
        recording = st.recording
        try:
            writer.write(req)
            status, close = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if recording and st.recording:
                st.errors[type(exc).__name__] += 1
            writer.close()
            writer = None
            continue
        t1 = free = time.perf_counter_ns()
        if recording and st.recording and not st.stop:
            st.statuses[status] += 1
            if 200 <= status < 300:
                st.latencies_ns.append(t1 - t0)
                st.service_ns.append(t1 - sent)
                st.gen_lag_ns.append(lag)
            if st.trace is not None:
                st.trace.append((qi, t0, sent, t1, status))
            if len(st.latencies_ns) >= st.count:
                st.stop = True
                st.record_ended = time.perf_counter()
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def run_load(
    url: str,
    token: str | None,
    texts: list[str],
    concurrency: int,
    count: int,
    duration_s: float,
    warmup_s: float,
    rate: float = 0.0,
    trace: Path | None = None,
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    requests = []
    for text in texts:
        body = json.dumps({"text": text}).encode()
        head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    st = _State(len(requests), count)
    if trace is not None:
        st.trace = []
    interval = concurrency / rate if rate > 0 else 0.0
    workers = [
        asyncio.create_task(_worker(host, port, requests, st, interval, i / rate if rate else 0))
        for i in range(concurrency)
    ]
    await asyncio.sleep(warmup_s)
    st.record_started = time.perf_counter()
    cpu0 = time.process_time()
    st.recording = True
    deadline = st.record_started + duration_s
    while not st.stop and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        if any(w.done() for w in workers):
            break
    if not st.stop:
        st.stop = True
        st.record_ended = time.perf_counter()
    cpu = time.process_time() - cpu0
    await asyncio.wait(workers, timeout=10)
    for w in workers:
        if w.done() and not w.cancelled() and w.exception() is not None:
            st.errors[type(w.exception()).__name__] += 1
        w.cancel()
    result = summarise(st, concurrency)
    result["offered_rps"] = rate or None
    result["queries_taken"] = st.taken
    done = max(1, len(st.latencies_ns))
    result["client_cpu_ms_per_req"] = round(1000 * cpu / done, 3)
    if trace is not None and st.trace is not None:
        trace.write_text(json.dumps(st.trace))
    return result


def _pct(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[i]


def _spread(name: str, values_ns: list[int]) -> dict[str, float]:
    """`name`_p50_ms, _p99_ms and _max_ms of `values_ns`."""
    ms = sorted(x / 1e6 for x in values_ns)
    return {
        f"{name}_p50_ms": round(_pct(ms, 0.50), 3),
        f"{name}_p99_ms": round(_pct(ms, 0.99), 3),
        f"{name}_max_ms": round(ms[-1], 3) if ms else float("nan"),
    }


def summarise(st: _State, concurrency: int) -> dict[str, object]:
    elapsed = max(1e-9, st.record_ended - st.record_started)
    ms = sorted(x / 1e6 for x in st.latencies_ns)
    return {
        "concurrency": concurrency,
        "completed": len(ms),
        "elapsed_s": round(elapsed, 3),
        "rps": round(len(ms) / elapsed, 1),
        "p50_ms": round(_pct(ms, 0.50), 3),
        "p90_ms": round(_pct(ms, 0.90), 3),
        "p99_ms": round(_pct(ms, 0.99), 3),
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else float("nan"),
        "max_ms": round(ms[-1], 3) if ms else float("nan"),
        **_spread("service", st.service_ns),
        **_spread("gen_lag", st.gen_lag_ns),
        "statuses": {str(k): v for k, v in sorted(st.statuses.items())},
        "errors": dict(st.errors),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", default=None)
    ap.add_argument("--queries", type=Path, required=True, help="JSON list of query strings")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--count", type=int, default=3000, help="max recorded requests")
    ap.add_argument("--duration", type=float, default=15.0, help="max recording seconds")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--offset", type=int, default=0, help="start at this query index")
    ap.add_argument(
        "--rate", type=float, default=0.0, help="paced: requests/s offered (0 = closed loop)"
    )
    ap.add_argument("--trace", type=Path, default=None, help="per-request timings to this file")
    args = ap.parse_args()
    texts = json.loads(args.queries.read_text())
    texts = texts[args.offset :] + texts[: args.offset]
    result = asyncio.run(
        run_load(
            args.url,
            args.token,
            texts,
            args.concurrency,
            args.count,
            args.duration,
            args.warmup,
            args.rate,
            args.trace,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
