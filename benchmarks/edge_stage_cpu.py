"""Batch-worker CPU per query, by stage, and old tree vs new tree side by side (issue 16).

What one query costs the thread that serves it (edge/batcher.py's worker: spelling,
tokenizer, onnxruntime, the out-of-scope score, `Prediction`s, knowledge retrieval and the
`Classified` result), measured as thread CPU time (`CLOCK_THREAD_CPUTIME_ID`), which other
load on a shared machine moves much less than wall-clock time.

Each tree (`--new`, default this checkout, and optionally `--base`, e.g. a `git worktree add
/tmp/base HEAD`) runs in its own child process that imports the `aivos` packages from that
tree, loads the bundle, indexes the example KB into a temp dir and then, per round:

* `worker`: one query at a time through `Serving.classify_batch` (what the batch worker runs
  for a batch of one, c=1), thread CPU per query;
* `batcher`: the same queries through a real `MicroBatcher` at c=1 from an asyncio loop:
  the worker thread's CPU per query (queue wake-up and the loop hand-off included) and the
  event loop thread's;
* `stages`: the queries once more with timing proxies around each stage (spelling,
  tokenizer, onnxruntime, ood score, the index's refresh check, usearch, the SQLite row
  lookup); "runtime_python" and "retrieval_python" are what the totals leave over.

Rounds alternate the trees (A B B A A B ...), so background load hits both alike; the
report gives medians over rounds. With `--base`, every query of the check set (CLINC150 val,
in scope + out of scope, 3,100 queries) is also classified and retrieved by both trees, routed
by this tree's router (`route` + `settle`, default policy) and compared: same intent, same
in-scope flag, confidence and MSP within `--tol`, same passages (source, chunk, score within
1e-4), same route. Any difference is listed and fails the run (exit 1).

    python benchmarks/edge_stage_cpu.py --bundle /tmp/q6/full [--base /tmp/base] \
        [--rounds 4] [--n 1000] [--out benchmarks/results/edge_stage_cpu.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent
_KB = _ROOT / "docs" / "examples" / "kb"
_TREE_DIRS = {
    "aivos": "aivos",
    "aivos.shared": "shared",
    "aivos.edge": "edge",
    "aivos.cloud": "cloud",
}


def _use_tree(root: str) -> None:
    """Import the `aivos` packages from `root`'s folders, whatever the installed one points at."""

    class _Tree:
        @staticmethod
        def find_spec(name: str, path: object = None, target: object = None) -> Any:
            if name not in _TREE_DIRS:
                return None
            where = f"{root}/{_TREE_DIRS[name]}"
            return importlib.util.spec_from_file_location(
                name, f"{where}/__init__.py", submodule_search_locations=[where]
            )

    sys.meta_path.insert(0, _Tree)  # type: ignore[arg-type]


# -- child: one tree ----------------------------------------------------------------------
class _Clock:
    """Thread CPU nanoseconds per named stage (only the calling thread's), summed per query
    (`lap` closes one query's row)."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.rows: list[dict[str, int]] = []

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.thread_time_ns
        ns = self.ns
        ns.setdefault(name, 0)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                ns[name] += clock() - start

        return wrapper

    def lap(self) -> None:
        self.rows.append(dict(self.ns))
        for name in self.ns:
            self.ns[name] = 0


def _summary(samples_ns: list[int]) -> tuple[float, float]:
    """(median, mean) in microseconds. The median is the figure to read: a thread's CPU clock
    on a busy virtual machine now and then charges it a long stall (a trivial loop showed
    single steps of 0.27 ms at load 7), which moves the mean."""
    return statistics.median(samples_ns) / 1000, statistics.fmean(samples_ns) / 1000


class _Proxy:
    """Forwards every attribute of `target`; the methods in `timed` are timed, the attributes
    in `inner` are replaced (e.g. by proxies of their own)."""

    def __init__(
        self,
        target: Any,
        clock: _Clock,
        timed: dict[str, str],
        inner: dict[str, Any] | None = None,
    ) -> None:
        self._target = target
        self._timed = {m: clock.timed(stage, getattr(target, m)) for m, stage in timed.items()}
        self._timed.update(inner or {})

    def __getattr__(self, name: str) -> Any:
        timed = self.__dict__["_timed"]
        return timed[name] if name in timed else getattr(self.__dict__["_target"], name)

    def __len__(self) -> int:
        return len(self._target)


def _queries(n: int | None = None) -> list[str]:
    from aivos.shared.paths import clinc150_path

    data = json.loads(clinc150_path().read_text())
    texts = [t for t, _ in data["val"]] + [t for t, _ in data["oos_val"]]
    return texts if n is None else texts[:n]


class _Child:
    def __init__(self, bundle: str, threads: int) -> None:
        from aivos.edge.intent.runtime import IntentModel
        from aivos.edge.knowledge.cli import collect_documents
        from aivos.edge.knowledge.index import KnowledgeIndex
        from aivos.edge.serving import Serving

        self.model = IntentModel.load(bundle, ["cpu"], threads)
        self._tmp = tempfile.TemporaryDirectory(prefix="aivos-stage-")
        self.index = KnowledgeIndex.open(Path(self._tmp.name) / "knowledge", self.model)
        for source, file in collect_documents([_KB]):
            self.index.add_document(source, file.read_text(encoding="utf-8"))
        # the agent's defaults (edge/settings.py: knowledge.top_k, knowledge.min_score)
        self.serving = Serving(self.model, self.index, top_k=3, min_score=0.25)
        self.texts = _queries()

    def check(self) -> dict[str, Any]:
        """Every check query's prediction and passages, one query at a time."""
        out = []
        for text in self.texts:
            done = self.serving.classify_batch([text])[0]
            p = done.prediction
            out.append(
                {
                    "intent": p.intent,
                    "confidence": float(p.confidence),
                    "in_scope": bool(p.in_scope),
                    "msp": None if p.msp is None else float(p.msp),
                    "n_tokens": int(p.n_tokens),
                    "truncated": bool(p.truncated),
                    "passages": [
                        [x.source, int(x.chunk_id), float(x.score)] for x in done.passages
                    ],
                }
            )
        model = self.model
        return {"threshold": model.threshold, "oos": model.manifest.oos_label, "rows": out}

    def worker(self, texts: list[str]) -> dict[str, float]:
        run = self.serving.classify_batch
        for text in texts[:20]:
            run([text])
        clock, samples = time.thread_time_ns, []
        for text in texts:
            start = clock()
            run([text])
            samples.append(clock() - start)
        median, mean = _summary(samples)
        return {"worker_cpu_us": median, "worker_cpu_us_mean": mean}

    def batcher(self, texts: list[str]) -> dict[str, float]:
        from aivos.edge.batcher import MicroBatcher

        async def go() -> dict[str, float]:
            batcher = MicroBatcher(self.serving.classify_batch, max_batch=32, concurrency=1)
            await batcher.start()
            try:
                for text in texts[:20]:
                    await batcher.submit(text)
                (thread,) = batcher._threads
                assert thread.ident is not None
                clock = time.pthread_getcpuclockid(thread.ident)
                # from one submit to the next: the worker's tail after the hand-off included
                marks = [(time.clock_gettime_ns(clock), time.thread_time_ns())]
                for text in texts:
                    await batcher.submit(text)
                    marks.append((time.clock_gettime_ns(clock), time.thread_time_ns()))
                worker = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)]
                loop = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)]
            finally:
                await batcher.close()
            (w_median, w_mean), (l_median, l_mean) = _summary(worker), _summary(loop)
            return {
                "batcher_worker_cpu_us": w_median,
                "batcher_worker_cpu_us_mean": w_mean,
                "batcher_loop_cpu_us": l_median,
                "batcher_loop_cpu_us_mean": l_mean,
            }

        return asyncio.run(go())

    def stages(self, texts: list[str]) -> dict[str, float]:
        clock = _Clock()
        model, index, serving = self.model, self.index, self.serving
        saved = {
            "speller": model.speller,
            "_tokenizer": model._tokenizer,
            "_session": model._session,
            "ood": model.ood,
        }
        saved_index = {"_view": index._view, "_meta": index._meta}
        refresh = index._refresh_if_changed
        classify = model.classify_batch
        try:
            if model.speller is not None:
                model.speller = _Proxy(model.speller, clock, {"correct": "spelling"})  # type: ignore[assignment]
            model._tokenizer = _Proxy(  # type: ignore[assignment]
                model._tokenizer, clock, {"encode_batch": "tokenizer", "encode": "tokenizer"}
            )
            model._session = _Proxy(model._session, clock, {"run": "onnxruntime"})  # type: ignore[assignment]
            if model.ood is not None:
                model.ood = _Proxy(model.ood, clock, {"score": "ood_score"})  # type: ignore[assignment]
            # a tree that calls usearch's compiled search directly (edge/knowledge/index.py
            # `_search`) has it timed as well; the public `search` calls it on the real
            # index, so neither tree counts it twice
            view = index._view
            compiled = getattr(view, "_compiled", None)
            inner = (
                {}
                if compiled is None
                else {"_compiled": _Proxy(compiled, clock, {"search_many": "usearch"})}
            )
            index._view = _Proxy(view, clock, {"search": "usearch"}, inner)  # type: ignore[assignment]
            index._meta = _Proxy(index._meta, clock, {"lookup": "sqlite_lookup"})  # type: ignore[assignment]
            index._refresh_if_changed = clock.timed("index_refresh_check", refresh)  # type: ignore[method-assign]
            model.classify_batch = clock.timed("=classify_total", classify)  # type: ignore[method-assign]
            run = clock.timed("=worker_total", serving.classify_batch)
            for text in texts[:20]:
                run([text])
            clock.lap()
            clock.rows.clear()
            for text in texts:
                run([text])
                clock.lap()
        finally:
            for name, value in saved.items():
                setattr(model, name, value)
            for name, value in saved_index.items():
                setattr(index, name, value)
            del index._refresh_if_changed
            del model.classify_batch
        rows = clock.rows
        # derived per query, then summarised like the measured stages
        model_parts = ("spelling", "tokenizer", "onnxruntime", "ood_score")
        retrieval_parts = ("index_refresh_check", "usearch", "sqlite_lookup")
        for row in rows:
            row["runtime_python"] = row["=classify_total"] - sum(row.get(k, 0) for k in model_parts)
            row["retrieval_python"] = (
                row["=worker_total"]
                - row["=classify_total"]
                - sum(row.get(k, 0) for k in retrieval_parts)
            )
            row["not_onnxruntime"] = row["=worker_total"] - row["onnxruntime"]
        out: dict[str, float] = {}
        for name in rows[0]:
            median, mean = _summary([row[name] for row in rows])
            out[name.lstrip("=")] = round(median, 2)
            out[name.lstrip("=") + "_mean"] = round(mean, 2)
        return out


def _child_main(tree: str, bundle: str, threads: int) -> None:
    _use_tree(tree)
    child = _Child(bundle, threads)
    out = sys.stdout
    sys.stdout = sys.stderr  # logs and prints of the tree go to stderr; stdout carries replies
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        texts = child.texts
        if cmd["op"] == "check":
            reply: Any = child.check()
        else:
            start = cmd["offset"] % len(texts)
            chosen = (texts[start:] + texts[:start])[: cmd["n"]]
            reply = getattr(child, cmd["op"])(chosen)
        print(json.dumps(reply), file=out, flush=True)


# -- parent -------------------------------------------------------------------------------
class _Tree:
    def __init__(self, name: str, root: Path, args: argparse.Namespace) -> None:
        self.name = name
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(root), "--bundle", str(args.bundle)]
            + ["--threads", str(args.threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._read()

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: child exited ({self.proc.wait()})")
        return json.loads(line)

    def ask(self, **cmd: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _compare(
    texts: list[str], base: dict[str, Any], new: dict[str, Any], tol: float
) -> dict[str, Any]:
    """Per query: same intent, in-scope flag, scores within `tol`, passages and route."""
    from aivos.edge.router import RouterPolicy, knowledge_may_answer, route, settle

    policy = RouterPolicy()  # the agent's default policy
    mismatches: list[dict[str, Any]] = []
    worst = {"confidence": 0.0, "msp": 0.0, "passage_score": 0.0}
    routes: dict[str, int] = {}

    def routed(r: dict[str, Any], text: str, side: dict[str, Any]) -> list[str]:
        top = max((p[2] for p in r["passages"]), default=None)
        out = []
        for generator in (False, True):
            decided = route(policy, r["intent"], r["confidence"], side["threshold"], side["oos"])
            settled = settle(
                decided,
                text,
                top,
                answer_min_score=0.3,
                generator=generator,
                answer_out_of_scope=knowledge_may_answer(policy, r["intent"]),
            )
            out.append(f"{settled.decision}/{settled.reason}")
        return out

    for i, (text, a, b) in enumerate(zip(texts, base["rows"], new["rows"], strict=True)):
        why = []
        for key in ("intent", "in_scope", "n_tokens", "truncated"):
            if a[key] != b[key]:
                why.append(f"{key} {a[key]!r} != {b[key]!r}")
        for key in ("confidence", "msp"):
            if (a[key] is None) != (b[key] is None):
                why.append(f"{key} {a[key]!r} != {b[key]!r}")
            elif a[key] is not None:
                diff = abs(a[key] - b[key])
                worst[key] = max(worst[key], diff)
                if diff > tol:
                    why.append(f"{key} differs by {diff:.2e}")
        pa = [(s, c) for s, c, _ in a["passages"]]
        pb = [(s, c) for s, c, _ in b["passages"]]
        if pa != pb:
            why.append(f"passages {pa} != {pb}")
        else:
            for (_, _, sa), (_, _, sb) in zip(a["passages"], b["passages"], strict=True):
                worst["passage_score"] = max(worst["passage_score"], abs(sa - sb))
                if abs(sa - sb) > 1e-4:
                    why.append(f"passage score {sa} != {sb}")
        ra, rb = routed(a, text, base), routed(b, text, new)
        if ra != rb:
            why.append(f"route {ra} != {rb}")
        routes[ra[0]] = routes.get(ra[0], 0) + 1
        if why:
            mismatches.append({"query": i, "text": text, "why": why})
    return {
        "queries": len(texts),
        "mismatches": len(mismatches),
        "examples": mismatches[:20],
        "max_abs_diff": worst,
        "routes_base_no_uplink": routes,
        "tolerance": tol,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--new", type=Path, default=_ROOT, help="tree measured (default: this one)")
    ap.add_argument("--base", type=Path, help="tree to compare with (e.g. a worktree of HEAD)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=1000, help="queries per measurement")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--tol", type=float, default=1e-5, help="score tolerance of the check")
    ap.add_argument("--no-check", action="store_true", help="skip the decision check")
    ap.add_argument("--out", type=Path, default=_ROOT / "benchmarks/results/edge_stage_cpu.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child_main(args.child, str(args.bundle), args.threads)
        return 0
    trees = [_Tree("new", args.new.resolve(), args)]
    if args.base is not None:
        trees.insert(0, _Tree("base", args.base.resolve(), args))
    rows: dict[str, list[dict[str, float]]] = {t.name: [] for t in trees}
    try:
        for r in range(args.rounds):
            order = trees if r % 2 == 0 else trees[::-1]
            for tree in order:
                row: dict[str, float] = {}
                for op in ("worker", "batcher", "stages"):
                    row |= tree.ask(op=op, n=args.n, offset=r * args.n)
                rows[tree.name].append(row)
                print(
                    f"round {r} {tree.name}: worker {row['worker_cpu_us']:.0f} us/q, "
                    f"batcher worker {row['batcher_worker_cpu_us']:.0f} + loop "
                    f"{row['batcher_loop_cpu_us']:.0f} us/q",
                    file=sys.stderr,
                )
        check = None
        if args.base is not None and not args.no_check:
            base, new = (t.ask(op="check") for t in trees)
            check = _compare(_queries(), base, new, args.tol)
    finally:
        for tree in trees:
            with contextlib.suppress(Exception):
                tree.close()
    medians = {
        name: {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
        for name, runs in rows.items()
    }
    result: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "bundle": str(args.bundle),
        "trees": {
            t.name: str((args.base if t.name == "base" else args.new).resolve()) for t in trees
        },
        "queries_per_measurement": args.n,
        "rounds": args.rounds,
        "onnxruntime_threads": args.threads,
        "load_average_after": os.getloadavg(),
        "cpu": platform.processor() or platform.machine(),
        "unit": "thread CPU microseconds per query (median over rounds)",
        "median": medians,
        "rounds_raw": rows,
    }
    if "base" in medians:
        b, n = medians["base"], medians["new"]
        result["new_minus_base_us"] = {
            k: round(n[k] - b[k], 2) for k in b if k in n and isinstance(b[k], float)
        }
    if check is not None:
        result["check"] = check
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                "median": medians,
                "check": check and {k: v for k, v in check.items() if k != "examples"},
            },
            indent=1,
        )
    )
    if check is not None and check["mismatches"]:
        print(json.dumps(check["examples"], indent=1), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
