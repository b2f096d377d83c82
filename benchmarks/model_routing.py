"""Model routing: overhead of the router hop, share served by primary vs fallback, failover.

A real hub nats-server; workers and the router in this process with scripted backends, so
the numbers are the routing's, not a model's. Measured in one run:

* ``overhead``: `--n` sequential requests on the default path (``aivos.gen.<site>``, the
  single queue group of before) vs the same through the router (``aivos.gen.<site>.<class>``
  -> ``aivos.model.<site>.<model>``); p50/p95 of each, the p50 difference and the ratio.
  ``routed`` is the router as it runs: the worker answers the edge's inbox itself and
  tells the router in batched notices (three hops on the answer's path);
  ``routed_relay`` is the router with ``direct_reply=False``: the worker answers the
  router, which relays the `Done` to the edge (four hops: the "before" of that change).
  The modes alternate in rounds of n / 10 requests (so a busy machine shifts all alike).
  Also this process's CPU time per request in each mode (edge, worker and, when routed,
  the router all run here; nats-server does not): what the hop costs in Python, which
  a loaded machine inflates less than it inflates wall time;
* ``saturated``: the primary has one place and takes `--work-ms` per request; `--clients`
  concurrent clients send `--n` requests: share answered by the primary vs the fallback;
* ``failing``: the primary's backend always fails: share by fallback, and how many requests
  the primary still saw (the circuit breaker stops sending after its threshold);
* ``failover``: steady load, then the primary's worker dies (connection closed): time from
  the death to the first answer by the fallback.

    python benchmarks/model_routing.py [--n 1000] [--clients 8] [--work-ms 20]

Writes benchmarks/results/model_routing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.models.router import ModelRouter  # noqa: E402
from aivos.cloud.worker.backend import BackendError  # noqa: E402
from aivos.cloud.worker.catalogue import Catalogue, parse_catalogue  # noqa: E402
from aivos.cloud.worker.cli import catalogue_worker  # noqa: E402
from aivos.cloud.worker.service import GenerationWorker  # noqa: E402
from aivos.edge.uplink.generation import generate  # noqa: E402
from aivos.shared.errors import AivosError  # noqa: E402
from aivos.shared.messages import GenerateRequest  # noqa: E402
from aivos.shared.natsconf import start_local_hub  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "model_routing.json"

CATALOGUE = """
default_model = "primary"
[models.primary]
backend = "llamacpp"
version = "p1"
limits = {{ concurrency = {primary_places} }}
[models.backup]
backend = "llamacpp"
version = "b1"
limits = {{ concurrency = 1000 }}
[classes.small]
chain = ["primary", "backup"]
[breaker]
failures = 3
cooldown_s = 30
"""


class Echo:
    """Answers "ok" after `work_s`; fails every request when `fail`."""

    name = "echo"

    def __init__(self, work_s: float = 0.0, fail: bool = False) -> None:
        self.work_s = work_s
        self.fail = fail
        self.calls = 0

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        self.calls += 1
        if self.work_s:
            await asyncio.sleep(self.work_s)
        if self.fail:
            raise BackendError("scripted failure")
        yield "ok"

    async def aclose(self) -> None:
        return None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _start(
    url: str, cat: Catalogue, model: str, backend: Echo
) -> tuple[GenerationWorker, nats.NATS]:
    nc = await nats.connect(url)
    worker = catalogue_worker(cat, model, name=model, backend=backend, stats_interval_s=None)
    await worker.start(nc)
    return worker, nc


async def _router(
    url: str, cat: Catalogue, *, direct_reply: bool = True
) -> tuple[ModelRouter, nats.NATS]:
    nc = await nats.connect(url)
    router = ModelRouter(cat, accept_timeout_s=1.0, direct_reply=direct_reply)
    await router.start(nc)
    return router, nc


async def _stop(*parts: tuple[object, nats.NATS]) -> None:
    for obj, nc in parts:
        await obj.drain(grace_s=2)  # type: ignore[attr-defined]
        await nc.close()


def _req(rid: str, cls: str | None) -> GenerateRequest:
    return GenerateRequest(request_id=rid, site="bench", prompt="hello", model_class=cls)


_ROUNDS = 10  # the modes alternate in rounds of n / _ROUNDS requests


async def overhead(url: str, n: int) -> dict[str, float]:
    cat = parse_catalogue(CATALOGUE.format(primary_places=1000))
    w = await _start(url, cat, "primary", Echo())
    edge = await nats.connect(url)
    modes = ("direct", "routed_relay", "routed")
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu_s = dict.fromkeys(modes, 0.0)
    try:
        for rnd in range(_ROUNDS):
            for mode in modes:
                cls = None if mode == "direct" else "small"
                r = await _router(url, cat, direct_reply=mode == "routed") if cls else None
                try:
                    for i in range(20):  # warm-up
                        await generate(edge, _req(f"w{mode}{rnd}-{i}", cls), timeout_s=10)
                    c0 = time.process_time()
                    for i in range(n // _ROUNDS):
                        t0 = time.perf_counter()
                        await generate(edge, _req(f"{mode}{rnd}-{i}", cls), timeout_s=10)
                        times[mode].append((time.perf_counter() - t0) * 1000)
                    cpu_s[mode] += time.process_time() - c0
                finally:
                    if r is not None:
                        await _stop(r)
    finally:
        await edge.close()
        await _stop(w)
    out: dict[str, float] = {}
    for mode in modes:
        out[f"{mode}_p50_ms"] = statistics.median(times[mode])
        out[f"{mode}_p95_ms"] = _pct(times[mode], 95)
        out[f"{mode}_cpu_us_per_request"] = cpu_s[mode] / len(times[mode]) * 1e6
    for mode, tag in (("routed", ""), ("routed_relay", "relay_")):
        out[f"{tag}overhead_p50_ms"] = out[f"{mode}_p50_ms"] - out["direct_p50_ms"]
        out[f"{tag}ratio_p50"] = out[f"{mode}_p50_ms"] / out["direct_p50_ms"]
        out[f"{tag}overhead_cpu_us_per_request"] = (
            out[f"{mode}_cpu_us_per_request"] - out["direct_cpu_us_per_request"]
        )
    return out


async def _load(edge: nats.NATS, n: int, clients: int, tag: str) -> list[str]:
    models: list[str] = []
    queue = list(range(n))

    async def client() -> None:
        while queue:
            i = queue.pop()
            done = await generate(edge, _req(f"{tag}{i}", "small"), timeout_s=30)
            models.append(done.model)

    await asyncio.gather(*(client() for _ in range(clients)))
    return models


async def saturated(url: str, n: int, clients: int, work_ms: float) -> dict[str, float]:
    cat = parse_catalogue(CATALOGUE.format(primary_places=1))
    w1 = await _start(url, cat, "primary", Echo(work_ms / 1000))
    w2 = await _start(url, cat, "backup", Echo(work_ms / 1000))
    r = await _router(url, cat)
    edge = await nats.connect(url)
    try:
        models = await _load(edge, n, clients, "s")
    finally:
        await edge.close()
        await _stop(r, w1, w2)
    return {
        "share_primary": models.count("primary") / n,
        "share_fallback": models.count("backup") / n,
    }


async def failing(url: str, n: int, clients: int) -> dict[str, float]:
    cat = parse_catalogue(CATALOGUE.format(primary_places=1000))
    bad = Echo(fail=True)
    w1 = await _start(url, cat, "primary", bad)
    w2 = await _start(url, cat, "backup", Echo())
    r = await _router(url, cat)
    edge = await nats.connect(url)
    try:
        models = await _load(edge, n, clients, "f")
    finally:
        await edge.close()
        await _stop(r, w1, w2)
    return {
        "share_primary": models.count("primary") / n,
        "share_fallback": models.count("backup") / n,
        "requests_seen_by_failing_primary": bad.calls,
    }


async def failover(url: str, clients: int, work_ms: float) -> dict[str, float]:
    """`clients` keep the primary busy; at its death their requests in flight there are lost
    (they wait out their budget), so the time to the first answer by the fallback is taken
    on requests sent after the death, one after another, as new requests arrive."""
    cat = parse_catalogue(CATALOGUE.format(primary_places=1000))
    primary, primary_nc = await _start(url, cat, "primary", Echo(work_ms / 1000))
    w2 = await _start(url, cat, "backup", Echo(work_ms / 1000))
    r = await _router(url, cat)
    edge = await nats.connect(url)
    first_fallback: list[float] = []
    stop = asyncio.Event()

    async def ask(tag: str) -> None:
        try:
            done = await generate(edge, _req(tag, "small"), timeout_s=30)
        except AivosError:
            return
        if done.model == "backup" and not first_fallback:
            first_fallback.append(time.perf_counter())
            stop.set()

    async def client(c: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            await ask(f"k{c}-{i}")

    async def newcomer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            await ask(f"new-{i}")

    try:
        tasks = [asyncio.create_task(client(c)) for c in range(clients)]
        await asyncio.sleep(1.0)  # steady state on the primary
        killed_at = time.perf_counter()
        await primary_nc.close()  # the primary's pool dies
        tasks.append(asyncio.create_task(newcomer()))
        await asyncio.wait_for(stop.wait(), timeout=30)
        for task in tasks:  # requests caught in the dead worker would wait out their budget
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await edge.close()
        await _stop(r, w2)
    return {"failover_ms": (first_fallback[0] - killed_at) * 1000}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--work-ms", type=float, default=20.0)
    parser.add_argument("--only-overhead", action="store_true", help="Skip the other parts.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hub = start_local_hub(Path(tmp))
        try:
            results: dict[str, object] = {"overhead": await overhead(hub.url, args.n)}
            if args.only_overhead:
                print(json.dumps(results, indent=2))
                return
            results |= {
                "saturated": await saturated(hub.url, args.n // 4, args.clients, args.work_ms),
                "failing": await failing(hub.url, args.n // 4, args.clients),
                "failover": await failover(hub.url, args.clients, args.work_ms),
                "params": {**vars(args), "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count()},
            }
        finally:
            hub.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
