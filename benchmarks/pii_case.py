"""The masker on the public set's sentences written in another case, next to a git ref.

Text written all in capitals or all in lower case (forms, SMS, dictated notes) says nothing by
its case, and the tagger and the name rules read case. This runs `pii_public.evaluate` on the
presidio-research sentences (MIT, see `pii_public.py`) of one split, upper- and lower-cased
(sentences whose length the case change alters, `ß` -> `SS`, are left out so the gold spans
still hold), for this tree and for `--baseline` in one run.

    python benchmarks/pii_case.py --baseline HEAD     # dev split; JSON to benchmarks/results/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pii_public import baseline_package, evaluate, load

ENTITIES = ("PERSON", "STREET_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "DATE_TIME (full dates)")


def recased(rows: list[dict[str, Any]], case: str) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        text = r["text"].upper() if case == "upper" else r["text"].lower()
        if len(text) == len(r["text"]):
            out.append({**r, "text": text})
    return out


def summary(res: dict[str, Any]) -> dict[str, Any]:
    return {
        "recall": {k: res["recall"][k]["recall"] for k in ENTITIES},
        "precision": {k: v["precision"] for k, v in res["precision"].items()},
        "pii_free_changed": f"{res['pii_free_changed']}/{res['pii_free_sentences']}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=("dev", "test", "all"), default="dev")
    ap.add_argument("--baseline", default=None, metavar="GIT_REF")
    ap.add_argument(
        "--json-out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "pii_case.json",
    )
    args = ap.parse_args()
    pkgs: dict[str, Any] = {"this tree": None}
    if args.baseline:
        pkgs = {args.baseline: baseline_package(args.baseline, "_pii_case_baseline"), **pkgs}
    rows = load(args.split)
    result: dict[str, Any] = {"split": args.split, "baseline": args.baseline}
    for case in ("as-is", "upper", "lower"):
        data = rows if case == "as-is" else recased(rows, case)
        result[case] = {"sentences": len(data)}
        for name, pkg in pkgs.items():
            res = summary(evaluate(data, 0, pkg))
            result[case][name] = res
            print(f"[{case}, {len(data)} sentences] {name}: {json.dumps(res)}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
