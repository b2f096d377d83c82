"""Intent model runtime: one onnxruntime call per batch returns intent probabilities and the
sentence embedding. Edge-only dependencies: onnxruntime, tokenizers, numpy."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from aivos.shared.bundle import Manifest, load_bundle_manifest
from aivos.shared.errors import BundleError, DataError

__all__ = ["IntentModel", "Prediction", "SUB_BATCH"]

log = logging.getLogger(__name__)

_CPU = "CPUExecutionProvider"
# Rows per onnxruntime call after sorting a batch by token count. Measured on CLINC150 with
# one intra-op thread: groups of 4 ran 1,226 queries/s against 668 for whole padded batches
# of 64 and 775 for single rows (docs/performance.md).
SUB_BATCH = 4


class Prediction(msgspec.Struct, frozen=True):
    intent: str
    confidence: float
    in_scope: bool
    embedding: np.ndarray  # (dim,) float32, L2-normalised
    truncated: bool
    n_tokens: int  # tokens the model saw (after truncation), [CLS]/[SEP] included


class IntentModel:
    """A loaded, verified bundle. Thread-safe: ORT `run` and tokenizer encoding are."""

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
    ) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self._session = session
        self._tokenizer = tokenizer
        self._input_names = {i.name for i in session.get_inputs()}
        self._labels = np.asarray(manifest.labels)
        self.provider: str = session.get_providers()[0]

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> IntentModel:
        root = Path(bundle_dir)
        manifest = load_bundle_manifest(root)
        wanted = list(providers or [_CPU])
        available = set(ort.get_available_providers())
        chosen = [p for p in wanted if p in available]
        for p in wanted:
            if p not in available:
                log.warning("execution provider %s is not available; skipping it", p)
        if _CPU not in chosen:
            chosen.append(_CPU)
        options = ort.SessionOptions()
        # A spinning intra-op pool burns ~2x the CPU per query on a small box shared with the
        # HTTP server and SQLite writer (measured in benchmarks/edge_load.py); park idle threads.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(root / "model.onnx"), sess_options=options, providers=chosen
            )
            tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        except Exception as exc:  # onnxruntime raises plain RuntimeError subclasses
            raise BundleError(str(root), f"cannot load model: {exc}") from exc
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=manifest.max_length)
        model = cls(root, manifest, session, tokenizer)
        log.info(
            "intent bundle %s loaded on %s (%d labels)",
            manifest.bundle_version,
            model.provider,
            len(manifest.labels),
        )
        return model

    # -- manifest views -------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.manifest.bundle_version

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def threshold(self) -> float:
        return self.manifest.threshold

    @property
    def embedding_dim(self) -> int:
        return self.manifest.embedding_dim

    @property
    def embedding_model_id(self) -> str:
        return self.manifest.embedding_model_id

    @property
    def embedding_version(self) -> str:
        """Identifies the embedding space: equal strings mean interchangeable vectors."""
        return self.manifest.embedding_version or (
            f"{self.manifest.embedding_model_id}@{self.manifest.files['model.onnx'][:16]}"
        )

    # -- inference ------------------------------------------------------------------------
    def classify(self, text: str) -> Prediction:
        return self.classify_batch([text])[0]

    def classify_batch(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        probs, embs, n_tokens, truncated = self._run(texts)
        idx = probs.argmax(1)
        oos = self.manifest.oos_label
        out = []
        for i in range(len(texts)):
            intent = str(self._labels[idx[i]])
            conf = float(probs[i, idx[i]])
            out.append(
                Prediction(
                    intent=intent,
                    confidence=conf,
                    in_scope=conf >= self.threshold and intent != oos,
                    embedding=embs[i],
                    truncated=truncated[i],
                    n_tokens=n_tokens[i],
                )
            )
        return out

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(n, embedding_dim) float32 L2-normalised embeddings (e.g. for knowledge chunks)."""
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return self._run(texts)[1]

    def _run(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[int], list[bool]]:
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"texts[{i}]", "text is empty")
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        # Padding every row to the batch's longest wastes most of the work on short queries:
        # run length-sorted groups of SUB_BATCH rows instead (docs/performance.md).
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        probs = np.empty((len(texts), len(self._labels)), dtype=np.float32)
        embs = np.empty((len(texts), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(order), SUB_BATCH):
            rows = order[start : start + SUB_BATCH]
            p, e = self._run_padded([encodings[i].ids for i in rows])
            probs[rows] = p
            embs[rows] = e
        return probs, embs, lengths, [bool(e.overflowing) for e in encodings]

    def _run_padded(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        longest = max(len(ids) for ids in sequences)
        ids = np.zeros((len(sequences), longest), dtype=np.int64)
        mask = np.zeros((len(sequences), longest), dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = np.zeros_like(ids)
        probs, embs = self._session.run(["probs", "sentence_embedding"], feed)
        return probs, embs
