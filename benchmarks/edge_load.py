"""Edge agent load benchmark (issues 3 and 16): the real agent vs a FastAPI + PyTorch baseline.

Starts `aivos edge serve` as a subprocess (fresh data dir, a `client` token from
`aivos tokens create`, the example KB from `aivos kb add`), then drives `POST /v1/infer`
over loopback with the load generator (benchmarks/_loadgen.py) in a separate process,
using CLINC150 test queries (in-scope + out-of-scope, shuffled). Then does the same for
benchmarks/baseline_fastapi.py. Reports p50/p99 latency, requests/s and server CPU per
request per concurrency level for both stacks and the ratios, and for the agent the result
cache's hit rate and the decisions taken in each level; writes JSON. The whole run takes
about 3 minutes on 2 cores:

    python benchmarks/edge_load.py [--bundle DIR] [--artifacts DIR] [--levels 1,16,64]

`--artifacts` (from `aivos models build --keep-artifacts DIR`) gives the baseline the same
fine-tuned encoder and head as the bundle. `--profile DIR` additionally records a py-spy
profile of each server at the highest concurrency level (slower numbers for that level).
Each row also reports the latency from the actual write (`service_*`) and how late the load
generator itself wrote (`gen_lag_*`, benchmarks/_loadgen.py); `--trace-dir DIR` keeps every
request's scheduled/written/answered times. Only the paced 600 req/s level, agent only:

    python benchmarks/edge_load.py --stacks agent --levels '' --paced 64@600
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent
_PY = sys.executable
_AIVOS = [_PY, "-m", "aivos"] if not shutil.which("aivos") else ["aivos"]
console = Console()

# issue 16: c=1 p50 <= 2.5 ms and p99 <= 30 ms at a paced 600 req/s (issue 3: p50 <= 3 ms)
TARGETS = {"p50_c1_ms": 2.5, "rps_c64": 600.0, "p99_c64_ms": 30.0, "throughput_ratio": 4.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _queries(path: Path, seed: int) -> list[str]:
    data = json.loads(path.read_text())
    texts = [t for t, _ in data["test"]] + [t for t, _ in data["oos_test"]]
    random.Random(seed).shuffle(texts)
    return texts


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@contextlib.contextmanager
def _server(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[int]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=_ROOT)
        try:
            _wait_ready(ready_url, proc, timeout=300)
            yield proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _cpu_seconds(pid: int) -> float:
    import psutil

    with contextlib.suppress(psutil.Error):
        p = psutil.Process(pid)
        total = p.cpu_times().user + p.cpu_times().system
        for child in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.cpu_times().user + child.cpu_times().system
        return total
    return float("nan")


def _runq_wait_seconds(pid: int) -> float:
    """Seconds the server's threads (and children's) spent runnable but not running."""
    import psutil

    total = 0.0
    try:
        pids = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return float("nan")
    for p in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError, ValueError):
                    total += int(Path(f"/proc/{p}/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of `pid` (from /proc: running time in ns)."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                ns = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]
                out[int(tid)] = int(ns) / 1e9
    return out


def _thread_split(
    pid: int, before: dict[int, float], after: dict[int, float], requests: float
) -> dict[str, float]:
    """Server CPU ms per request by thread: the event loop (the main thread: HTTP, the
    pipeline's async code), the busiest other thread (the batch worker: the model and
    retrieval) and all the others (the store writer, ...). Answers "where does a request's
    CPU go" for every level of every run."""
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    loop = spent.pop(pid, 0.0)
    others = sorted(spent.values(), reverse=True)
    per = 1000 / requests if requests else 0.0
    return {
        "event_loop": round(loop * per, 3),
        "busiest_other": round((others[0] if others else 0.0) * per, 3),
        "rest": round(sum(others[1:]) * per, 3),
    }


def _agent_counters(url: str, token: str) -> dict[str, float] | None:
    """The agent's result-cache hits/misses and requests per decision, from its /metrics
    (None for a server without them: the baseline). Repeated queries hit the cache, so
    each level reports its hit rate beside its latency."""
    metrics = url.rsplit("/v1/", 1)[0] + "/metrics"
    req = urllib.request.Request(metrics, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in ("aivos_edge_cache_hits_total", "aivos_edge_cache_misses_total"):
            out[name.split("_")[3]] = float(value)
        elif name.startswith('aivos_requests_total{decision="'):
            out["decision:" + name.split('"')[1]] = float(value)
    return out or None


def _counter_delta(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> dict[str, object]:
    if before is None or after is None:
        return {}
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    hits, misses = delta.pop("hits", 0.0), delta.pop("misses", 0.0)
    out: dict[str, object] = {
        "decisions": {k.split(":", 1)[1]: int(v) for k, v in sorted(delta.items()) if v}
    }
    if hits + misses:
        out["cache_hit_rate"] = round(hits / (hits + misses), 3)
    return out


def _drive(
    url: str,
    token: str,
    queries: Path,
    level: int,
    offset: int,
    args: argparse.Namespace,
    pid: int,
    name: str,
    rate: float = 0.0,
) -> dict[str, object]:
    c = level
    profiler = None
    if args.profile and c == max(args.levels) and not rate:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = subprocess.Popen(
            [
                "py-spy",
                "record",
                "-p",
                str(pid),
                "-o",
                str(args.profile / f"{name}_c{c}.txt"),
                "-f",
                "raw",
                "-t",
                "-r",
                "200",
                "-d",
                str(int(args.duration + args.warmup + 2)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    proc = subprocess.Popen(
        [
            _PY,
            str(_ROOT / "benchmarks" / "_loadgen.py"),
            "--url",
            url,
            "--token",
            token,
            "--queries",
            str(queries),
            "--concurrency",
            str(c),
            "--count",
            str(args.count),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--offset",
            str(offset),
            "--rate",
            str(rate),
            *(
                ["--trace", str(args.trace_dir / f"{name}_c{c}_{rate:g}.json")]
                if args.trace_dir
                else []
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(args.warmup)  # server CPU is sampled over the recorded window only
    counters0 = _agent_counters(url, token)
    cpu0, t0, rq0 = _cpu_seconds(pid), time.perf_counter(), _runq_wait_seconds(pid)
    threads0 = _thread_cpu(pid)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode})")
    cpu1, t1, rq1 = _cpu_seconds(pid), time.perf_counter(), _runq_wait_seconds(pid)
    threads1 = _thread_cpu(pid)
    row = json.loads(stdout.strip().splitlines()[-1])
    row.update(_counter_delta(counters0, _agent_counters(url, token)))
    row["server_cpu_cores"] = round((cpu1 - cpu0) / (t1 - t0), 2)
    # > 0: the server's threads wanted a core and had to wait for one (other load)
    row["server_runq_wait_threads"] = round((rq1 - rq0) / (t1 - t0), 2)
    if row["rps"]:
        row["server_cpu_ms_per_req"] = round(
            1000 * (cpu1 - cpu0) / (t1 - t0) / float(row["rps"]),  # type: ignore[arg-type]
            3,
        )
        requests = float(row["rps"]) * (t1 - t0)  # type: ignore[arg-type]
        row["server_thread_cpu_ms_per_req"] = _thread_split(pid, threads0, threads1, requests)
    if profiler is not None:
        profiler.wait()
        row["profiled"] = True
    paced = f"@{rate:g}/s" if rate else "closed"
    console.print(
        f"  {name:>8} c={c:<3} {paced:>8} {row['rps']:>8} req/s  p50 {row['p50_ms']:>7} ms  "
        f"p99 {row['p99_ms']:>7} ms  (from the write: p99 {row.get('service_p99_ms')} ms; "
        f"generator late p99 {row.get('gen_lag_p99_ms')} ms)  "
        f"n={row['completed']} statuses={row['statuses']} "
        f"errors={row['errors']} server_cpu={row['server_cpu_cores']} "
        f"runq_wait={row['server_runq_wait_threads']} "
        f"cpu_ms/req server={row.get('server_cpu_ms_per_req')} client={row['client_cpu_ms_per_req']}"
        + (f" cache_hits={row['cache_hit_rate']}" if "cache_hit_rate" in row else "")
        + (f" decisions={row['decisions']}" if row.get("decisions") else "")
    )
    return row


@contextlib.contextmanager
def _agent(args: argparse.Namespace, work: Path) -> Iterator[tuple[str, str, int]]:
    """The real agent: fresh data dir, a client token, the example KB; (url, token, pid)."""
    data = work / "agent"
    env = dict(os.environ)
    env.setdefault("AIVOS_LIMITS__RATE_PER_SECOND", "100000")  # measure serving, not the limiter
    env.setdefault("AIVOS_LIMITS__RATE_BURST", "100000")
    for item in args.agent_env:
        key, _, value = item.partition("=")
        env[key] = value
    bundle = ["--bundle", str(args.bundle)] if args.bundle else []
    created = subprocess.run(
        [*_AIVOS, "tokens", "create", "--data-dir", str(data), "--scope", "client"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    token = created.stdout.strip().splitlines()[-1].strip()
    subprocess.run(
        [*_AIVOS, "kb", "add", "--data-dir", str(data), *bundle, str(args.kb)],
        capture_output=True,
        check=True,
        env=env,
    )
    port = _free_port()
    cmd = [*_AIVOS, "edge", "serve", "--data-dir", str(data), *bundle, "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with _server(cmd, env, f"{base}/readyz", work / "agent.log") as pid:
        yield f"{base}/v1/infer", token, pid


@contextlib.contextmanager
def _baseline(args: argparse.Namespace, work: Path) -> Iterator[tuple[str, str, int]]:
    """benchmarks/baseline_fastapi.py on a free port; (url, token, pid)."""
    port = _free_port()
    token = "baseline-" + os.urandom(8).hex()
    cmd = [
        _PY,
        str(_ROOT / "benchmarks" / "baseline_fastapi.py"),
        "--port",
        str(port),
        "--kb",
        str(args.kb),
        "--db",
        str(work / "baseline.db"),
        "--token",
        token,
    ]
    if args.artifacts:
        cmd += ["--artifacts", str(args.artifacts), "--bundle", str(args.bundle)]
    base = f"http://127.0.0.1:{port}"
    with _server(cmd, dict(os.environ), f"{base}/readyz", work / "baseline.log") as pid:
        yield f"{base}/v1/infer", token, pid


def _ratio(numerator: object, denominator: object) -> float:
    """numerator / denominator rounded, NaN when either is missing or the denominator is 0
    (a level where a stack completed nothing must not cost the whole run's results)."""
    try:
        value = float(numerator) / float(denominator)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return float("nan")
    return round(value, 2)


def _ratios(
    agent: list[dict[str, object]], base: list[dict[str, object]]
) -> list[dict[str, object]]:
    out = []
    for a, b in zip(agent, base, strict=True):
        out.append(
            {
                "concurrency": a["concurrency"],
                "throughput_ratio": _ratio(a["rps"], b["rps"]),
                "p50_latency_ratio": _ratio(b["p50_ms"], a["p50_ms"]),
                "p99_latency_ratio": _ratio(b["p99_ms"], a["p99_ms"]),
                # server CPU per request, baseline / agent: robust to other load on the machine
                "cpu_efficiency_ratio": _ratio(
                    b.get("server_cpu_ms_per_req"), a.get("server_cpu_ms_per_req")
                ),
            }
        )
    return out


def _targets(
    agent: list[dict[str, object]],
    ratios: list[dict[str, object]],
    paced: list[dict[str, object]],
) -> dict[str, object]:
    """The issue's bar. 'p99 <= 30 ms at >= 600 req/s with 64 connections' is read from the
    paced run at 600 req/s; the closed loop's p99 at c=64 is queueing (Little's law: about
    64 / throughput), reported beside it."""
    by_c = {r["concurrency"]: r for r in agent}
    rat = {r["concurrency"]: r for r in ratios}
    out: dict[str, object] = {}
    if 1 in by_c:
        v = float(by_c[1]["p50_ms"])  # type: ignore[arg-type]
        out["p50_c1_ms"] = {"value": v, "target": "<= 2.5", "met": v <= TARGETS["p50_c1_ms"]}
    if 64 in by_c:
        rps, p99 = float(by_c[64]["rps"]), float(by_c[64]["p99_ms"])  # type: ignore[arg-type]
        out["rps_c64"] = {"value": rps, "target": ">= 600", "met": rps >= TARGETS["rps_c64"]}
        out["p99_c64_closed_loop_ms"] = {"value": p99, "note": "queueing: ~64 / throughput"}
    at600 = next(
        (r for r in paced if r["concurrency"] == 64 and r["offered_rps"] == TARGETS["rps_c64"]),
        None,
    )
    if at600 is not None:
        p99, rps = float(at600["p99_ms"]), float(at600["rps"])  # type: ignore[arg-type]
        out["p99_c64_at_600rps_ms"] = {
            "value": p99,
            "achieved_rps": rps,
            "target": "<= 30 at >= 600 req/s",
            "met": p99 <= TARGETS["p99_c64_ms"] and rps >= 0.99 * TARGETS["rps_c64"],
        }
    if 64 in rat:
        t = float(rat[64]["throughput_ratio"])  # type: ignore[arg-type]
        out["throughput_ratio_c64"] = {
            "value": t,
            "target": ">= 4",
            "met": t >= TARGETS["throughput_ratio"],
        }
    return out


def _table(
    agent: list[dict[str, object]], base: list[dict[str, object]], ratios: list[dict[str, object]]
) -> Table:
    t = Table(title="POST /v1/infer over loopback (client-side latency)")
    for col in (
        "conc.",
        "agent req/s",
        "agent p50 ms",
        "agent p99 ms",
        "baseline req/s",
        "baseline p50 ms",
        "baseline p99 ms",
        "throughput x",
        "p50 x",
        "p99 x",
        "CPU/req x",
    ):
        t.add_column(col, justify="right")
    for a, b, r in zip(agent, base, ratios, strict=True):
        t.add_row(
            str(a["concurrency"]),
            f"{a['rps']:.0f}",
            f"{a['p50_ms']:.2f}",
            f"{a['p99_ms']:.2f}",
            f"{b['rps']:.0f}",
            f"{b['p50_ms']:.2f}",
            f"{b['p99_ms']:.2f}",
            f"{r['throughput_ratio']:.1f}",
            f"{r['p50_latency_ratio']:.1f}",
            f"{r['p99_latency_ratio']:.1f}",
            f"{r['cpu_efficiency_ratio']:.1f}",
        )
    return t


def _machine() -> dict[str, object]:
    import psutil

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "unknown",
        )
        if Path("/proc/cpuinfo").exists()
        else "unknown",
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "note": "server and load generator share all cores of this machine",
    }


def main() -> None:
    from aivos.shared.paths import clinc150_path, default_bundle_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None, help="default: the default bundle")
    ap.add_argument("--artifacts", type=Path, default=None, help="build artifacts for baseline")
    ap.add_argument("--kb", type=Path, default=_ROOT / "docs" / "examples" / "kb")
    ap.add_argument("--data", type=Path, default=None, help="CLINC150 data_full.json")
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument(
        "--paced",
        default="64@600,64@800,64@1000",
        help="agent only: CONCURRENCY@RATE runs at a fixed offered rate ('' = none)",
    )
    ap.add_argument("--count", type=int, default=5000, help="max recorded requests per level")
    ap.add_argument("--duration", type=float, default=10.0, help="max seconds per level")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds per level, not recorded")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=_ROOT / "benchmarks" / "results" / "edge_load.json")
    ap.add_argument("--stacks", default="agent,baseline")
    ap.add_argument(
        "--agent-env", action="append", default=[], help="KEY=VALUE for the agent (repeatable)"
    )
    ap.add_argument("--profile", type=Path, default=None, help="py-spy profiles to this dir")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, databases)")
    ap.add_argument(
        "--trace-dir", type=Path, default=None, help="the load generator's per-request timings"
    )
    args = ap.parse_args()
    args.levels = [int(x) for x in args.levels.split(",") if x]
    if args.trace_dir:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
    args.paced = [
        (int(c), float(r)) for c, _, r in (x.partition("@") for x in args.paced.split(",") if x)
    ]
    args.bundle = args.bundle or default_bundle_dir()
    if not (args.bundle / "manifest.json").is_file():
        sys.exit(f"no bundle at {args.bundle}: run `aivos models build` or pass --bundle")
    stacks = args.stacks.split(",")
    data = args.data or Path(clinc150_path())
    machine = _machine()
    work = Path(tempfile.mkdtemp(prefix="aivos-edge-load-"))
    queries = work / "queries.json"
    texts = _queries(data, args.seed)
    queries.write_text(json.dumps(texts))
    console.print(f"{len(texts)} CLINC150 test queries (in-scope + oos); work dir {work}")
    results: dict[str, object] = {
        "benchmark": "edge_load",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "config": {
            "levels": args.levels,
            "paced": args.paced,
            "count": args.count,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "queries": len(texts),
            "query_order": "one continuous stream per stack: no repeats within a run's window",
            "bundle": str(args.bundle),
            "bundle_version": json.loads((args.bundle / "manifest.json").read_text())[
                "bundle_version"
            ],
            "baseline_head": "bundle artifacts" if args.artifacts else "logistic regression",
            "agent_env": args.agent_env,
            "profiled": bool(args.profile),
        },
    }
    agent: list[dict[str, object]] = []
    base: list[dict[str, object]] = []
    paced: list[dict[str, object]] = []
    try:
        # Both servers run side by side and the levels alternate between them, so a change in
        # background load on the machine hits both stacks alike.
        with contextlib.ExitStack() as stack:
            servers = {}
            if "agent" in stacks:
                servers["agent"] = (stack.enter_context(_agent(args, work)), agent)
            if "baseline" in stacks:
                servers["baseline"] = (stack.enter_context(_baseline(args, work)), base)
            # Each stack reads the shuffled queries as one continuous stream (a level goes on
            # where the previous one stopped), so a query comes back only after all the
            # others: more of them than the agent's result cache holds, so every request
            # is a miss and the model path is what is measured (each row reports its hit rate).
            offsets = dict.fromkeys(servers, 0)

            def drive(name: str, level: int, rate: float = 0.0) -> dict[str, object]:
                (url, token, pid), _ = servers[name]
                row = _drive(url, token, queries, level, offsets[name], args, pid, name, rate)
                taken = int(row["queries_taken"])  # type: ignore[call-overload]
                offsets[name] = (offsets[name] + taken) % len(texts)
                return row

            for level in args.levels:
                for name, (_, rows) in servers.items():
                    rows.append(drive(name, level))
            if "agent" in servers:
                paced.extend(drive("agent", level, rate) for level, rate in args.paced)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["agent"], results["baseline"], results["agent_paced"] = agent, base, paced
    machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    if agent and base:
        ratios = _ratios(agent, base)
        results["ratios"] = ratios
        console.print(_table(agent, base, ratios))
    else:
        ratios = []
    if agent:
        results["targets"] = _targets(agent, ratios, paced)
        console.print_json(data=results["targets"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
