"""Instructions per pass of the masker (callgrind), this tree next to a git ref, one run.

CPU time on a shared, loaded box varies ±50 %; the number of instructions a call executes
does not. Per locale pack and git ref, one `valgrind --tool=callgrind --dump-before=getppid`
run: the child builds every pass, warms each up, then runs each pass `CALLS` times between
two `os.getppid()` calls, so callgrind writes one profile per pass holding exactly that
pass's instructions. A "call" is what `pii_public.py` times: masking a prompt plus three
passages (one mapping). Passes: the masker; the same four texts through `normalize` and the
shared `Scan`; and per recognizer the masker without it, whose difference to the whole is
that recognizer's marginal cost (what it adds once the `Scan` facts it shares with others
are paid). `--passes IdPack` gives a recognizer's pass alone (its `find_scanned`, net of
building a fresh `Scan`), which also pays for the lazily computed `Scan` facts it uses.

With `--baseline`, the masker's spans at that ref and in this tree are also compared on the
equivalence corpora (`corpus()`: the public presidio-research sentences of the dev split
(not the test split, kept for reporting) and the Nannigalaxy sentences, the generated set,
the PII-free number-dense sentences of `pii_phones.py`, texts joined from them, and the dev
sentences upper-cased), so a cost change that alters what is found shows up in the same run.

With `--span-cache`, the same call with the masker's span cache (`Masker.mask(cache=True)`,
what the escalator does for passages; the prompt is never cached) instead: in one process,
interleaved, "uncached" (no cache), "cold" (every passage a miss: searched, then stored)
and "warm" (the three passages found in the cache); wall-clock and this thread's CPU p50
per round, the median over rounds, and the warm / uncached ratio; plus the instructions of
each (callgrind passes `mask`, `cached-cold`, `cached-warm`), and a check that the masked
texts are the same with and without the cache. The machine's load average goes with it.

    python benchmarks/pii_cost.py --baseline HEAD       # JSON to benchmarks/results/pii_cost.json
    python benchmarks/pii_cost.py --span-cache --json-out benchmarks/results/pii_cost_cache.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PACKS = ("all", "us-east")
CALLS = 10  # instruction counts repeat exactly: a few calls are enough


def _package(ref: str | None) -> Any:
    if ref is None:
        import aivos.shared.residency as pkg

        return pkg
    from pii_public import baseline_package

    return baseline_package(ref, "_pii_cost_baseline")


def _texts() -> list[str]:
    """One call's texts: the prompt, then three passages."""
    from pii_public import _PASSAGE, _PROMPT

    return [_PROMPT, _PASSAGE, _PASSAGE.replace("card", "account"), _PASSAGE.upper()]


def _cached_call(pkg: Any, masker: Any, warm: bool) -> Any:
    """One call as the escalator makes it: the prompt searched, the passages through the
    span cache; `warm=False` empties the cache first, so every passage misses."""
    prompt, *passages = _texts()
    cache = masker.span_cache

    def run() -> list[str]:
        if not warm:
            cache.clear()
        m = pkg.MaskMapping()
        out = [masker.mask(prompt, m).text]
        return out + [masker.mask(p, m, cache=True).text for p in passages]

    return run


def _work(pkg: Any, pack: str, name: str) -> Any:
    """A function doing one call's worth of pass `name` ("mask" = the whole masker)."""
    mod = sys.modules[pkg.__name__ + ".locales"]
    locales = None if pack == "all" else mod.locales_for(pack)
    masker = pkg.default_masker(locales=locales)
    texts = _texts()
    if name in ("cached-cold", "cached-warm"):
        if not hasattr(masker, "span_cache"):
            return None  # a ref from before the span cache
        return _cached_call(pkg, masker, warm=name == "cached-warm")
    if name == "mask" or name.startswith("mask-"):
        if name.startswith("mask-"):  # the masker less one recognizer: its marginal cost
            left = [r for r in masker.recognizers if type(r).__name__ != name[5:]]
            if len(left) == len(masker.recognizers):
                return None
            masker = type(masker)(left)

        def run() -> None:
            m = pkg.MaskMapping()
            for t in texts:
                masker.mask(t, m)

        return run
    norm = sys.modules[pkg.__name__ + ".normalize"].normalize
    Scan = sys.modules[pkg.__name__ + ".scan"].Scan
    normed = [norm(t).text for t in texts]
    if name == "normalize":
        return lambda: [norm(t) for t in texts]
    if name == "Scan":
        return lambda: [Scan(t) for t in normed]
    recs = [r for r in masker.recognizers if type(r).__name__ == name]
    if not recs:
        return None
    rec = recs[0]
    scanned = getattr(rec, "find_scanned", None)
    if scanned is None:  # as in `find_all`: a recognizer without a scanned path gets the text
        return lambda: [rec.find(t) for t in normed]

    def one() -> None:
        for t in normed:
            scanned(Scan(t))

    one.net_of_scan = True  # type: ignore[attr-defined]
    return one


def child(ref: str | None, pack: str, names: list[str]) -> None:
    pkg = _package(ref)
    fns = {}
    for name in names:
        fn = _work(pkg, pack, name)
        if fn is not None:
            fns[name] = fn
    for fn in fns.values():  # warm-up: caches, lazily built tables, the tagger's model
        for _ in range(5):
            fn()
    net = [n for n, fn in fns.items() if getattr(fn, "net_of_scan", False)]
    print(json.dumps([list(fns), net]), flush=True)
    os.getppid()  # marker: callgrind dumps the profile so far (start-up)
    for fn in fns.values():
        for _ in range(CALLS):
            fn()
        os.getppid()  # marker: one profile per pass


def per_call(ref: str | None, pack: str, names: list[str]) -> dict[str, float]:
    """Instructions per call of each pass, from one callgrind run."""
    args = ["--child", "--pack", pack, "--passes", ",".join(names)]
    args += ["--ref", ref] if ref else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", "--dump-before=getppid"]
        cmd += [f"--callgrind-out-file={out}", sys.executable, __file__, *args]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        proc = subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT, text=True)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr[-3000:]}")
        ran, net = json.loads(proc.stdout.strip().splitlines()[-1])
        counts = []
        for i in range(2, len(ran) + 2):  # dump 1 = start-up; dump i = pass i - 1
            m = re.search(r"^summary:\s+(\d+)", Path(f"{out}.{i}").read_text(), re.M)
            assert m is not None
            counts.append(int(m.group(1)))
    per = {name: ir / CALLS for name, ir in zip(ran, counts, strict=True)}
    for name in ran:  # "mask-X" -> "marginal X": what the masker saves without recognizer X
        if name.startswith("mask-"):
            per[f"marginal {name[5:]}"] = per["mask"] - per[name]
    # a recognizer's pass rebuilt its Scan each call: report it net of that
    return {name: ir - (per["Scan"] if name in net else 0.0) for name, ir in per.items()}


RECOGNIZERS = (
    "IbanRecognizer", "CardRecognizer", "SsnRecognizer", "IdPack", "EmailRecognizer",
    "Ipv6Recognizer", "Ipv4Recognizer", "PhoneRecognizer", "DateOfBirthRecognizer",
    "AddressRecognizer", "PersonRecognizer", "TaggerRecognizer",
)  # fmt: skip
# the whole masker, two shared steps, and per recognizer the masker without it (its marginal
# cost: what it adds once the shared `Scan` facts are paid for); `--passes` also takes a
# recognizer's name alone (its pass by itself, net of its own Scan)
PASSES = ("mask", "normalize", "Scan", *(f"mask-{r}" for r in RECOGNIZERS))


def corpus() -> list[str]:
    """The texts the span check runs on (see the module docstring)."""
    import gzip
    import random

    from pii_dataset import generate
    from pii_phones import NON_PII

    data = ROOT / "benchmarks" / "data"
    with gzip.open(data / "presidio_synth_dataset_v2.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    # the dev split only (`pii_public.load("dev")`: even template ids): the test split is
    # kept for reporting, never looked at while changing the masker
    public = [r["text"] for r in rows if r["template_id"] % 2 == 0]
    second = [
        r["text"] for r in json.loads((data / "nannigalaxy_pii_syn_nano_en.json").read_text())
    ]
    texts = public + second + [str(r["text"]) for r in generate(1000, 5)] + list(NON_PII)
    rnd = random.Random(1)
    texts += [rnd.choice([" ", "\n", ". "]).join(rnd.sample(texts, 4)) for _ in range(300)]
    # text written all in capitals (forms, SMS), where the rules read no case
    return texts + [t.upper() for t in public]


def span_check(ref: str) -> dict[str, Any]:
    """Texts of `corpus()` where the masker at `ref` and this tree's find different spans."""
    import aivos.shared.residency as pkg

    old = _package(ref)
    old_spans = sys.modules[old.__name__ + ".spans"].find_all
    old_norm = sys.modules[old.__name__ + ".normalize"].normalize
    from aivos.shared.residency.normalize import normalize
    from aivos.shared.residency.spans import find_all

    texts = corpus()
    differ = []
    for pack in PACKS:
        locales = (
            None if pack == "all" else sys.modules[pkg.__name__ + ".locales"].locales_for(pack)
        )
        new_m, old_m = pkg.default_masker(locales=locales), old.default_masker(locales=locales)
        for t in texts:
            a = [(s.start, s.end, s.entity) for s in old_spans(old_norm(t).text, old_m.recognizers)]
            b = [(s.start, s.end, s.entity) for s in find_all(normalize(t).text, new_m.recognizers)]
            if a != b:
                differ.append({"pack": pack, "text": t[:200], ref: a, "this tree": b})
    return {"texts": len(texts), "packs": list(PACKS), "differ": len(differ), "first": differ[:5]}


def _p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def span_cache_timing(pack: str, iterations: int, repeats: int) -> dict[str, Any]:
    """Wall-clock and thread CPU per call (µs), uncached / cold / warm interleaved in rounds
    of `iterations` calls each, in this process (one core); per variant the median over
    rounds of each round's p50."""
    import time

    import aivos.shared.residency as pkg
    from aivos.shared.residency.locales import locales_for

    masker = pkg.default_masker(locales=None if pack == "all" else locales_for(pack))
    texts = _texts()

    def uncached() -> list[str]:
        m = pkg.MaskMapping()
        return [masker.mask(t, m).text for t in texts]

    warm_masker = pkg.Masker(masker.recognizers)  # the same recognizers, a cache of its own
    variants = {
        "uncached": uncached,
        "cold": _cached_call(pkg, masker, warm=False),
        "warm": _cached_call(pkg, warm_masker, warm=True),
    }
    want = uncached()
    same = {k: fn() == want for k, fn in variants.items()}  # the warm one fills its cache here
    for fn in variants.values():  # warm-up: lazily built tables, the tagger's model
        for _ in range(50):
            fn()
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            wall, cpu = [], []
            for _ in range(iterations):
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                fn()
                cpu.append((time.thread_time_ns() - c0) / 1000)
                wall.append((time.perf_counter_ns() - t0) / 1000)
            rounds[k].append({"p50_us": _p50(wall), "cpu_p50_us": _p50(cpu)})
    out: dict[str, Any] = {"same_masked_text": same}
    for k, rs in rounds.items():
        out[k] = {
            f: round(statistics.median(r[f] for r in rs), 1) for f in ("p50_us", "cpu_p50_us")
        }
        out[k]["rounds_cpu_p50_us"] = [round(r["cpu_p50_us"], 1) for r in rs]
    for k in ("cold", "warm"):
        out[f"cpu_p50_ratio_{k}_over_uncached"] = round(
            out[k]["cpu_p50_us"] / out["uncached"]["cpu_p50_us"], 3
        )
    out["stats_cold"] = msgspec.to_builtins(masker.span_cache.stats())
    out["stats_warm"] = msgspec.to_builtins(warm_masker.span_cache.stats())
    return out


def span_cache_main(args: argparse.Namespace) -> None:
    import platform

    result: dict[str, Any] = {
        "what": "masking a prompt + 3 passages: the passages without the span cache "
        "(uncached), through it emptied first (cold: 3 misses), and found in it (warm: 3 "
        "hits); the prompt is searched in all three. Time: µs per call, median over rounds "
        "of each round's p50 (rounds interleaved); instructions: millions per call "
        f"(callgrind, {CALLS} calls after a warm-up)",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_start": os.getloadavg(),
        },
        "iterations": args.iterations,
        "repeats": args.repeats,
    }
    for pack in args.packs.split(","):
        timing = span_cache_timing(pack, args.iterations, args.repeats)
        ir = per_call(None, pack, ["Scan", "mask", "cached-cold", "cached-warm"])
        instr = {
            "uncached": round(ir["mask"] / 1e6, 3),
            "cold": round(ir["cached-cold"] / 1e6, 3),
            "warm": round(ir["cached-warm"] / 1e6, 3),
        }
        instr["ratio_warm_over_uncached"] = round(instr["warm"] / instr["uncached"], 3)
        instr["ratio_cold_over_uncached"] = round(instr["cold"] / instr["uncached"], 3)
        result[pack] = {"time": timing, "instructions_millions": instr}
        for k in ("uncached", "cold", "warm"):
            t = timing[k]
            print(f"[{pack}] {k:9} wall p50 {t['p50_us']:8.1f} µs  cpu p50 {t['cpu_p50_us']:8.1f} µs"
                  f"  {instr[k]:.3f} M instructions")  # fmt: skip
        print(f"[{pack}] warm / uncached: cpu {timing['cpu_p50_ratio_warm_over_uncached']}, "
              f"instructions {instr['ratio_warm_over_uncached']}; same masked text: "
              f"{timing['same_masked_text']}")  # fmt: skip
    result["machine"]["load_avg_end"] = os.getloadavg()
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json_out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default=None, metavar="GIT_REF")
    ap.add_argument("--passes", default=",".join(PASSES))
    ap.add_argument("--packs", default=",".join(PACKS))
    ap.add_argument(
        "--json-out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "pii_cost.json",
    )
    ap.add_argument(
        "--span-cache",
        action="store_true",
        help="time and count the call with the passages through the span cache (see above)",
    )
    ap.add_argument("--iterations", type=int, default=500, help="calls per round (--span-cache)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (--span-cache)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pack", default="all", help=argparse.SUPPRESS)
    ap.add_argument("--ref", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    names = args.passes.split(",")
    if args.child:
        child(args.ref, args.pack, names)
        return
    if args.span_cache:
        span_cache_main(args)
        return
    if "Scan" not in names:
        names.insert(0, "Scan")
    refs: list[str | None] = [args.baseline, None] if args.baseline else [None]
    result: dict[str, Any] = {
        "what": f"instructions per call, millions (callgrind, {CALLS} calls per pass after a "
        "warm-up, one profile per pass); a call = prompt + 3 passages; recognizer passes net "
        "of building their Scan",
        "baseline": args.baseline,
    }
    if args.baseline:
        check = span_check(args.baseline)
        print(f"spans differ from {args.baseline} on {check['differ']} of {check['texts']} texts "
              f"(packs {', '.join(check['packs'])})")  # fmt: skip
        for d in check["first"]:
            print("  ", d)
        result["span_check"] = check
    for pack in args.packs.split(","):
        runs = {ref or "this tree": per_call(ref, pack, names) for ref in refs}
        table: dict[str, dict[str, float]] = {}
        shown = [n for n in names if not n.startswith("mask-")]
        shown += [f"marginal {n[5:]}" for n in names if n.startswith("mask-")]
        for name in shown:
            row = {}
            for key, ir in runs.items():
                if name not in ir:
                    continue
                row[key] = round(ir[name] / 1e6, 3)
            table[name] = row
            print(f"[{pack}] {name:24} " + "  ".join(f"{k}: {v:.3f} M" for k, v in row.items()))
        result[pack] = table
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
