"""Retrieval that learns: MRR on a held-out relevance set, without and with feedback votes.

Relevance set `benchmarks/data/kb_relevance.jsonl` (written for this project over
`docs/examples/kb`): 72 queries, 8 per passage of the example knowledge base, each naming
its relevant passage (document + heading); half are `feedback` queries (what users asked
and rated), half `heldout` (scored only, never voted on).

1. cold start: every query is classified and searched (all passages ranked) with the
   feedback book empty; MRR with and without the book must be equal (nothing moves).
2. feedback: the `feedback` queries are replayed through the real `FeedbackBook` over a
   real SQLite store (an audit row per request, then `record`), as a user would rate the
   top 3 the agent showed: the relevant passage among them -> helpful, with that passage;
   otherwise -> not helpful, about the top passage. Votes are per predicted intent.
3. MRR on `heldout` with the votes, for the shipped weight and a small sweep.

    python benchmarks/feedback_rerank.py --bundle DIR

Writes benchmarks/results/feedback_rerank.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
KB = ROOT / "docs" / "examples" / "kb"
DATA = Path(__file__).resolve().parent / "data" / "kb_relevance.jsonl"
RESULTS = Path(__file__).resolve().parent / "results" / "feedback_rerank.json"
SHOWN = 3


def _rank(passages: list[Any], source: str, heading: str) -> int | None:
    for i, p in enumerate(passages, 1):
        if p.source == source and p.heading == heading:
            return i
    return None


def _mrr(ranks: list[int | None]) -> float:
    return round(sum(1 / r for r in ranks if r) / len(ranks), 4)


async def run(bundle: Path, weights: list[float]) -> dict[str, Any]:
    from aivos.edge.feedback import FeedbackBook
    from aivos.edge.intent.runtime import IntentModel
    from aivos.edge.knowledge.index import KnowledgeIndex
    from aivos.edge.settings import KnowledgeSettings
    from aivos.edge.store import AuditRecord, Store

    shipped = KnowledgeSettings().feedback_weight
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    model = IntentModel.load(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        index = KnowledgeIndex.open(Path(tmp) / "kb", model)
        for path in sorted(KB.iterdir()):
            index.add_document(path.name, path.read_text(encoding="utf-8"))
        n = len(index)
        for row in rows:  # one model call per query; every passage ranked
            pred = model.classify(row["query"])
            row["intent"] = pred.intent
            row["candidates"] = index.search_vector(pred.embedding, n)
        index.close()
        heldout = [r for r in rows if r["split"] == "heldout"]
        feedback = [r for r in rows if r["split"] == "feedback"]
        baseline = _mrr([_rank(r["candidates"], r["source"], r["heading"]) for r in heldout])

        report: dict[str, Any] = {"n_passages": n, "n_heldout": len(heldout)}
        report["n_feedback_queries"] = len(feedback)
        report["mrr_heldout_no_feedback"] = baseline
        report["by_weight"] = {}
        for weight in sorted(set(weights) | {shipped}):
            store = Store.open(Path(tmp) / f"store-{weight}")
            try:
                book = FeedbackBook(store, weight=weight)

                def ranked(r: dict[str, Any], book: FeedbackBook = book) -> list[Any]:
                    return book.rerank(r["intent"], r["candidates"], n)

                cold = _mrr([_rank(ranked(r), r["source"], r["heading"]) for r in heldout])
                votes = {"helpful": 0, "not_helpful": 0}
                for i, r in enumerate(feedback):
                    request_id = f"fb-{weight}-{i}"
                    await store.append_audit(
                        AuditRecord(
                            id=request_id,
                            kind="decision",
                            intent=r["intent"],
                            confidence=None,
                            decision="local",
                            model_version=model.version,
                            latency_ms=0.0,
                            pii_counts={},
                            trace_id=None,
                            detail={},
                        ),
                        sync=False,
                    )
                    shown = ranked(r)[:SHOWN]
                    hit = _rank(shown, r["source"], r["heading"])
                    target = shown[hit - 1] if hit else shown[0]
                    await book.record(request_id, bool(hit), target.doc_id, target.chunk_id)
                    votes["helpful" if hit else "not_helpful"] += 1
                after = _mrr([_rank(ranked(r), r["source"], r["heading"]) for r in heldout])
                trained = _mrr([_rank(ranked(r), r["source"], r["heading"]) for r in feedback])
                report["by_weight"][str(weight)] = {
                    "mrr_heldout_cold_start_with_book": cold,
                    "cold_start_unchanged": cold == baseline,
                    "mrr_heldout_with_feedback": after,
                    "mrr_gain": round(after - baseline, 4),
                    "mrr_feedback_queries_after": trained,
                    "votes": votes,
                }
            finally:
                store.close()
    report["shipped_weight"] = shipped
    return report


def main() -> None:
    from aivos.shared.bundle import load_bundle_manifest
    from aivos.shared.paths import default_bundle_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=default_bundle_dir())
    ap.add_argument("--weights", type=float, nargs="*", default=[0.05, 0.1, 0.2, 0.3])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    report = asyncio.run(run(args.bundle, args.weights))
    manifest = load_bundle_manifest(args.bundle)
    report = {
        "bundle_version": manifest.bundle_version,
        "fine_tuned_encoder": manifest.training.fine_tuned_encoder,
        **report,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
