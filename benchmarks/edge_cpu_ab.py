"""Edge request-path CPU, old tree vs new tree, side by side (issue 16, edge load).

Runs `aivos edge serve` from two source trees at once (`--base`: e.g. a `git worktree add
/tmp/base HEAD`; `--new`: this checkout), each with a fresh data dir, a client token and
the example KB, and drives both with the load generator (benchmarks/_loadgen.py) in
alternating rounds (A B B A A B ...), so background load on a shared machine hits both
alike. Reports, per tree and concurrency level, the server's CPU milliseconds per request
(process user+system CPU over the recorded window / completed requests: robust to other
load on the machine, unlike wall-clock latency), and p50 / req/s for reference, as the
median over rounds; writes JSON. `--paced 64@600` adds levels at a fixed offered rate
(the load generator's `--rate`: latency from the scheduled send time, wrk2-style).

`--check N` then sends the first N CLINC150 validation queries (in scope + out of scope,
3,100 in all) to both agents one at a time and compares what each served: intent,
confidence, decision, answered_by, answer, passages (text, source, score, document, chunk),
truncated. A fallback's answer names its job, whose id differs between the two agents: the
job id is replaced by a placeholder before comparing. Any difference is listed and fails the
run (exit 1).

    python benchmarks/edge_cpu_ab.py --base /tmp/base [--new .] [--levels 1,64] \
        [--paced 64@600] [--rounds 3] [--duration 8] [--check 3100] \
        [--out benchmarks/results/edge_cpu_ab.json]

A base tree without git state changes: `mkdir /tmp/base && git archive HEAD | tar -x -C
/tmp/base`.

Each tree is imported from its own folders (aivos/, shared/, edge/, cloud/) whatever the
installed editable package points at. `--profile DIR` records a py-spy profile of each
server at each level in the last round (needs `py-spy` on PATH).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_load import _cpu_seconds, _free_port, _queries, _server, _thread_cpu  # noqa: E402

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent
_PY = sys.executable

# Imports the `aivos` packages from the tree named by argv[1], then runs the CLI.
_LAUNCH = """
import importlib.util, runpy, sys
root = sys.argv.pop(1)
dirs = {"aivos": "aivos", "aivos.shared": "shared", "aivos.edge": "edge", "aivos.cloud": "cloud"}
class _Tree:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in dirs:
            return None
        where = f"{root}/{dirs[name]}"
        return importlib.util.spec_from_file_location(
            name, f"{where}/__init__.py", submodule_search_locations=[where])
sys.meta_path.insert(0, _Tree)
sys.argv[0] = "aivos"
runpy.run_module("aivos", run_name="__main__", alter_sys=True)
"""


def _aivos(tree: Path) -> list[str]:
    return [_PY, "-c", _LAUNCH, str(tree)]


@contextlib.contextmanager
def _agent(tree: Path, work: Path, kb: Path, bundle: list[str]) -> Iterator[tuple[str, str, int]]:
    data = work / "data"
    env = dict(os.environ)
    env["AIVOS_LIMITS__RATE_PER_SECOND"] = "100000"  # measure serving, not the limiter
    env["AIVOS_LIMITS__RATE_BURST"] = "100000"
    created = subprocess.run(
        [*_aivos(tree), "tokens", "create", "--data-dir", str(data), "--scope", "client"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=work,
    )
    token = created.stdout.strip().splitlines()[-1].strip()
    subprocess.run(
        [*_aivos(tree), "kb", "add", "--data-dir", str(data), *bundle, str(kb)],
        capture_output=True,
        check=True,
        env=env,
        cwd=work,
    )
    port = _free_port()
    cmd = [*_aivos(tree), "edge", "serve", "--data-dir", str(data), *bundle, "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with _server(cmd, env, f"{base}/readyz", work / "agent.log") as pid:
        yield f"{base}/v1/infer", token, pid


def _run(
    url: str,
    token: str,
    queries: Path,
    level: int,
    offset: int,
    pid: int,
    args: argparse.Namespace,
    profile: Path | None,
    rate: float = 0.0,
) -> dict[str, object]:
    proc = subprocess.Popen(
        [
            _PY,
            str(_ROOT / "benchmarks" / "_loadgen.py"),
            *("--url", url, "--token", token, "--queries", str(queries)),
            *("--concurrency", str(level), "--count", "1000000"),
            *("--duration", str(args.duration), "--warmup", str(args.warmup)),
            *("--offset", str(offset), "--rate", str(rate)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(args.warmup)
    spy = None
    if profile is not None:
        spy = subprocess.Popen(
            ["py-spy", "record", "-p", str(pid), "-o", str(profile), "-f", "raw", "-r", "250"]
            + ["-d", str(int(args.duration))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    cpu0, t0, threads0 = _cpu_seconds(pid), time.perf_counter(), _thread_cpu(pid)
    stdout, _ = proc.communicate()
    cpu1, t1, threads1 = _cpu_seconds(pid), time.perf_counter(), _thread_cpu(pid)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode})")
    if spy is not None:
        spy.wait()
    row = json.loads(stdout.strip().splitlines()[-1])
    # the server's CPU over the same window the generator recorded (it stops at its deadline)
    rps = float(row["rps"])
    row["server_cpu_ms_per_req"] = round(1000 * (cpu1 - cpu0) / (t1 - t0) / rps, 3) if rps else None
    # The busiest thread is the batch worker (onnxruntime runs in it, retrieval right after):
    # its code is the same in both trees, so "the rest / the model thread" is a yardstick that
    # the machine's other load moves much less than absolute CPU milliseconds.
    spent = sorted((threads1[t] - threads0.get(t, 0.0) for t in threads1), reverse=True)
    if rps and spent and spent[0] > 0:
        per_req = 1000 / (rps * (t1 - t0))
        row["model_thread_cpu_ms_per_req"] = round(spent[0] * per_req, 3)
        row["rest_cpu_ms_per_req"] = round(sum(spent[1:]) * per_req, 3)
        row["rest_over_model_thread"] = round(sum(spent[1:]) / spent[0], 4)
        # the main thread is the event loop (HTTP, the API and the pipeline's async code)
        loop = threads1.get(pid, 0.0) - threads0.get(pid, 0.0)
        row["event_loop_cpu_ms_per_req"] = round(loop * per_req, 3)
        row["event_loop_over_model_thread"] = round(loop / spent[0], 4)
    return row


def _served(url: str, token: str, text: str) -> dict[str, Any]:
    """What one agent serves for `text`: the decision fields of its answer."""
    req = urllib.request.Request(
        url,
        data=json.dumps({"text": text}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = json.loads(resp.read())
    answer = body.get("answer")
    if answer and body.get("job_id"):
        answer = answer.replace(body["job_id"], "<job>")
    return {
        "intent": body["intent"],
        "confidence": body["confidence"],
        "decision": body["decision"],
        "answered_by": body.get("answered_by"),
        "answer": answer,
        "passages": [
            [p["source"], p["chunk_id"], p["doc_id"], p["score"], p["text"]]
            for p in body["passages"]
        ],
        "truncated": body.get("truncated"),
    }


def _check(servers: dict[str, tuple[str, str, int]], texts: list[str], n: int) -> dict[str, object]:
    """Both agents' served decisions for the first `n` check queries, compared field by field
    (documents get their own ids in each agent: passages compare by source, chunk order and
    score, and their text)."""
    mismatches: list[dict[str, object]] = []
    decisions: dict[str, int] = {}
    for i, text in enumerate(texts[:n]):
        got = {name: _served(url, token, text) for name, (url, token, _) in servers.items()}
        a, b = got["base"], got["new"]
        for side in (a, b):  # document ids are made per agent when the KB is indexed
            side["passages"] = [[s, c, sc, t] for s, c, _, sc, t in side["passages"]]  # type: ignore[misc]
        why = [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]
        decisions[str(a["decision"])] = decisions.get(str(a["decision"]), 0) + 1
        if why:
            mismatches.append({"query": i, "text": text, "why": why})
    return {
        "queries": min(n, len(texts)),
        "mismatches": len(mismatches),
        "examples": mismatches[:20],
        "decisions_base": decisions,
        "compared": "intent, confidence, decision, answered_by, answer (job id masked), "
        "passages (source, chunk, score, text), truncated",
    }


def _check_queries() -> list[str]:
    from aivos.shared.paths import clinc150_path

    data = json.loads(Path(clinc150_path()).read_text())
    return [t for t, _ in data["val"]] + [t for t, _ in data["oos_val"]]


def main() -> int:
    from aivos.shared.paths import clinc150_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="baseline source tree")
    ap.add_argument("--new", type=Path, default=_ROOT, help="new source tree (default: here)")
    ap.add_argument("--bundle", type=Path, default=None, help="default: the default bundle")
    ap.add_argument("--kb", type=Path, default=_ROOT / "docs" / "examples" / "kb")
    ap.add_argument("--levels", default="1,64")
    ap.add_argument("--paced", default="", help="CONCURRENCY@RATE levels at a fixed offered rate")
    ap.add_argument("--check", type=int, default=0, help="compare served decisions on N queries")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--profile", type=Path, default=None, help="py-spy profiles to this dir")
    ap.add_argument(
        "--out", type=Path, default=_ROOT / "benchmarks" / "results" / "edge_cpu_ab.json"
    )
    args = ap.parse_args()
    levels: list[tuple[int, float]] = [(int(x), 0.0) for x in args.levels.split(",") if x]
    levels += [
        (int(c), float(r)) for c, _, r in (x.partition("@") for x in args.paced.split(",") if x)
    ]
    bundle = ["--bundle", str(args.bundle.resolve())] if args.bundle else []
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    work = Path(tempfile.mkdtemp(prefix="aivos-edge-ab-"))
    queries = work / "queries.json"
    texts = _queries(Path(clinc150_path()), 0)
    queries.write_text(json.dumps(texts))
    rows: dict[str, dict[str, list[dict[str, object]]]] = {
        name: {_name(lv): [] for lv in levels} for name in trees
    }
    check = None
    load0 = os.getloadavg()
    try:
        with contextlib.ExitStack() as stack:
            servers = {}
            for name, tree in trees.items():
                (work / name).mkdir()
                servers[name] = stack.enter_context(_agent(tree, work / name, args.kb, bundle))
            offsets = dict.fromkeys(trees, 0)
            order = list(trees)
            for rnd in range(args.rounds):
                for level, rate in levels:
                    for name in order:
                        url, token, pid = servers[name]
                        profile = None
                        if args.profile is not None and rnd == args.rounds - 1:
                            args.profile.mkdir(parents=True, exist_ok=True)
                            profile = args.profile / f"{name}_{_name((level, rate))}.txt"
                        row = _run(
                            url, token, queries, level, offsets[name], pid, args, profile, rate
                        )
                        offsets[name] = (offsets[name] + int(row["queries_taken"])) % len(texts)  # type: ignore[call-overload]
                        rows[name][_name((level, rate))].append(row)
                        print(
                            f"round {rnd} {name:>4} {_name((level, rate)):<9} {row['rps']:>7} "
                            f"req/s p50 {row['p50_ms']:>7} ms p99 {row['p99_ms']:>7} ms  "
                            f"server {row['server_cpu_ms_per_req']} "
                            f"ms CPU/req (model thread {row.get('model_thread_cpu_ms_per_req')}, "
                            f"loop {row.get('event_loop_cpu_ms_per_req')}, "
                            f"rest {row.get('rest_cpu_ms_per_req')}, rest/model "
                            f"{row.get('rest_over_model_thread')})  statuses={row['statuses']}",
                            flush=True,
                        )
                    order.reverse()  # A B, B A, A B ...: neither tree always runs first
            if args.check:
                check = _check(servers, _check_queries(), args.check)
                print(f"check: {json.dumps({k: v for k, v in check.items() if k != 'examples'})}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, object] = {}
    for lv in levels:
        per: dict[str, dict[str, float]] = {}
        for name in trees:
            rs = rows[name][_name(lv)]
            per[name] = {
                key: round(statistics.median(float(r[key]) for r in rs if key in r), 4)  # type: ignore[arg-type]
                for key in (
                    "server_cpu_ms_per_req",
                    "model_thread_cpu_ms_per_req",
                    "rest_cpu_ms_per_req",
                    "rest_over_model_thread",
                    "event_loop_cpu_ms_per_req",
                    "event_loop_over_model_thread",
                    "p50_ms",
                    "p99_ms",
                    "rps",
                )
            }
        cut = per["base"]["server_cpu_ms_per_req"] - per["new"]["server_cpu_ms_per_req"]
        rest = 1 - per["new"]["rest_over_model_thread"] / per["base"]["rest_over_model_thread"]
        loop = 1 - (
            per["new"]["event_loop_over_model_thread"] / per["base"]["event_loop_over_model_thread"]
        )
        per["change"] = {
            "server_cpu_ms_per_req_saved": round(cut, 3),
            "rest_over_model_thread_cut": round(rest, 3),  # fraction of the non-model CPU
            "event_loop_over_model_thread_cut": round(loop, 3),  # fraction of the loop's CPU
        }
        summary[_name(lv)] = per
        print(f"{_name(lv)}: {json.dumps(per)}")
    result = {
        "benchmark": "edge_cpu_ab",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "trees": {k: str(v) for k, v in trees.items()},
        "config": {
            "levels": [_name(lv) for lv in levels],
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "bundle": str(args.bundle) if args.bundle else "the default bundle",
        },
        "loadavg": {
            "before": [round(x, 2) for x in load0],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "cpu_count": os.cpu_count(),
        "summary": summary,
        "rows": rows,
    }
    if check is not None:
        result["check"] = check
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if check is not None and check["mismatches"]:
        print(json.dumps(check["examples"], indent=1), file=sys.stderr)
        return 1
    return 0


def _name(level: tuple[int, float]) -> str:
    """ "c1" for a closed loop at concurrency 1, "c64@600" for 64 connections paced at 600/s."""
    concurrency, rate = level
    return f"c{concurrency}" + (f"@{rate:g}" if rate else "")


if __name__ == "__main__":
    sys.exit(main())
