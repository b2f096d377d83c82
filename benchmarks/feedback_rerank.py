"""Retrieval that learns: MRR on a held-out relevance set, without and with feedback votes.

Relevance set `benchmarks/data/kb_relevance.jsonl` (written for this project over
`docs/examples/kb`): 72 queries, 8 per passage of the example knowledge base, each naming
its relevant passage (document + heading); half are `feedback` queries (what users asked
and rated), half `heldout` (scored only, never voted on).

1. cold start: every query is classified and searched (all passages ranked) with the
   feedback book empty; MRR with and without the book must be equal (nothing moves).
2. tau (the similarity floor of the vote kernel, edge/feedback.py) is chosen on the
   `feedback` queries alone: votes from one half, MRR on the other half, both ways, over
   `TAUS` at the shipped weight. The held-out queries play no part in the choice.
3. feedback: the `feedback` queries are replayed through the real `FeedbackBook` over a
   real SQLite store as the agent does it (the request's query embedding remembered under
   its request id, an audit row, then `record`), as a user would rate the top 3 the agent
   showed: the relevant passage among them -> helpful, with that passage; otherwise -> not
   helpful, about the top passage. Also replayed with nothing remembered (`per_intent_only`:
   every vote per predicted intent, as before the embeddings).
4. MRR on `heldout` with the votes, at the chosen tau, for the shipped weight and a small
   sweep; and the cost of one `rerank` call with 1,000 votes in the book.
5. repeated questions: the `heldout` queries are then served and rated too (same simulated
   user), and each is asked again as another customer types it (one seeded keyboard slip in
   about 30% of its longer words, the `--perturb typos` generator; the bundle corrects
   spelling as served). MRR on those re-asked queries with the votes vs with an empty book.
   This measures what the votes do for a question asked again, not for a new paraphrase
   (step 4 measures that).

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
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
KB = ROOT / "docs" / "examples" / "kb"
DATA = Path(__file__).resolve().parent / "data" / "kb_relevance.jsonl"
RESULTS = Path(__file__).resolve().parent / "results" / "feedback_rerank.json"
SHOWN = 3
REASK_RATE, REASK_SEED = 0.3, 13  # how a question is re-typed (edge.intent.evaluate.perturb_typos)
TAUS = (0.3, 0.4, 0.5, 0.6, 0.7)  # the kernel floors tau is chosen from (feedback split only)


def _rank(passages: list[Any], source: str, heading: str) -> int | None:
    for i, p in enumerate(passages, 1):
        if p.source == source and p.heading == heading:
            return i
    return None


def _mrr(ranks: list[int | None]) -> float:
    return round(sum(1 / r for r in ranks if r) / len(ranks), 4)


class _Replay:
    """The feedback book over a real store, fed as the agent feeds it: the served request's
    embedding remembered under its request id, an audit row, then `record`."""

    def __init__(self, store: Any, book: Any, model: Any, n: int) -> None:
        self.store, self.book, self.model, self.n = store, book, model, n
        self.space = model.embedding_version
        self.votes = {"helpful": 0, "not_helpful": 0}

    def ranked(self, r: dict[str, Any]) -> list[Any]:
        return self.book.rerank(r["intent"], r["embedding"], self.space, r["candidates"], self.n)

    def mrr(self, rows: list[dict[str, Any]]) -> float:
        return _mrr([_rank(self.ranked(r), r["source"], r["heading"]) for r in rows])

    async def rate(self, request_id: str, r: dict[str, Any], *, remember: bool = True) -> None:
        from aivos.edge.store import AuditRecord

        shown = self.ranked(r)[:SHOWN]
        if remember:  # what Pipeline.understand does for a request served with passages
            self.book.remember(request_id, r["embedding"], self.space)
        await self.store.append_audit(
            AuditRecord(
                id=request_id,
                kind="decision",
                intent=r["intent"],
                confidence=None,
                decision="local",
                model_version=self.model.version,
                latency_ms=0.0,
                pii_counts={},
                trace_id=None,
                detail={},
            ),
            sync=False,
        )
        # the relevant passage among the top 3 shown -> helpful, about it; else not, about the top
        hit = _rank(shown, r["source"], r["heading"])
        target = shown[hit - 1] if hit else shown[0]
        await self.book.record(request_id, bool(hit), target.doc_id, target.chunk_id)
        self.votes["helpful" if hit else "not_helpful"] += 1


def _folds(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The `feedback` queries in two halves, alternating within each passage's queries."""
    seen: dict[tuple[str, str], int] = {}
    halves: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for r in rows:
        i = seen.get((r["source"], r["heading"]), 0)
        seen[(r["source"], r["heading"])] = i + 1
        halves[i % 2].append(r)
    return halves


async def _choose_tau(
    tmp: Path, model: Any, n: int, feedback: list[dict[str, Any]], weight: float
) -> dict[str, Any]:
    """tau from the `feedback` split alone: votes from one half, MRR on the other, both ways;
    the best mean wins (ties: the larger tau, fewer distant votes). Held-out is not read."""
    from aivos.edge.feedback import FeedbackBook
    from aivos.edge.store import Store

    halves = _folds(feedback)
    table: dict[str, Any] = {}
    for tau in TAUS:
        scores = []
        for f in (0, 1):
            store = Store.open(tmp / f"tau-{tau}-{f}")
            try:
                replay = _Replay(store, FeedbackBook(store, weight=weight, tau=tau), model, n)
                for i, r in enumerate(halves[f]):
                    await replay.rate(f"tau-{tau}-{f}-{i}", r)
                scores.append(replay.mrr(halves[1 - f]))
            finally:
                store.close()
        table[str(tau)] = {"mrr_other_half": scores, "mean": round(sum(scores) / 2, 4)}
    chosen = max(TAUS, key=lambda t: (table[str(t)]["mean"], t))
    # what the halves score with no votes at all: the room the choice had
    unrated = [_mrr([_rank(r["candidates"], r["source"], r["heading"]) for r in h]) for h in halves]
    return {
        "grid": table,
        "weight": weight,
        "mrr_halves_no_votes": unrated,
        "tie_break": "larger tau",
        "chosen_tau": chosen,
    }


def _similarities(feedback: list[dict[str, Any]]) -> dict[str, float]:
    """Cosine between `feedback` queries (this split only): to the most similar other query
    about the same passage, and to the most similar query about another passage (medians).
    The kernel helps where the first is above tau and the second below."""
    import numpy as np

    same, other = [], []
    for i, r in enumerate(feedback):
        about = (r["source"], r["heading"])
        sims = [
            (float(r["embedding"] @ f["embedding"]), (f["source"], f["heading"])) for f in feedback
        ]
        same.append(max(c for j, (c, p) in enumerate(sims) if p == about and j != i))
        other.append(max(c for c, p in sims if p != about))
    return {
        "median_best_same_passage": round(float(np.median(same)), 3),
        "median_best_other_passage": round(float(np.median(other)), 3),
    }


async def _rerank_cost(
    tmp: Path, model: Any, n: int, rows: list[dict[str, Any]], tau: float, votes: int
) -> dict[str, Any]:
    """Microseconds per `rerank` call (all passages as candidates) with `votes` embedded votes
    in the book (the feedback queries rated over and over)."""
    from aivos.edge.feedback import FeedbackBook
    from aivos.edge.store import Store

    store = Store.open(tmp / "cost")
    try:
        replay = _Replay(store, FeedbackBook(store, tau=tau), model, n)
        feedback = [r for r in rows if r["split"] == "feedback"]
        for i in range(votes):
            await replay.rate(f"cost-{i}", feedback[i % len(feedback)])
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            for r in rows:
                replay.ranked(r)
            timings.append((time.perf_counter() - started) / len(rows))
        timings.sort()
        return {
            "votes": votes,
            "candidates": n,
            "us_per_query_median": round(timings[len(timings) // 2] * 1e6, 1),
        }
    finally:
        store.close()


async def _repeats(
    tmp: Path,
    model: Any,
    n: int,
    rows: list[dict[str, Any]],
    reasked: list[dict[str, Any]],
    weight: float,
    tau: float,
) -> dict[str, Any]:
    """Votes from every query (`feedback`, then `heldout`), MRR on the re-asked `heldout`
    queries with those votes and with none."""
    from aivos.edge.feedback import FeedbackBook
    from aivos.edge.store import Store

    store = Store.open(tmp / f"repeat-{weight}")
    try:
        replay = _Replay(store, FeedbackBook(store, weight=weight, tau=tau), model, n)
        retyped = [r for r in reasked if r["retyped"]]  # not the same string again
        cold, cold_retyped = replay.mrr(reasked), replay.mrr(retyped)
        for i, r in enumerate(rows):
            await replay.rate(f"repeat-{weight}-{i}", r)
        after, after_retyped = replay.mrr(reasked), replay.mrr(retyped)
        votes = dict(replay.votes)
    finally:
        store.close()
    return {
        "mrr_reasked_no_feedback": cold,
        "mrr_reasked_with_feedback": after,
        "mrr_gain": round(after - cold, 4),
        "retyped_only": {
            "n": len(retyped),
            "mrr_no_feedback": cold_retyped,
            "mrr_with_feedback": after_retyped,
            "mrr_gain": round(after_retyped - cold_retyped, 4),
        },
        "votes": votes,
    }


def _reask(model: Any, index: Any, n: int, heldout: list[dict[str, Any]]) -> dict[str, Any]:
    """The held-out queries as another customer types them, classified and searched."""
    from aivos.edge.intent.evaluate import perturb_typos

    texts = perturb_typos([r["query"] for r in heldout], REASK_RATE, seed=REASK_SEED)
    reasked = []
    for r, text in zip(heldout, texts, strict=True):
        pred = model.classify(text)
        reasked.append(
            {
                **r,
                "query": text,
                "retyped": text != r["query"],
                "intent": pred.intent,
                "embedding": pred.embedding,
                "candidates": index.search_vector(pred.embedding, n),
            }
        )
    changed = sum(r["retyped"] for r in reasked)
    return {
        "rows": reasked,
        "n_changed": changed,
        "examples": [
            [a["query"], b["query"]] for a, b in zip(heldout, reasked, strict=True) if b["retyped"]
        ][:5],
    }


async def run(bundle: Path, weights: list[float]) -> dict[str, Any]:
    from aivos.edge.feedback import FeedbackBook
    from aivos.edge.intent.runtime import IntentModel
    from aivos.edge.knowledge.index import KnowledgeIndex
    from aivos.edge.settings import KnowledgeSettings
    from aivos.edge.store import Store

    shipped = KnowledgeSettings().feedback_weight
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    model = IntentModel.load(bundle)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        index = KnowledgeIndex.open(tmp / "kb", model)
        for path in sorted(KB.iterdir()):
            index.add_document(path.name, path.read_text(encoding="utf-8"))
        n = len(index)
        for row in rows:  # one model call per query; every passage ranked
            pred = model.classify(row["query"])
            row["intent"] = pred.intent
            row["embedding"] = pred.embedding
            row["candidates"] = index.search_vector(pred.embedding, n)
        heldout = [r for r in rows if r["split"] == "heldout"]
        reask = _reask(model, index, n, heldout)
        index.close()
        feedback = [r for r in rows if r["split"] == "feedback"]
        baseline = _mrr([_rank(r["candidates"], r["source"], r["heading"]) for r in heldout])

        report: dict[str, Any] = {"n_passages": n, "n_heldout": len(heldout)}
        report["n_feedback_queries"] = len(feedback)
        report["mrr_heldout_no_feedback"] = baseline
        report["feedback_query_cosines"] = _similarities(feedback)
        report["tau_selection"] = await _choose_tau(tmp, model, n, feedback, shipped)
        tau = report["tau_selection"]["chosen_tau"]
        report["tau"] = tau
        report["by_weight"] = {}
        for weight in sorted(set(weights) | {shipped}):
            result: dict[str, Any] = {}
            # with embeddings (the agent remembers the request), then without (every vote
            # forgotten: the per-intent votes of before)
            for remember in (True, False):
                name = f"{weight}-{remember}"
                store = Store.open(tmp / f"store-{name}")
                try:
                    replay = _Replay(store, FeedbackBook(store, weight=weight, tau=tau), model, n)
                    cold = replay.mrr(heldout)
                    for i, r in enumerate(feedback):
                        await replay.rate(f"fb-{name}-{i}", r, remember=remember)
                    after = replay.mrr(heldout)
                    trained = replay.mrr(feedback)
                finally:
                    store.close()
                if remember:
                    result = {
                        "mrr_heldout_cold_start_with_book": cold,
                        "cold_start_unchanged": cold == baseline,
                        "mrr_heldout_with_feedback": after,
                        "mrr_gain": round(after - baseline, 4),
                        "mrr_feedback_queries_after": trained,
                        "votes": replay.votes,
                    }
                else:
                    result["per_intent_only"] = {
                        "mrr_heldout_with_feedback": after,
                        "mrr_gain": round(after - baseline, 4),
                    }
            report["by_weight"][str(weight)] = result
        report["repeated_questions"] = {
            "reask": f"perturb_typos rate {REASK_RATE} seed {REASK_SEED}, spelling as served",
            "n_reasked": len(reask["rows"]),
            "n_changed": reask["n_changed"],
            "examples": reask["examples"],
            "by_weight": {
                str(w): await _repeats(tmp, model, n, feedback + heldout, reask["rows"], w, tau)
                for w in sorted(set(weights) | {shipped})
            },
        }
        report["rerank_cost"] = await _rerank_cost(tmp, model, n, rows, tau, 1000)
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
