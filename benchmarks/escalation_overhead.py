"""Escalation overhead: edge -> NATS (leaf -> hub) -> worker -> edge, against calling the
same llama.cpp model in process; time to first token; tokens/s with 1 and 2 workers.

Run:  python benchmarks/escalation_overhead.py [--n 30] [--max-tokens 16] [--out FILE]

Setup (all real): a hub nats-server with JetStream, a site leaf, workers started with
`aivos cloud worker` as separate processes, the edge client connected to the leaf.
Three measurements per request are reported:

* protocol round trip: a worker whose backend does no work (`_One` below) - the pure cost
  of the NATS path and the message protocol; once with that worker in the benchmark's own
  process (the row recorded since c06be6a) and once in a process of its own, as the
  llama.cpp worker runs, so that row and the added latency pay the same process hops; and
  once more in its own process, paced (a pause before each request) and scored as the added
  latency is (client total minus the worker's time): the row to compare `added_ms` with,
  since back-to-back requests keep every process on the path awake and real ones do not;
* added latency with the real model = client-side total minus the worker's own
  ``Done.timings.total_ms`` (receipt -> Done), per request;
* end-to-end p50 of escalated vs in-process generation, and time to first token; the
  in-process model is given the same requests in the same order as the worker (the
  masked ones untimed), since llama.cpp's reuse of the previous prompt's KV cache
  changes the prefill time of the next one;
* with masking (the issue's combined figure, measured rather than added up): the edge's
  real `Escalator.prepare` (exit gate, default masker warmed up, prompt + three
  knowledge-base passages) inside the timed span, then the same streamed round trip:
  added = prepare + client total - worker total. Once with the masker's span cache emptied
  before each request ("cold": every passage searched, as the first time a chunk is
  retrieved) and once with the passages in it ("warm": chunks retrieved before), alternated
  per request, and once more with the cache emptied and then pre-filled with the whole
  knowledge base ("prefilled": what the edge agent does at start-up, `SpanPrefill`, so the
  first request that cites a passage finds it); the request without masking (`added_ms`)
  is timed in the same loop, and
  the ratio masked / unmasked is reported. The direct generator call these rows are
  measured against is the worker's own time for the same request (as for `added_ms`): an
  in-process call with the passages would not be comparable end to end, since the worker's
  llama.cpp reuses the KV cache of the passages it has just seen and the in-process one
  does not. `--no-throughput` skips the tokens/s part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import nats
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.worker.llamacpp import LlamaCppBackend  # noqa: E402
from aivos.edge.escalation import Escalator  # noqa: E402
from aivos.edge.uplink.generation import stream_generate  # noqa: E402
from aivos.edge.uplink.link import Uplink  # noqa: E402
from aivos.shared.messages import Done, GenerateRequest, Passage, Token  # noqa: E402
from aivos.shared.natsconf import LeafConfig, NatsServer, free_port, start_local_hub  # noqa: E402
from aivos.shared.residency import ExitGate, ResidencyPolicy  # noqa: E402
from aivos.shared.residency.prefill import prefill_spans  # noqa: E402
from aivos.shared.subjects import gen_subject  # noqa: E402

PROMPTS = [
    "What are the opening hours of the branch?",
    "How do I reset my online banking password?",
    "Explain what an overdraft fee is.",
    "Can I change the address on my account?",
    "What documents do I need to open an account?",
]


# the masked rows: prompts a customer might send (some with PII), and knowledge-base passages
# (three per request, drawn from these five, so they repeat as retrieved chunks do)
MASKED_PROMPTS = [
    "Hi, I was charged twice for my card 4111 1111 1111 1111 on 2024-03-15. Refund to "
    "DE89 3704 0044 0532 0130 00 and email me at anna.smith@example.org.",
    "What are the opening hours of the branch on Main Street?",
    "I'm Jane Doe, born 01/02/1980; please call me back on +44 20 7946 0958.",
    "How do I dispute a payment I do not recognise?",
    "Can I change the address on my account? I moved to 12 High Street, London.",
]
KB_PASSAGES = [
    "Duplicate charges: when a card payment is shown twice, the second entry is usually a "
    "pre-authorisation that drops off within 3-5 business days. If it is still there after 7 "
    "days, the customer can open a dispute in the app under Payments > Disputes.",
    "Refunds are sent to the original payment method; bank transfers take 1-2 business days. "
    "Fees: none for disputes under EUR 5,000. Contact the branch for amounts above that limit "
    "or call the hotline on +49 30 12345678.",
    "Branch opening hours: Monday to Friday 9:00-17:00, Saturday 9:00-12:00. Appointments with "
    "an adviser can be booked online or by writing to appointments@bank.example.",
    "Change of address: customers update their address in the app under Profile > Address; a "
    "letter confirming the change is sent to the new address within 5 business days.",
    "Lost or stolen cards: block the card at once in the app or call +44 20 7946 0000 (24/7). "
    "A replacement card arrives within 3-5 business days.",
]


def masked_escalator(site: str, max_tokens: int) -> Escalator:
    """The edge's escalator with a real exit gate (prompts masked, default masker warmed up
    as the agent does at start-up); `prepare` uses the uplink only for the site's name."""
    policy = ResidencyPolicy(region="local", classes={"escalation_prompt": "mask"})
    gate = ExitGate(policy)
    gate.masker.warm_up()
    return Escalator(Uplink(None, site), gate, max_tokens=max_tokens)


def kb_passages(i: int) -> list[Passage]:
    n = len(KB_PASSAGES)
    return [Passage(text=KB_PASSAGES[(i + k) % n], source=f"kb/{(i + k) % n}", score=1.0)
            for k in range(3)]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    idx = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[idx]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": pct(values, 0.5),
        "p90": pct(values, 0.9),
        "mean": statistics.fmean(values) if values else float("nan"),
        "n": len(values),
    }


def spawn_worker(url: str, name: str, threads: int, concurrency: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from aivos.cli import main; main()",
            "cloud",
            "worker",
            "--nats",
            url,
            "--threads",
            str(threads),
            "--concurrency",
            str(concurrency),
            "--name",
            name,
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_workers(nc: nats.NATS, site: str, names: set[str], timeout: float = 120) -> None:
    """Wait until every named worker has answered a probe (queue group picks randomly)."""
    from aivos.shared.messages import decode_reply, encode

    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    probe = GenerateRequest(request_id="probe", site=site, prompt="", max_tokens=1)
    while seen != names:
        if time.monotonic() > deadline:
            raise SystemExit(f"workers not ready: {names - seen}")
        try:
            msg = await nc.request(gen_subject(site), encode(probe), timeout=30)
            reply = decode_reply(msg.data)
            worker = getattr(reply, "worker", "")
            if worker:
                seen.add(worker)
        except Exception:
            await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # let the probes' generations finish


async def escalate(nc: nats.NATS, req: GenerateRequest) -> tuple[float, float, Done]:
    t0 = time.perf_counter()
    ttft = float("nan")
    stream = stream_generate(nc, req, timeout_s=120)
    try:
        async for item in stream:
            if isinstance(item, Token) and ttft != ttft:
                ttft = (time.perf_counter() - t0) * 1000
            if isinstance(item, Done):
                return (time.perf_counter() - t0) * 1000, ttft, item
    finally:
        # closed here, as `generate` does: left to the garbage collector, the stream's
        # clean-up (span end, unsubscribe) ran inside the next request's timing
        await stream.aclose()  # type: ignore[attr-defined]
    raise RuntimeError("no Done")


def in_process(backend: LlamaCppBackend, req: GenerateRequest) -> tuple[float, float, int]:
    stop = threading.Event()
    t0 = time.perf_counter()
    ttft = float("nan")
    n = 0
    for _ in backend._generate(req, stop):  # noqa: SLF001 - same code path the worker runs
        if n == 0:
            ttft = (time.perf_counter() - t0) * 1000
        n += 1
    return (time.perf_counter() - t0) * 1000, ttft, n


def request(i: int, site: str, max_tokens: int, stream: bool = True) -> GenerateRequest:
    return GenerateRequest(
        request_id=f"b{i}",
        site=site,
        prompt=PROMPTS[i % len(PROMPTS)],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=stream,
    )


# the pause before each request of the paced no-op row (any gap from 5 ms to 0.3 s scored
# alike on this box; the real worker's requests come after 0.5 s of generation)
PACED_GAP_S = 0.05


class _One:
    """The no-op backend: one chunk, no model."""

    name = "echo"

    async def stream(self, request: GenerateRequest):  # type: ignore[no-untyped-def]
        yield "ok"

    async def aclose(self) -> None:
        return None


def spawn_echo_worker(url: str) -> subprocess.Popen[bytes]:
    """The no-op worker in its own process, as the llama.cpp worker runs."""
    return subprocess.Popen(
        [sys.executable, __file__, "--serve-echo", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def serve_echo(url: str) -> None:
    from aivos.cloud.worker.service import GenerationWorker

    nc = await nats.connect(url)
    worker = GenerationWorker(_One(), concurrency=4, name="echo", subject=gen_subject("echo"))
    await worker.start(nc)
    await asyncio.Event().wait()  # until terminated


async def echo_round_trips(hub_url: str, edge: nats.NATS, n: int) -> dict[str, dict[str, float]]:
    """Protocol-only round trips via leaf->hub with a worker whose backend yields one chunk:
    the worker in this process (the figure recorded since c06be6a), and in its own process
    (as the llama.cpp worker runs: one more process to wake per message, which the
    "added by escalation" figure pays and the in-process worker does not)."""
    from aivos.cloud.worker.service import GenerationWorker

    async def measure() -> dict[str, float]:
        times = []
        for i in range(n + 20):
            t0 = time.perf_counter()
            async for _ in stream_generate(edge, request(i, "echo", 1), timeout_s=10):
                pass
            if i >= 20:
                times.append((time.perf_counter() - t0) * 1000)
        return summary(times)

    wnc = await nats.connect(hub_url)
    worker = GenerationWorker(_One(), concurrency=4, name="echo", subject=gen_subject("echo"))
    await worker.start(wnc)
    await asyncio.sleep(0.5)
    in_process = await measure()
    await worker.drain()
    await wnc.close()

    proc = spawn_echo_worker(hub_url)
    try:
        await wait_workers(edge, "echo", {"echo"}, timeout=60)
        own_process = await measure()
        paced_total, paced_added = await measure_paced(edge, max(20, n // 5))
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "in_process": in_process,
        "own_process": own_process,
        "paced_total": paced_total,
        "paced_added": paced_added,
    }


async def measure_paced(
    edge: nats.NATS, n: int, gap_s: float = PACED_GAP_S
) -> tuple[dict[str, float], dict[str, float]]:
    """The no-op worker process, idle for `gap_s` before each request, scored as `added_ms`
    is (client total minus the worker's receipt->Done time): like with like with the real
    worker, whose requests also come after a pause (its generation, the in-process
    baseline). Back to back, every process on the path stays awake; after any pause each
    hop pays a wake-up (measured Dec 2: +1.0-1.2 ms at p50 from a 5 ms gap on)."""
    totals, added = [], []
    for i in range(n + 5):
        await asyncio.sleep(gap_s)
        total, _, done = await escalate(edge, request(i, "echo", 1))
        if i >= 5:
            totals.append(total)
            added.append(total - done.timings.total_ms)
    return summary(totals), summary(added)


async def throughput(
    edge: nats.NATS, site: str, total: int, parallel: int, max_tokens: int
) -> dict[str, float]:
    sem = asyncio.Semaphore(parallel)
    tokens = 0

    async def one(i: int) -> None:
        nonlocal tokens
        async with sem:
            _, _, done = await escalate(edge, request(i, site, max_tokens))
            tokens += done.n_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    wall = time.perf_counter() - t0
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall, "requests": total}


async def main(args: argparse.Namespace) -> dict[str, object]:
    cores = os.cpu_count() or 2
    work = Path(tempfile.mkdtemp(prefix="aivos-bench-"))
    hub = start_local_hub(work)
    leaf = NatsServer(
        LeafConfig(
            site="bench", hub_leaf_url=hub.leaf_url, port=free_port(), monitor_port=free_port()
        ),
        work,
    ).start()
    leaf.wait_leafnodes(1)
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, object] = {
        "machine": {
            "cores": cores,
            "python": platform.python_version(),
            "load_avg_start": os.getloadavg(),
        },
        "params": {"n": args.n, "max_tokens": args.max_tokens, "threads": args.threads},
    }
    try:
        edge = await nats.connect(leaf.url)
        echo = await echo_round_trips(hub.url, edge, args.n * 5)
        results["protocol_round_trip_ms"] = echo["in_process"]
        results["protocol_round_trip_process_ms"] = echo["own_process"]
        results["protocol_round_trip_paced_ms"] = echo["paced_total"]
        results["protocol_added_paced_ms"] = echo["paced_added"]

        esc = masked_escalator("bench", args.max_tokens)
        backend = LlamaCppBackend(n_threads=args.threads)
        procs.append(spawn_worker(hub.url, "w1", args.threads, 4))
        await wait_workers(edge, "bench", {"w1"})
        # interleave baseline and escalation so load changes hit both alike
        base_total, base_ttft, esc_total, esc_ttft, added, worker_total = [], [], [], [], [], []
        for i in range(2):  # warm-up
            in_process(backend, request(i, "bench", args.max_tokens))
            await escalate(edge, request(i, "bench", args.max_tokens))
        nostream_total: list[float] = []
        base_nostream_total: list[float] = []
        # masked rows: prepare + round trip, the passages cold or warm in the span cache
        masked: dict[str, list[float]] = {
            k: []
            for k in (
                "cold", "warm", "prefilled", "prepare_cold", "prepare_warm", "prepare_prefilled"
            )
        }  # fmt: skip

        async def run_masked(i: int, key: str) -> GenerateRequest:
            prompt, passages = MASKED_PROMPTS[i % len(MASKED_PROMPTS)], kb_passages(i)
            if key == "warm":  # retrieved before (by an earlier request): in the cache
                esc.prepare("w", "", passages)
            else:
                esc.gate.masker.span_cache.clear()
            if key == "prefilled":  # the agent's start-up pre-fill, without its pauses
                prefill_spans(esc.gate.masker, KB_PASSAGES, pause_s=0.0)
            t0 = time.perf_counter()
            prepared = esc.prepare(f"m{i}{key}", prompt, passages, stream=True)
            req = msgspec.structs.replace(prepared.request, temperature=0.0)
            t1 = time.perf_counter()
            total, _, done = await escalate(edge, req)
            prep = (t1 - t0) * 1000
            masked[f"prepare_{key}"].append(prep)
            masked[key].append(prep + total - done.timings.total_ms)
            return req

        variants = ("cold", "warm", "prefilled")
        for i in range(2):  # warm-up of the masked path (prompts with passages)
            for key in variants:
                await run_masked(i, key)
        for values in masked.values():
            values.clear()
        for i in range(args.n):
            req = request(i, "bench", args.max_tokens)
            # a different prompt than the one just before it: llama.cpp reuses the KV cache
            # of a repeated prompt, which would flatter the second of two identical calls
            plain = request(i + 2, "bench", args.max_tokens, stream=False)

            async def run_baseline(
                req: GenerateRequest = req, plain: GenerateRequest = plain
            ) -> None:
                total, ttft, _ = await asyncio.to_thread(in_process, backend, req)
                base_total.append(total)
                base_ttft.append(ttft)
                total, _, _ = await asyncio.to_thread(in_process, backend, plain)
                base_nostream_total.append(total)

            async def run_escalated(
                req: GenerateRequest = req, plain: GenerateRequest = plain
            ) -> None:
                total, ttft, done = await escalate(edge, req)
                esc_total.append(total)
                esc_ttft.append(ttft)
                worker_total.append(done.timings.total_ms)
                added.append(total - done.timings.total_ms)
                total, _, done = await escalate(edge, plain)
                nostream_total.append(total)
                added.append(total - done.timings.total_ms)

            # alternate the order so drifting machine load hits both sides alike
            first, second = (
                (run_baseline, run_escalated) if i % 2 == 0 else (run_escalated, run_baseline)
            )
            await first()
            await second()
            for k in range(len(variants)):  # each variant first in turn
                last_masked = await run_masked(i, variants[(i + k) % len(variants)])
            # The same last request for the in-process model, untimed: llama.cpp reuses the
            # KV cache of the previous prompt, and a short prompt after a long masked one with
            # passages prefills ~35 ms slower (measured Dec 3). Without this the worker alone
            # paid that and the end-to-end ratios read it as transport overhead.
            await asyncio.to_thread(in_process, backend, last_masked)
        results["in_process_ms"] = summary(base_total)
        results["in_process_nostream_ms"] = summary(base_nostream_total)
        results["added_masked_cold_ms"] = summary(masked["cold"])
        results["added_masked_warm_ms"] = summary(masked["warm"])
        results["prepare_cold_ms"] = summary(masked["prepare_cold"])
        results["prepare_warm_ms"] = summary(masked["prepare_warm"])
        results["added_masked_prefilled_ms"] = summary(masked["prefilled"])
        results["prepare_prefilled_ms"] = summary(masked["prepare_prefilled"])
        results["span_cache"] = msgspec.to_builtins(esc.gate.masker.span_cache.stats())
        results["escalated_ms"] = summary(esc_total)
        results["escalated_nostream_ms"] = summary(nostream_total)
        results["added_ms"] = summary(added)
        results["ratio_p50_added_masked_over_unmasked"] = {
            k: round(summary(masked[k])["p50"] / summary(added)["p50"], 3) for k in variants
        }
        results["worker_total_ms"] = summary(worker_total)
        results["ttft_in_process_ms"] = summary(base_ttft)
        results["ttft_escalated_ms"] = summary(esc_ttft)

        if args.throughput:
            tput: dict[str, object] = {}
            tput["1_worker"] = await throughput(
                edge, "bench", args.tput_requests, 4, args.tput_tokens
            )
            procs.append(spawn_worker(hub.url, "w2", args.threads, 4))
            await wait_workers(edge, "bench", {"w1", "w2"})
            tput["2_workers"] = await throughput(
                edge, "bench", args.tput_requests, 4, args.tput_tokens
            )
            results["throughput"] = tput
        await edge.close()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        leaf.stop()
        hub.stop()
    results["machine"]["load_avg_end"] = os.getloadavg()  # type: ignore[index]
    return results


def report(res: dict[str, object]) -> None:
    console = Console()
    table = Table(title="Escalation overhead (edge -> leaf -> hub -> worker -> edge)")
    for col in ("measure", "p50 ms", "p90 ms", "ratio p50 (to in-proc / unmasked)"):
        table.add_column(col)

    def row(label: str, key: str, base: str | None = None) -> None:
        s = res[key]
        assert isinstance(s, dict)
        ratio = ""
        if base:
            b = res[base]
            assert isinstance(b, dict)
            ratio = f"{s['p50'] / b['p50']:.3f}"
        table.add_row(label, f"{s['p50']:.2f}", f"{s['p90']:.2f}", ratio)

    row("protocol round trip (no-op worker in this process)", "protocol_round_trip_ms")
    if "protocol_round_trip_process_ms" in res:
        row("protocol round trip (no-op worker process)", "protocol_round_trip_process_ms")
    if "protocol_added_paced_ms" in res:
        row("  the same, paced, client - worker (as added)", "protocol_added_paced_ms")
    row("in-process llama.cpp", "in_process_ms")
    row("escalated llama.cpp, streamed", "escalated_ms", "in_process_ms")
    if "in_process_nostream_ms" in res:  # the same prompts as the not-streamed row
        row("in-process llama.cpp, the not-streamed row's prompts", "in_process_nostream_ms")
    base = "in_process_nostream_ms" if "in_process_nostream_ms" in res else "in_process_ms"
    row("escalated llama.cpp, not streamed", "escalated_nostream_ms", base)
    row("added by escalation (client - worker)", "added_ms")
    if "added_masked_cold_ms" in res:
        row("  masking: Escalator.prepare, passages cold", "prepare_cold_ms")
        row("  masking: Escalator.prepare, passages warm", "prepare_warm_ms")
        if "prepare_prefilled_ms" in res:
            row("  masking: Escalator.prepare, passages pre-filled", "prepare_prefilled_ms")
        row("added incl. masking, passages cold", "added_masked_cold_ms", "added_ms")
        row("added incl. masking, passages warm", "added_masked_warm_ms", "added_ms")
        if "added_masked_prefilled_ms" in res:
            row("added incl. masking, passages pre-filled", "added_masked_prefilled_ms", "added_ms")
    row("time to first token, in-process", "ttft_in_process_ms")
    row("time to first token, escalated", "ttft_escalated_ms", "ttft_in_process_ms")
    console.print(table)
    if "throughput" not in res:
        return
    tput = res["throughput"]
    assert isinstance(tput, dict)
    t2 = Table(title="Generation throughput (4 requests in flight)")
    for col in ("workers", "tokens/s", "ratio vs 1 worker"):
        t2.add_column(col)
    one = tput["1_worker"]["tokens_per_s"]
    for key, label in (("1_worker", "1"), ("2_workers", "2")):
        tps = tput[key]["tokens_per_s"]
        t2.add_row(label, f"{tps:.1f}", f"{tps / one:.2f}")
    console.print(t2)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-echo"]:  # the no-op worker process (spawn_echo_worker)
        asyncio.run(serve_echo(sys.argv[2]))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="measured requests per side")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="llama.cpp threads per worker and for the in-process baseline",
    )
    parser.add_argument(
        "--no-throughput", dest="throughput", action="store_false", help="skip tokens/s"
    )
    parser.add_argument("--tput-requests", type=int, default=16)
    parser.add_argument("--tput-tokens", type=int, default=48)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "escalation_overhead.json"
    )
    args = parser.parse_args()
    res = asyncio.run(main(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    report(res)
    print(f"wrote {args.out}")
