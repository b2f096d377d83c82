"""The masker on PUBLIC labelled PII data nobody here wrote: per-entity recall/precision + cost.

Data: Microsoft presidio-research `data/synth_dataset_v2.json` (MIT licence, Copyright (c)
Microsoft Corporation; 1,500 sentences with character spans, templates filled from
FakeNameGenerator records), repository commit 7622dec. Vendored, reduced to id/template/text/
spans, as `benchmarks/data/presidio_synth_dataset_v2.jsonl.gz` (74 KB).

Split: by template, `template_id % 2` -> 0 = dev (rules were developed looking at it), 1 = test
(not looked at while developing). Report both; quote the test split.

Measures, the way a data-protection officer would:
- recall: a gold value counts as masked when every character of it lies inside a masked span
  (of any type: a street number masked as a phone has not left the site);
- precision: a masked span of type T is correct when it overlaps a gold span of T's types;
- PII-free sentences changed: sentences without any gold span that masking changed.

    python benchmarks/pii_public.py                  # all, writes benchmarks/results/pii_public.json
    python benchmarks/pii_public.py --split dev --errors 30
    python benchmarks/pii_public.py --baseline 1c4261d --baseline 1c4261d~1   # before/after

Latency is timed for two locale packs: every country known ("all", what a site gets when its
region implies no pack) and the pack of region "us-east" (US, CA, MX).
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import io
import json
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aivos.shared.residency import MaskMapping, default_masker  # noqa: E402
from aivos.shared.residency.locales import locales_for  # noqa: E402
from aivos.shared.residency.normalize import normalize  # noqa: E402
from aivos.shared.residency.recognizers import find_all  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "presidio_synth_dataset_v2.jsonl.gz"

# gold type -> the masker entities that count as a hit for precision
GOLD_FOR: dict[str, set[str]] = {
    "CREDIT_CARD": {"CARD"},
    "PHONE_NUMBER": {"PHONE"},
    "IBAN_CODE": {"IBAN"},
    "EMAIL_ADDRESS": {"EMAIL"},
    "US_SSN": {"SSN"},
    "IP_ADDRESS": {"IPV4", "IPV6"},
    "PERSON": {"PERSON"},
    "STREET_ADDRESS": {"ADDRESS"},
    "DATE_TIME": {"DATE_OF_BIRTH"},
}
PRED_OK: dict[str, set[str]] = {}
for _g, _ps in GOLD_FOR.items():
    for _p in _ps:
        PRED_OK.setdefault(_p, set()).add(_g)
PRED_OK["ADDRESS"] |= {"ZIP_CODE", "GPE"}  # city/postcode lines of an address block


def load(split: str) -> list[dict[str, Any]]:
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if split == "all":
        return rows
    want = 0 if split == "dev" else 1
    return [r for r in rows if r["template_id"] % 2 == want]


def _is_full_date(value: str) -> bool:
    return sum(c.isdigit() for c in value) >= 6


def masker_parts(pkg: Any = None) -> tuple[Any, Any, Any]:
    """(default masker, `normalize`, `find_all`) of `pkg` (a residency package, e.g. a git
    ref's from `baseline_package`; None = this tree's)."""
    if pkg is None:
        return default_masker(), normalize, find_all
    return (
        pkg.default_masker(),
        sys.modules[pkg.__name__ + ".normalize"].normalize,
        sys.modules[pkg.__name__ + ".spans"].find_all,
    )


def evaluate(rows: list[dict[str, Any]], n_errors: int = 0, pkg: Any = None) -> dict[str, Any]:
    """Recall, precision and PII-free sentences changed of the masker of `pkg` (a residency
    package, e.g. a git ref's from `baseline_package`; None = this tree's)."""
    masker, norm_of, spans_of = masker_parts(pkg)
    gold_stats: dict[str, dict[str, int]] = {g: {"values": 0, "masked": 0} for g in GOLD_FOR}
    gold_stats["DATE_TIME (full dates)"] = {"values": 0, "masked": 0}
    pred_stats: dict[str, dict[str, int]] = {}
    clean = clean_changed = 0
    errors: list[str] = []
    for r in rows:
        text = r["text"]
        norm = norm_of(text)
        spans = [
            (*norm.span(s.start, s.end), s.entity) for s in spans_of(norm.text, masker.recognizers)
        ]
        covered = bytearray(len(text))
        for s, e, _ in spans:
            covered[s:e] = b"\x01" * (e - s)
        if not r["spans"]:
            clean += 1
            if spans:
                clean_changed += 1
                if len(errors) < n_errors:
                    errors.append(
                        f"CLEAN CHANGED {[(text[s:e], t) for s, e, t in spans]} :: {text!r}"
                    )
        for s, e, g in r["spans"]:
            keys = [g] if g in GOLD_FOR else []
            if g == "DATE_TIME" and _is_full_date(text[s:e]):
                keys.append("DATE_TIME (full dates)")
            for k in keys:
                st = gold_stats[k]
                st["values"] += 1
                if all(covered[s:e]):
                    st["masked"] += 1
                elif len(errors) < n_errors and k != "DATE_TIME":
                    errors.append(f"MISS {k} {text[s:e]!r} :: {text!r}")
        for s, e, t in spans:
            ps = pred_stats.setdefault(t, {"spans": 0, "correct": 0})
            ps["spans"] += 1
            ok = any(gs < e and s < ge and gt in PRED_OK.get(t, set()) for gs, ge, gt in r["spans"])
            ps["correct"] += ok
            if not ok and r["spans"] and len(errors) < n_errors:
                errors.append(f"FP {t} {text[s:e]!r} :: {text!r}")
    recall = {
        k: {**v, "recall": round(v["masked"] / v["values"], 3) if v["values"] else None}
        for k, v in gold_stats.items()
    }
    precision = {
        k: {**v, "precision": round(v["correct"] / v["spans"], 3)}
        for k, v in sorted(pred_stats.items())
    }
    return {
        "sentences": len(rows),
        "recall": recall,
        "precision": precision,
        "pii_free_sentences": clean,
        "pii_free_changed": clean_changed,
        "pii_free_changed_pct": round(100 * clean_changed / clean, 2) if clean else None,
        "errors": errors,
    }


_PROMPT = (
    "Hi, I was charged twice for my card 4111 1111 1111 1111 on 2024-03-15, order ORD-2024-004512. "
    "Please refund to DE89 3704 0044 0532 0130 00 and email me at anna.smith@example.org."
)
_PASSAGE = (
    "Duplicate charges: when a card payment is shown twice, the second entry is usually a "
    "pre-authorisation that drops off within 3-5 business days. If it is still there after 7 days, "
    "the customer can open a dispute in the app under Payments > Disputes. Refunds are sent to the "
    "original payment method; bank transfers take 1-2 business days. Fees: none for disputes under "
    "EUR 5,000. Contact the branch for amounts above that limit or call the hotline."
)


def latency(iterations: int, masker: Any = None, mapping: Any = MaskMapping) -> dict[str, float]:
    """p50/p99 of masking a prompt plus three passages (one mapping), in microseconds: wall
    clock and this thread's CPU time (the cost on one core, less the time other processes of
    a shared machine took from it)."""
    masker = default_masker() if masker is None else masker
    parts = [_PROMPT, _PASSAGE, _PASSAGE.replace("card", "account"), _PASSAGE.upper()]
    for _ in range(100):
        m = mapping()
        for p in parts:
            masker.mask(p, m)
    wall, cpu = [], []
    for _ in range(iterations):
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        m = mapping()
        for p in parts:
            masker.mask(p, m)
        cpu.append((time.thread_time_ns() - c0) / 1000)
        wall.append((time.perf_counter_ns() - t0) / 1000)
    wall.sort()
    cpu.sort()
    return {
        "p50_us": round(wall[len(wall) // 2], 1),
        "p99_us": round(wall[int(len(wall) * 0.99)], 1),
        "cpu_p50_us": round(cpu[len(cpu) // 2], 1),
        "cpu_p99_us": round(cpu[int(len(cpu) * 0.99)], 1),
    }


def baseline_package(ref: str, name: str) -> Any:
    """`shared/residency` as of git `ref`, imported as the package `name` (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="pii_baseline_"))
    archive = subprocess.run(
        ["git", "archive", ref, "shared/residency"], cwd=root, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    pkg = tmp / name
    (tmp / "shared" / "residency").rename(pkg)
    for py in pkg.glob("*.py"):
        py.write_text(py.read_text().replace("aivos.shared.residency", name))
    sys.path.insert(0, str(tmp))
    return importlib.import_module(name)


# the packs timed: every country known (the default when a site's region says nothing) and the
# pack of a site whose region is "us-east"
PACKS: dict[str, tuple[str, ...] | None] = {"all": None, "us-east": locales_for("us-east")}


_BASELINES: dict[str, Any] = {}


def _baseline(ref: str, i: int) -> Any:
    if ref not in _BASELINES:
        _BASELINES[ref] = baseline_package(ref, f"_pii_baseline_{i}")
    return _BASELINES[ref]


def compare_latency(
    refs: list[str], iterations: int, repeats: int, locales: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Latency of the masker (locale pack `locales`) at each git ref and of the working tree,
    interleaved in one process (`repeats` rounds), so a shared machine's load hits all of
    them alike."""
    maskers: dict[str, tuple[Any, Any]] = {
        "current": (default_masker(locales=locales), MaskMapping)
    }
    for i, ref in enumerate(refs):
        pkg = _baseline(ref, i)
        maskers[ref] = (pkg.default_masker(locales=locales), pkg.MaskMapping)
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in maskers}
    for _ in range(repeats):
        for k, (masker, mapping) in maskers.items():
            rounds[k].append(latency(iterations, masker, mapping))
    out: dict[str, Any] = {"rounds": rounds}
    for k in maskers:
        out[k] = {f: round(statistics.median(r[f] for r in rounds[k]), 1) for f in rounds[k][0]}
    for ref in refs:
        out[f"cpu_p50_ratio_{ref}_over_current"] = round(
            out[ref]["cpu_p50_us"] / out["current"]["cpu_p50_us"], 2
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="PII masker on public labelled data")
    ap.add_argument("--split", choices=("dev", "test", "all"), default=None)
    ap.add_argument("--errors", type=int, default=0, help="print this many misses / false hits")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="GIT_REF",
        help="also time the masker of this git ref in the same process (repeatable)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds with --baseline")
    ap.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="write the results here (default: benchmarks/results/pii_public.json when no "
        "--split is given; with --split only when asked)",
    )
    args = ap.parse_args()
    splits = [args.split] if args.split else ["dev", "test", "all"]
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "dataset": "presidio-research synth_dataset_v2.json (MIT), split by template_id % 2",
    }
    for split in splits:
        res = evaluate(load(split), args.errors)
        for line in res.pop("errors"):
            print(line)
        result[split] = res
        print(f"== {split}: {res['sentences']} sentences")
        for k, v in res["recall"].items():
            print(f"  recall    {k:24} {v['masked']:4d}/{v['values']:<4d} {v['recall']}")
        for k, v in res["precision"].items():
            print(f"  precision {k:24} {v['correct']:4d}/{v['spans']:<4d} {v['precision']}")
        print(f"  PII-free sentences changed: {res['pii_free_changed']}/{res['pii_free_sentences']}"
              f" ({res['pii_free_changed_pct']} %)")  # fmt: skip
    if args.iterations:
        lat: dict[str, Any] = {}
        for pack, locales in PACKS.items():
            if args.baseline:
                cmp = compare_latency(args.baseline, args.iterations, args.repeats, locales)
                for k in ("current", *args.baseline):
                    print(f"latency prompt + 3 passages, pack {pack} [{k}]:", cmp[k])
                for k, v in cmp.items():
                    if k.startswith("cpu_p50_ratio"):
                        print(f"  {k}: {v}")
            else:
                cmp = latency(args.iterations, default_masker(locales=locales))
                print(f"latency prompt + 3 passages, pack {pack}:", cmp)
            lat[pack] = cmp
        result["latency_prompt_plus_3_passages"] = lat
    out = args.json_out or (
        None if args.split else Path(__file__).resolve().parent / "results" / "pii_public.json"
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
