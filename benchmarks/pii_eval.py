"""Per-entity precision/recall of the PII masker on the generated set, plus its cost.

    python benchmarks/pii_eval.py                       # generate 2,000 records (seed 7), evaluate
    python benchmarks/pii_eval.py --data set.jsonl --no-perf --json-out out.json

A predicted span counts as a true positive when start, end and entity all match a gold
span. `leaks` counts gold values not fully covered by any masked span (what would leave
the site raw). Performance: masker throughput over the whole set, and the latency added
per request (prompt + 3 passages through one MaskMapping, and through `ExitGate.apply`)
against two baselines in the same run: no masking, and a plain copy of the same strings.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pii_dataset import ENTITIES, generate  # noqa: E402

from aivos.shared.residency import (  # noqa: E402
    DataClass,
    ExitGate,
    MaskMapping,
    default_masker,
    recommended_policy,
)
from aivos.shared.residency.recognizers import find_all  # noqa: E402

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


def evaluate(records: list[dict[str, Any]]) -> dict[str, Any]:
    masker = default_masker()
    stats = {e: {"tp": 0, "fp": 0, "fn": 0, "leaks": 0} for e in ENTITIES}
    distractor_hits = 0
    other: dict[str, int] = {}
    errors: list[dict[str, Any]] = []
    for rec in records:
        text = rec["text"]
        gold = {(s["start"], s["end"], s["entity"]) for s in rec["spans"]}
        pred_spans = find_all(text, masker.recognizers)
        pred = {(s.start, s.end, s.entity) for s in pred_spans}
        for g in gold:
            st = stats[g[2]]
            if g in pred:
                st["tp"] += 1
            else:
                st["fn"] += 1
                if not any(p[0] <= g[0] and p[1] >= g[1] for p in pred):
                    st["leaks"] += 1
                if len(errors) < 20:
                    errors.append(
                        {"kind": "fn", "entity": g[2], "value": text[g[0] : g[1]], "text": text}
                    )
        for p in pred - gold:
            if p[2] not in stats:  # names/addresses/ids: the generator does not label them
                other[p[2]] = other.get(p[2], 0) + 1
                continue
            stats[p[2]]["fp"] += 1
            if len(errors) < 20:
                errors.append(
                    {"kind": "fp", "entity": p[2], "value": text[p[0] : p[1]], "text": text}
                )
        masked = masker.mask(text).text
        distractor_hits += sum(1 for d in rec.get("distractors", []) if d not in masked)
    per_entity = {}
    for e, st in stats.items():
        tp, fp, fn = st["tp"], st["fp"], st["fn"]
        per_entity[e] = {
            "support": tp + fn,
            "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
            **st,
        }
    n_dist = sum(len(r.get("distractors", [])) for r in records)
    return {
        "records": len(records),
        "per_entity": per_entity,
        "distractors": n_dist,
        "distractors_masked": distractor_hits,
        "other_entities_masked": other,
        "examples_of_errors": errors,
    }


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def _time_us(fn: Any, n: int) -> dict[str, float]:
    for _ in range(min(200, n)):
        fn()
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1000)
    return {
        "p50_us": round(_pct(out, 0.5), 2),
        "p99_us": round(_pct(out, 0.99), 2),
        "mean_us": round(statistics.fmean(out), 2),
    }


def perf(records: list[dict[str, Any]], iterations: int) -> dict[str, Any]:
    masker = default_masker()
    texts = [r["text"] for r in records]
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for t in texts:
            masker.mask(t)
        best = min(best, time.perf_counter() - t0)
    parts = [_PROMPT, _PASSAGE, _PASSAGE.replace("card", "account"), _PASSAGE.upper()]
    gate = ExitGate(recommended_policy())
    payload = {"prompt": parts[0], "passages": parts[1:], "id": "req-1"}

    def no_mask() -> None:
        for p in parts:
            p  # noqa: B018

    def plain_copy() -> None:
        for p in parts:
            p.encode("utf-8").decode("utf-8")

    def mask_request() -> None:
        m = MaskMapping()
        for p in parts:
            masker.mask(p, m)

    def gate_request() -> None:
        gate.apply(DataClass.ESCALATION_PROMPT, payload, mapping=MaskMapping())

    request_chars = sum(len(p) for p in parts)
    return {
        "throughput": {
            "records_per_s": round(len(texts) / best),
            "mb_per_s": round(nbytes / best / 1e6, 2),
            "bytes": nbytes,
        },
        "request": {
            "chars": request_chars,
            "baseline_no_mask": _time_us(no_mask, iterations),
            "baseline_str_copy": _time_us(plain_copy, iterations),
            "mask_prompt_plus_3_passages": _time_us(mask_request, iterations),
            "gate_apply_dict_payload": _time_us(gate_request, iterations),
        },
    }


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"{'entity':8} {'support':>7} {'prec':>7} {'recall':>7} {'fp':>4} {'fn':>4} {'leaks':>5}"
    ]
    for e, s in result["quality"]["per_entity"].items():
        lines.append(
            f"{e:8} {s['support']:7d} {s['precision']:7.4f} {s['recall']:7.4f} "
            f"{s['fp']:4d} {s['fn']:4d} {s['leaks']:5d}"
        )
    q = result["quality"]
    lines.append(f"distractors: {q['distractors']}, wrongly masked: {q['distractors_masked']}")
    if "perf" in result:
        tp = result["perf"]["throughput"]
        lines.append(f"throughput: {tp['records_per_s']} records/s, {tp['mb_per_s']} MB/s")
        for k, v in result["perf"]["request"].items():
            if isinstance(v, dict):
                lines.append(f"{k:30} p50 {v['p50_us']:9.2f} µs  p99 {v['p99_us']:9.2f} µs")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="PII masker quality and cost")
    ap.add_argument("--data", type=Path, help="JSONL from pii_dataset.py (default: generate)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=5000)
    ap.add_argument("--no-perf", action="store_true")
    ap.add_argument(
        "--json-out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "pii_eval.json",
    )
    args = ap.parse_args()
    if args.data:
        records = [
            json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line
        ]
    else:
        records = generate(args.n, args.seed)
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "dataset": {
            "source": str(args.data) if args.data else "generated",
            "n": len(records),
            "seed": args.seed,
        },
        "quality": evaluate(records),
    }
    if not args.no_perf:
        result["perf"] = perf(records, args.iterations)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(
        json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(_table(result))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
