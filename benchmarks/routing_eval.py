"""Routing evaluation: does the box answer locally only what it can answer?

Requests with the route a site should take (`benchmarks/data/`):

* `routing_eval.jsonl` (written for this project): questions answerable from the example
  knowledge base `docs/examples/kb` (`faq`), requests for the bank's own operations that
  the knowledge base explains (`transactional`), small talk (`chitchat`) -> `local`;
  creative / open-ended requests (`creative`) and general-knowledge questions
  (`general`) -> `escalate`.
* `dolly_routing_sample.jsonl`: 52 instructions without context taken verbatim, in file
  order, from databricks-dolly-15k (CC BY-SA 3.0, Databricks; see `data/README.md`):
  `open_qa`/`general_qa` -> `general`, `creative_writing`/`brainstorming`/
  `classification` -> `creative`, all -> `escalate`.

For every request the bundle classifies it and retrieves passages from a fresh index of
`docs/examples/kb` (as the agent does: one embedding for both). The route is then taken
twice, in the same run, with the same prediction and passages:

* before: `router.route` alone (the intent policy: in scope -> local);
* after: `router.settle` on top, as the agent runs it (answerability: open-ended ->
  escalate; a local route needs a template or a passage >= `knowledge.answer_min_score`;
  an out-of-scope request with such a passage is answered from it; a generator is
  reachable).

Reported per group and overall: route accuracy, escalation recall on creative + general,
local keep-rate on answerable requests, and "no document" local replies (a local route with
no template and no passage at all). Rows are split into halves by a hash of the text; the
sweep of `answer_min_score` is shown for both halves (the shipped default was read off the
`dev` half).

    python benchmarks/routing_eval.py --bundle DIR [--answer-min-score 0.3] [--errors]

Writes benchmarks/results/routing_eval.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
KB = ROOT / "docs" / "examples" / "kb"
RESULTS = Path(__file__).resolve().parent / "results" / "routing_eval.json"
DOLLY_GROUP = {
    "open_qa": "general",
    "general_qa": "general",
    "creative_writing": "creative",
    "brainstorming": "creative",
    "classification": "creative",
}
ESCALATE_GROUPS = ("creative", "general")


def load_rows() -> list[dict[str, str]]:
    rows = [json.loads(line) for line in (DATA / "routing_eval.jsonl").read_text().splitlines()]
    for line in (DATA / "dolly_routing_sample.jsonl").read_text().splitlines():
        item = json.loads(line)
        rows.append(
            {
                "text": item["instruction"],
                "group": DOLLY_GROUP[item["category"]],
                "expected": "escalate",
                "source": f"dolly:{item['category']}",
            }
        )
    for row in rows:
        digest = hashlib.sha256(row["text"].encode()).digest()[0]
        row["half"] = "dev" if digest % 2 == 0 else "test"
    return rows


def observe(bundle: Path, rows: list[dict[str, Any]], top_k: int, min_score: float) -> None:
    """Classify and retrieve every row once; the routes are computed from these."""
    from aivos.edge.intent.runtime import IntentModel
    from aivos.edge.knowledge.index import KnowledgeIndex
    from aivos.edge.router import RouterPolicy, route

    model = IntentModel.load(bundle)
    policy = RouterPolicy()
    with tempfile.TemporaryDirectory() as tmp, KnowledgeIndex.open(Path(tmp), model) as index:
        for path in sorted(KB.iterdir()):
            index.add_document(path.name, path.read_text(encoding="utf-8"))
        for row in rows:
            pred = model.classify(row["text"])
            passages = [
                p for p in index.search_vector(pred.embedding, top_k) if p.score >= min_score
            ]
            decided = route(
                policy, pred.intent, pred.confidence, model.threshold, model.manifest.oos_label
            )
            row.update(
                intent=pred.intent,
                confidence=round(float(pred.confidence), 4),
                top_score=round(max((p.score for p in passages), default=-1.0), 4),
                has_passage=bool(passages),
                route=decided,
            )
    return None


def routes(rows: list[dict[str, Any]], answer_min_score: float) -> None:
    from aivos.edge.router import RouterPolicy, knowledge_may_answer, settle

    for row in rows:
        decided = row["route"]
        row["before"] = decided.decision
        row["no_document_before"] = (
            decided.decision == "local" and decided.template is None and not row["has_passage"]
        )
        top = row["top_score"] if row["has_passage"] else None
        after = settle(
            decided,
            row["text"],
            top,
            answer_min_score=answer_min_score,
            generator=True,
            answer_out_of_scope=knowledge_may_answer(RouterPolicy(), row["intent"]),
        )
        row["after"] = after.decision
        row["after_reason"] = after.reason
        row["no_document_after"] = (
            after.decision == "local" and after.template is None and not row["has_passage"]
        )


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def rate(subset: list[dict[str, Any]], key: str) -> float | None:
        if not subset:
            return None
        return round(sum(r[key] == r["expected"] for r in subset) / len(subset), 4)

    groups = sorted({r["group"] for r in rows})
    esc = [r for r in rows if r["group"] in ESCALATE_GROUPS]
    keep = [r for r in rows if r["expected"] == "local"]
    return {
        "n": len(rows),
        "route_accuracy": {"before": rate(rows, "before"), "after": rate(rows, "after")},
        "escalation_recall_creative_general": {
            "before": rate(esc, "before"),
            "after": rate(esc, "after"),
            "n": len(esc),
        },
        "answerable_kept_local": {
            "before": rate(keep, "before"),
            "after": rate(keep, "after"),
            "n": len(keep),
        },
        "no_document_local_replies": {
            "before": sum(r["no_document_before"] for r in rows),
            "after": sum(r["no_document_after"] for r in rows),
        },
        "by_group": {
            g: {
                "n": len(sub),
                "before": rate(sub, "before"),
                "after": rate(sub, "after"),
            }
            for g in groups
            for sub in [[r for r in rows if r["group"] == g]]
        },
    }


def main() -> None:
    from aivos.edge.settings import KnowledgeSettings
    from aivos.shared.bundle import load_bundle_manifest
    from aivos.shared.paths import default_bundle_dir

    defaults = KnowledgeSettings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=default_bundle_dir())
    ap.add_argument("--answer-min-score", type=float, default=defaults.answer_min_score)
    ap.add_argument("--errors", action="store_true", help="Print the misrouted requests.")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    rows = load_rows()
    observe(args.bundle, rows, defaults.top_k, defaults.min_score)
    sweep = {}
    for value in (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6):
        routes(rows, value)
        sweep[str(value)] = {
            half: summarise([r for r in rows if r["half"] == half])["route_accuracy"]["after"]
            for half in ("dev", "test")
        }
    routes(rows, args.answer_min_score)
    manifest = load_bundle_manifest(args.bundle)
    report = {
        "bundle_version": manifest.bundle_version,
        "bundle_labels": len(manifest.labels),
        "fine_tuned_encoder": manifest.training.fine_tuned_encoder,
        "answer_min_score": args.answer_min_score,
        "knowledge_base": "docs/examples/kb",
        "all": summarise(rows),
        "halves": {h: summarise([r for r in rows if r["half"] == h]) for h in ("dev", "test")},
        "answer_min_score_sweep_accuracy_after": sweep,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps({k: report[k] for k in ("bundle_version", "answer_min_score", "all")}, indent=2)
    )
    if args.errors:
        for r in rows:
            if r["after"] != r["expected"]:
                print(
                    f"[{r['group']}] {r['text'][:70]!r} -> {r['after']} ({r['after_reason']}) "
                    f"intent={r['intent']} {r['confidence']} top={r['top_score']}"
                )


if __name__ == "__main__":
    main()
