"""Spelling correction before intent classification (edge/intent/spelling.py): quality on
typo-perturbed CLINC150 and its cost, side by side with no correction in the same run.

    python benchmarks/intent_typos.py val  --bundle DIR [--bundle DIR ...]
    python benchmarks/intent_typos.py test --bundle DIR [--bundle DIR ...]
    python benchmarks/intent_typos.py cost --bundle DIR
    python benchmarks/intent_typos.py heldout [--sets banking77,hwu64] [--k 10]

`val` chooses: it sweeps the corrector's options one at a time around the defaults on
CLINC150 *val*, perturbed with seed 7 (the test evaluation uses seed 13), for each bundle.
`test` runs once with the chosen defaults through the real runtime path
(`IntentModel.load(spelling=...)` + `evaluate`, what `aivos intents eval` runs): clean and
perturbed, correction off / on with general English only (a bundle built before `words.txt`)
/ on with the bundle's training words. `cost` measures the corrector alone per query (p50 /
p99 µs, fresh cache) on clean and perturbed test queries, single-query classify() with and
without it (interleaved), and the load time and memory a corrector adds to `IntentModel.load`
(fresh subprocesses). `heldout` checks that it generalises: see `phase_heldout`.

Bundles built before `words.txt` existed get it retrofitted into a temporary copy from the
training file they were built on (`--train`, default CLINC150 full), exactly as the build
now writes it. Results are merged into benchmarks/results/intent_typos.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import numpy as np

from aivos.edge.intent.evaluate import evaluate, perturb_typos
from aivos.edge.intent.runtime import IntentModel
from aivos.edge.intent.spelling import SpellingCorrector, SpellingOptions, english_counts
from aivos.shared.bundle import load_bundle_manifest, sha256_file, write_manifest
from aivos.shared.datasets import Example, load_examples
from aivos.shared.paths import clinc150_path
from aivos.shared.vocabulary import (
    VOCABULARY_FILE,
    Vocabulary,
    count_words,
    read_vocabulary,
    write_vocabulary,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "intent_typos.json"
VAL_SEED = 7  # choosing; the test evaluation keeps `aivos intents eval`'s seed 13
TEST_SEED = 13
RATE = 0.3
Factory = Callable[[], SpellingCorrector]


def with_words(bundle: Path, train_spec: str, tmp: Path) -> Path:
    """`bundle` itself when it lists `words.txt`, else a copy with it added (as the build
    writes it: the training rows' words, manifest hashes updated)."""
    manifest = load_bundle_manifest(bundle)
    if VOCABULARY_FILE in manifest.files:
        return bundle
    copy = tmp / bundle.name
    shutil.copytree(bundle, copy)
    write_vocabulary(copy / VOCABULARY_FILE, count_words(e.text for e in load_examples(train_spec)))
    files = {**manifest.files, VOCABULARY_FILE: sha256_file(copy / VOCABULARY_FILE)}
    write_manifest(copy, msgspec.structs.replace(manifest, files=files))
    return copy


class _Cached:
    """Predictions of an uncorrected model, memoised by text: the sweep's variants share
    most of their texts."""

    def __init__(self, model: IntentModel) -> None:
        self.model = model
        self.memo: dict[str, tuple[str, float]] = {}

    def scores(self, texts: Sequence[str], truth: Sequence[str]) -> dict[str, float]:
        todo = sorted({t for t in texts if t not in self.memo}, key=len)
        for s in range(0, len(todo), 64):
            chunk = todo[s : s + 64]
            for t, p in zip(chunk, self.model.classify_batch(chunk), strict=True):
                self.memo[t] = (p.intent, p.confidence)
        oos, thr = self.model.manifest.oos_label, self.model.threshold
        n_in = ok_in = n_oos = ok_oos = 0
        for t, label in zip(texts, truth, strict=True):
            intent, conf = self.memo[t]
            accepted = conf >= thr and intent != oos
            if label == oos:
                n_oos += 1
                ok_oos += not accepted
            else:
                n_in += 1
                ok_in += accepted and intent == label
        return {"in_scope": round(ok_in / n_in, 4), "oos_recall": round(ok_oos / max(1, n_oos), 4)}


def _variants(words: Vocabulary, tokenizer_words: dict[str, int]) -> dict[str, Factory]:
    base = SpellingOptions()

    def make(domain: Vocabulary | dict[str, int] | None, **changes: object) -> Factory:
        return lambda: SpellingCorrector(domain, msgspec.structs.replace(base, **changes))

    n_english = len(english_counts())
    return {
        "defaults (bundle words)": make(words),
        "english only (old bundle)": make(None),
        "wordpiece words (load-time)": make(tokenizer_words),
        "use_pairs=False": make(words, use_pairs=False),
        "min_length=4": make(words, min_length=4),
        "min_length=4 english_known=0 (all English known)": make(
            words, min_length=4, english_known=0
        ),
        "english_known=10000": make(words, english_known=10000),
        "english_known=40000": make(words, english_known=40000),
        "english_targets=0": make(words, english_targets=0),
        "english_targets=5000": make(words, english_targets=5000),
        f"english_targets={n_english}": make(words, english_targets=n_english),
        "long_word=8 (2 edits)": make(words, long_word=8),
    }


def _tokenizer_words(bundle: Path) -> dict[str, int]:
    """Whole-word entries of the bundle's wordpiece vocabulary, ranked by English frequency:
    the alternative to a build-time word list (derived at load, no build change)."""
    vocab = json.loads((bundle / "tokenizer.json").read_bytes())["model"]["vocab"]
    english = english_counts()
    return {w: english.get(w, 1) for w in vocab if w.isascii() and w.isalpha() and len(w) > 1}


def phase_val(bundles: Sequence[Path], train_spec: str, tmp: Path) -> dict[str, object]:
    val = load_examples(f"{clinc150_path()}#val")
    truth = [e.label for e in val]
    clean = [e.text for e in val]
    noisy = perturb_typos(clean, RATE, seed=VAL_SEED)
    out: dict[str, object] = {"split": "CLINC150 val", "seed": VAL_SEED, "rate": RATE}
    for bundle in bundles:
        path = with_words(bundle, train_spec, tmp)
        words = read_vocabulary(path / VOCABULARY_FILE)
        cached = _Cached(IntentModel.load(path, intra_op_threads=1, spelling=False))
        rows: dict[str, object] = {
            "no correction": {
                "clean": cached.scores(clean, truth),
                "typos": cached.scores(noisy, truth),
            }
        }
        for name, factory in _variants(words, _tokenizer_words(path)).items():
            t0 = time.perf_counter()
            corrector = factory()
            build_s = time.perf_counter() - t0
            rows[name] = {
                "clean": cached.scores([corrector.correct(t) for t in clean], truth),
                "typos": cached.scores([corrector.correct(t) for t in noisy], truth),
                "targets": corrector.n_targets,
                "build_s": round(build_s, 3),
            }
            print(bundle.name, name, rows[name], flush=True)
        out[bundle.name] = rows
    return out


def phase_test(bundles: Sequence[Path], train_spec: str, tmp: Path) -> dict[str, object]:
    test = load_examples(f"{clinc150_path()}#test")
    noisy_texts = perturb_typos([e.text for e in test], RATE, seed=TEST_SEED)
    noisy = [Example(t, e.label) for t, e in zip(noisy_texts, test, strict=True)]
    out: dict[str, object] = {
        "split": "CLINC150 test",
        "seed": TEST_SEED,
        "rate": RATE,
        "options": msgspec.structs.asdict(SpellingOptions()),
    }
    for bundle in bundles:
        configs = {
            "off": (bundle, False),
            # what a bundle without words.txt would get from English alone (the runtime
            # leaves such bundles uncorrected because of this row)
            "on, english only (bundle without words.txt)": (bundle, None),
            "on, bundle words": (with_words(bundle, train_spec, tmp), True),
        }
        rows = {}
        for name, (path, spelling) in configs.items():
            model = IntentModel.load(path, intra_op_threads=1, spelling=bool(spelling))
            if spelling is None:
                model.speller = SpellingCorrector()
            c = evaluate(model, test, latency_samples=0)
            p = evaluate(model, noisy, latency_samples=0)
            rows[name] = {
                "clean_in_scope": round(c.in_scope_accuracy, 4),
                "typos_in_scope": round(p.in_scope_accuracy, 4),
                "drop_points": round(100 * (c.in_scope_accuracy - p.in_scope_accuracy), 2),
                "clean_oos_recall": round(c.oos_recall, 4),
                "typos_oos_recall": round(p.oos_recall, 4),
            }
            print(bundle.name, name, rows[name], flush=True)
        out[bundle.name] = {"bundle_version": model.version, **rows}
    return out


def phase_heldout(sets: Sequence[str], tmp: Path, k: int) -> dict[str, object]:
    """Does the correction generalise past CLINC150? A cheap bundle per public held-out set
    (benchmarks/heldout_intents.py's data and K-shot sample; the frozen-encoder build of
    `aivos up`, minutes on CPU, not the full recipe): its test split clean and perturbed,
    correction off / on. Nothing is chosen here."""
    sys.path.insert(0, str(ROOT))
    from aivos.cloud.modelbuild.frozen_build import build_frozen_bundle
    from benchmarks.heldout_intents import BANKING77_GIT, HWU64_GIT, VAL_ROWS, banking77, hwu64
    from benchmarks.heldout_intents import sample as sample_k

    loaders = {"banking77": (banking77, BANKING77_GIT), "hwu64": (hwu64, HWU64_GIT)}
    out: dict[str, object] = {"k": k, "seed": TEST_SEED, "rate": RATE, "build": "frozen encoder"}
    for name in sets:
        load, git_dir = loaders[name]
        train, val = sample_k(load(git_dir, "train"), k, VAL_ROWS, seed=1)
        test = load(git_dir, "test")
        layout = {
            "train": [[e.text, e.label] for e in train],
            "val": [[e.text, e.label] for e in val],
            "test": [[e.text, e.label] for e in test],
            **{f"oos_{split}": [] for split in ("train", "val", "test")},
        }
        data = tmp / f"{name}.json"
        data.write_text(json.dumps(layout))
        t0 = time.perf_counter()
        build_frozen_bundle(data, tmp / f"bundle-{name}")
        build_s = time.perf_counter() - t0
        noisy_texts = perturb_typos([e.text for e in test], RATE, seed=TEST_SEED)
        noisy = [Example(t, e.label) for t, e in zip(noisy_texts, test, strict=True)]
        rows: dict[str, object] = {"n_test": len(test), "build_s": round(build_s, 1)}
        for spelling in (False, True):
            model = IntentModel.load(tmp / f"bundle-{name}", intra_op_threads=1, spelling=spelling)
            c = evaluate(model, test, latency_samples=0)
            p = evaluate(model, noisy, latency_samples=0)
            rows["on" if spelling else "off"] = {
                "clean_label_accuracy": round(c.label_accuracy, 4),
                "typos_label_accuracy": round(p.label_accuracy, 4),
                "clean_in_scope": round(c.in_scope_accuracy, 4),
                "typos_in_scope": round(p.in_scope_accuracy, 4),
                "drop_points": round(100 * (c.in_scope_accuracy - p.in_scope_accuracy), 2),
            }
            print(name, spelling, rows, flush=True)
        out[name] = rows
    return out


_LOAD_PROBE = """
import json, resource, sys, time
from aivos.edge.intent.runtime import IntentModel
t0 = time.perf_counter()
m = IntentModel.load(sys.argv[1], intra_op_threads=1, spelling=sys.argv[2] == "on")
s = time.perf_counter() - t0
rss = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
print(json.dumps({"load_s": s, "rss_mb": rss}))
"""


def _load_cost(bundle: Path, spelling: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_PROBE, str(bundle), spelling],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _p(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
    }


def phase_cost(bundle: Path, train_spec: str, tmp: Path, n: int) -> dict[str, object]:
    path = with_words(bundle, train_spec, tmp)
    test = [e.text for e in load_examples(f"{clinc150_path()}#test")][:n]
    noisy = perturb_typos(test, RATE, seed=TEST_SEED)
    words = read_vocabulary(path / VOCABULARY_FILE)
    out: dict[str, object] = {"bundle": bundle.name, "queries": len(test)}
    for name, texts in (("clean", test), ("typos", noisy)):
        corrector = SpellingCorrector(words)  # fresh cache: every typo pays its lookup
        us = []
        for t in texts:
            t0 = time.perf_counter()
            corrector.correct(t)
            us.append((time.perf_counter() - t0) * 1e6)
        out[f"corrector_us_{name}"] = _p(us)
    on = IntentModel.load(path, intra_op_threads=1, spelling=True)
    off = IntentModel.load(path, intra_op_threads=1, spelling=False)
    on.speller = SpellingCorrector(words)  # a fresh cache again
    timings: dict[str, list[float]] = {"off": [], "on": []}
    for t in noisy:  # interleaved: both see the same load on the box
        for name, model in (("off", off), ("on", on)):
            t0 = time.perf_counter()
            model.classify(t)
            timings[name].append((time.perf_counter() - t0) * 1e6)
    out["classify_us_typos"] = {k: _p(v) for k, v in timings.items()}
    runs = {k: [_load_cost(path, k) for _ in range(3)] for k in ("off", "on")}
    out["load"] = {
        k: {
            "load_s_median": round(float(np.median([r["load_s"] for r in v])), 3),
            "rss_mb_median": round(float(np.median([r["rss_mb"] for r in v])), 1),
        }
        for k, v in runs.items()
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("phase", choices=["val", "test", "cost", "heldout"])
    ap.add_argument("--bundle", type=Path, action="append", default=[])
    ap.add_argument("--sets", default="banking77,hwu64", help="heldout: public sets to use")
    ap.add_argument("--k", type=int, default=10, help="heldout: training rows per intent")
    ap.add_argument("--train", default=str(clinc150_path()), help="what the bundles trained on")
    ap.add_argument("--queries", type=int, default=2000, help="cost: test queries timed")
    ap.add_argument("--name", help="key of the results file to write (default: the phase)")
    args = ap.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="intent-typos-") as tmp_name:
        tmp = Path(tmp_name)
        if args.phase == "val":
            result = phase_val(args.bundle, args.train, tmp)
        elif args.phase == "test":
            result = phase_test(args.bundle, args.train, tmp)
        elif args.phase == "cost":
            result = phase_cost(args.bundle[0], args.train, tmp, args.queries)
        else:
            result = phase_heldout(args.sets.split(","), tmp, args.k)
    result["command"] = " ".join(["python", *sys.argv])
    result["seconds"] = round(time.time() - started, 1)
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    merged = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    merged[args.name or args.phase] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
