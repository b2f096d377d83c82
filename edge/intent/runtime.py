"""Intent model runtime: one onnxruntime call per batch returns intent probabilities and the
sentence embedding. Edge-only dependencies: onnxruntime, tokenizers, numpy.

The execution provider is chosen by the settings (`model.providers`, docs/accelerators.md) but
never taken on trust: `load` runs one real query with onnxruntime's profiler on and reads
which provider ran the model's kernels. A provider that is not installed, fails to start,
fails the query or is handed no node is reported as what actually ran (CPU), with the reason
in words (`IntentModel.proof`).

Queries are spelling-corrected before the classifier tokenises them (`spelling.py`: on unless
`load(..., spelling=False)`, for bundles that carry their word list); knowledge chunks
(`embed_batch`) are embedded as written.

A bundle that carries out-of-scope statistics (`manifest.ood`, `shared/ood.py`) is served
with its embedding-distance score: a prediction's `confidence` is that score and `threshold`
its threshold; a bundle without them keeps the max softmax probability (MSP) against the
manifest's `threshold`."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from aivos.edge.intent.spelling import SpellingCorrector
from aivos.shared.bundle import Manifest, load_bundle_manifest
from aivos.shared.errors import BundleError, DataError
from aivos.shared.ood import SCORE as OOD_SCORE
from aivos.shared.ood import OodScorer, OodStats
from aivos.shared.vocabulary import VOCABULARY_FILE, read_vocabulary

__all__ = [
    "IntentModel",
    "Prediction",
    "PROBE_TEXT",
    "ProviderProof",
    "SUB_BATCH",
    "provider_name",
]

log = logging.getLogger(__name__)

_CPU = "CPUExecutionProvider"
# Short names a config may use; any other string is taken as onnxruntime's own provider name.
PROVIDER_ALIASES = {
    "cpu": _CPU,
    "openvino": "OpenVINOExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}
# The query the start-up probe classifies (and `aivos doctor` with it).
PROBE_TEXT = "what are your opening hours"
# Rows per onnxruntime call after sorting a batch by token count. Measured on CLINC150 with
# one intra-op thread: groups of 4 ran 1,226 queries/s against 668 for whole padded batches
# of 64 and 775 for single rows (docs/performance.md).
SUB_BATCH = 4
# The graph's outputs a run asks for (the bundle contract, shared/bundle.py).
_OUTPUTS = ["probs", "sentence_embedding"]

ProviderOptions = Mapping[str, Mapping[str, object]]


def provider_name(name: str) -> str:
    """onnxruntime's name for a provider given as a short name ("openvino") or in full."""
    return PROVIDER_ALIASES.get(name.strip().lower(), name.strip())


def short_name(provider: str) -> str:
    """ "OpenVINOExecutionProvider" -> "OpenVINO": how the box says it in words."""
    return provider.removesuffix("ExecutionProvider")


class ProviderProof(msgspec.Struct, frozen=True):
    """What the start-up probe proved: the provider that ran a real query's kernels."""

    wanted: str  # the first provider the settings ask for (onnxruntime's name)
    provider: str  # the provider that spent the most kernel time on the probe
    kernel_us: dict[str, int]  # microseconds of kernel time per provider during the probe
    reason: str = ""  # why `provider` is not `wanted`, in words ("" when it is)

    @property
    def as_asked(self) -> bool:
        return self.provider == self.wanted

    def describe(self) -> str:
        """One line for logs and `aivos doctor`."""
        if self.as_asked:
            return f"running on {short_name(self.provider)}"
        return f"asked for {short_name(self.wanted)}, running on {short_name(self.provider)}" + (
            f": {self.reason}" if self.reason else ""
        )


class Prediction(msgspec.Struct, frozen=True):
    intent: str
    confidence: float  # the bundle's in-scope score: MSP, or the `shared/ood.py` score it carries
    in_scope: bool
    embedding: np.ndarray  # (dim,) float32, L2-normalised
    truncated: bool
    n_tokens: int  # tokens the model saw (after truncation), [CLS]/[SEP] included
    msp: float | None = None  # the max softmax probability (`confidence` without an ood score)


class IntentModel:
    """A loaded, verified bundle. Thread-safe: ORT `run` and tokenizer encoding are."""

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        proof: ProviderProof | None = None,
    ) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self._session = session
        self._tokenizer = tokenizer
        self._input_names = {i.name for i in session.get_inputs()}
        self._type_ids = "token_type_ids" in self._input_names
        self._masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # `_unpadded`, by length
        self._labels = np.asarray(manifest.labels)
        first = session.get_providers()[0]
        self.proof = proof or ProviderProof(wanted=first, provider=first, kernel_us={})
        # corrects queries before classification; None = classify them as written
        self.speller: SpellingCorrector | None = None
        # the bundle's embedding-distance out-of-scope score; None = MSP (`shared/ood.py`)
        self.ood: OodScorer | None = None

    @property
    def provider(self) -> str:
        """The provider the start-up probe proved, unless onnxruntime has since dropped it
        (a provider failing a later run makes onnxruntime recreate the session on CPU)."""
        live = self._session.get_providers()
        return self.proof.provider if self.proof.provider in live else live[0]

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        provider_options: ProviderOptions | None = None,
        spelling: bool = True,
        ood: bool = True,
    ) -> IntentModel:
        """Open a bundle on the first usable provider of `providers` (short names such as
        "openvino" or onnxruntime's names; CPU is always last) and prove it with one query.
        `spelling`: correct misspelt query words before classifying (`spelling.py`).
        `ood`: serve the bundle's embedding-distance out-of-scope score when it carries one
        (off: MSP against the manifest's `threshold`, as for a bundle without one)."""
        root = Path(bundle_dir)
        manifest = load_bundle_manifest(root)
        speller = _speller(root, manifest) if spelling else None
        scorer = _ood_scorer(root, manifest) if ood else None
        if spelling and speller is None:
            log.info("bundle %s has no word list: spelling correction off", root)
        try:
            tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise BundleError(str(root), f"cannot load tokenizer: {exc}") from exc
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=manifest.max_length)

        wanted = [provider_name(p) for p in providers or [_CPU]]
        available = ort.get_available_providers()
        reasons = [
            f"{short_name(p)} is not installed (this onnxruntime {ort.__version__} offers "
            f"{', '.join(short_name(a) for a in available)})"
            for p in wanted
            if p not in available
        ]
        for reason in reasons:
            log.warning("execution provider skipped: %s", reason)
        # CPU takes every node it is offered, so nothing after it in the list could run
        usable = [p for p in wanted if p in available]
        chosen = usable[: usable.index(_CPU)] if _CPU in usable else usable
        chosen.append(_CPU)
        options = _options_for(chosen, provider_options or {}, intra_op_threads)
        try:
            model, kernel_us = cls._open_and_probe(
                root, manifest, tokenizer, chosen, options, intra_op_threads, scorer
            )
        except Exception as exc:  # onnxruntime raises plain RuntimeError subclasses
            if chosen == [_CPU]:
                raise BundleError(str(root), f"cannot load model: {exc}") from exc
            # An accelerator that cannot start or cannot run the probe must not take the box
            # down: serve on CPU and say why.
            reasons.append(f"{short_name(chosen[0])} failed: {_first_line(exc)}")
            log.warning("execution provider %s failed, serving on CPU: %s", chosen[0], exc)
            try:
                model, kernel_us = cls._open_and_probe(
                    root, manifest, tokenizer, [_CPU], [{}], intra_op_threads, scorer
                )
            except Exception as cpu_exc:
                raise BundleError(str(root), f"cannot load model: {cpu_exc}") from cpu_exc
        model.proof = _proof(wanted[0], kernel_us, model._session.get_providers(), reasons)
        model.speller = speller
        level = logging.INFO if model.proof.as_asked else logging.WARNING
        log.log(
            level,
            "intent bundle %s loaded, %s (%d labels), spelling correction %s, out of scope by %s",
            manifest.bundle_version,
            model.proof.describe(),
            len(manifest.labels),
            "off" if speller is None else f"on ({speller.n_targets} words)",
            "MSP" if scorer is None else OOD_SCORE,
        )
        return model

    @classmethod
    def _open_and_probe(
        cls,
        root: Path,
        manifest: Manifest,
        tokenizer: Tokenizer,
        providers: list[str],
        provider_options: list[dict[str, str]],
        intra_op_threads: int | None,
        ood: OodScorer | None = None,
    ) -> tuple[IntentModel, dict[str, int]]:
        """A session on `providers` and the kernel time per provider of one real query."""
        profile_dir = Path(tempfile.mkdtemp(prefix="aivos-probe-"))
        try:
            options = _session_options(intra_op_threads)
            # The profiler names the provider of every kernel it times: the only proof of where
            # the model ran (a registered provider may be handed no node at all).
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_dir / "probe")
            session = ort.InferenceSession(
                str(root / "model.onnx"),
                sess_options=options,
                providers=providers,
                provider_options=provider_options,
                # no silent CPU session when a provider fails to start: load() says why
                enable_fallback=0,
            )
            model = cls(root, manifest, session, tokenizer)
            model.ood = ood
            model.classify(PROBE_TEXT)
            kernel_us = _kernel_time_by_provider(Path(session.end_profiling()))
            # from now on a provider failing a run falls back to CPU inside onnxruntime, as
            # by default; `provider` then reports CPU
            with contextlib.suppress(Exception):
                session.enable_fallback()
            return model, kernel_us
        finally:
            shutil.rmtree(profile_dir, ignore_errors=True)

    # -- manifest views -------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.manifest.bundle_version

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def threshold(self) -> float:
        """The in-scope threshold on `Prediction.confidence` (the served score's own)."""
        if self.ood is not None and self.manifest.ood is not None:
            return self.manifest.ood.threshold
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
        speller = self.speller
        if speller is not None:  # the classifier's input only: callers keep their text
            texts = [speller.correct(t) if isinstance(t, str) else t for t in texts]
        probs, embs, n_tokens, truncated = self._run(texts)
        idx = probs.argmax(1)
        msp = probs.max(1)
        scores = msp if self.ood is None else self.ood.score(msp, embs)
        # Python values once per batch (`tolist` gives what `float()` of each element would);
        # every numpy call or property read after the model's run is paid with cold caches
        labels = self.manifest.labels
        threshold, oos = self.threshold, self.manifest.oos_label
        return [
            Prediction(
                intent=labels[i],
                confidence=conf,
                in_scope=conf >= threshold and labels[i] != oos,
                embedding=emb,
                truncated=cut,
                n_tokens=n,
                msp=p,
            )
            for i, conf, p, emb, cut, n in zip(
                idx.tolist(), scores.tolist(), msp.tolist(), embs, truncated, n_tokens, strict=True
            )
        ]

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(n, embedding_dim) float32 L2-normalised embeddings (e.g. for knowledge chunks)."""
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return self._run(texts)[1]

    def _run(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[int], list[bool]]:
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"texts[{i}]", "text is empty")
        if len(texts) == 1:  # c=1 and most batches of a quiet box: no sorting, no scatter
            encoding = self._tokenizer.encode(texts[0])
            ids = encoding.ids
            probs, embs = self._run_padded([ids])
            return probs, embs, [len(ids)], [bool(encoding.overflowing)]
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
        if len(sequences) == 1:
            ids = np.array(sequences, dtype=np.int64)
            mask, type_ids = self._unpadded(ids.shape[1])
        else:
            longest = max(len(seq) for seq in sequences)
            ids = np.zeros((len(sequences), longest), dtype=np.int64)
            mask = np.zeros((len(sequences), longest), dtype=np.int64)
            for row, seq in enumerate(sequences):
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            type_ids = np.zeros_like(ids)
        feed = {"input_ids": ids, "attention_mask": mask}
        if self._type_ids:
            feed["token_type_ids"] = type_ids
        probs, embs = self._session.run(_OUTPUTS, feed)
        return probs, embs

    def _unpadded(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The attention mask (ones) and token types (zeros) of one unpadded row of `n`
        tokens: made once per length and shared (read-only; onnxruntime only reads inputs)."""
        pair = self._masks.get(n)
        if pair is None:
            mask, type_ids = np.ones((1, n), dtype=np.int64), np.zeros((1, n), dtype=np.int64)
            mask.flags.writeable = type_ids.flags.writeable = False
            pair = self._masks[n] = (mask, type_ids)
        return pair


def _speller(root: Path, manifest: Manifest) -> SpellingCorrector | None:
    """The corrector for a bundle, built from the training words it lists. A bundle built
    before `words.txt` existed gets none: general English alone "corrects" the site's own
    words ("pto", "uber") and cost 0.3 to 1 point of clean CLINC150 accuracy
    (benchmarks/results/intent_typos.json)."""
    if VOCABULARY_FILE not in manifest.files:
        return None
    return SpellingCorrector(read_vocabulary(root / VOCABULARY_FILE))


def _ood_scorer(root: Path, manifest: Manifest) -> OodScorer | None:
    """The bundle's embedding-distance out-of-scope score, or None for a bundle without one.
    A score this runtime does not compute is refused rather than served as MSP against a
    threshold chosen for another score."""
    if manifest.ood is None:
        return None
    if manifest.ood.score != OOD_SCORE:
        raise BundleError(str(root), f"unknown out-of-scope score {manifest.ood.score!r}")
    try:
        stats = OodStats.load(root / manifest.ood.file)
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(str(root), f"cannot load {manifest.ood.file}: {exc}") from exc
    if stats.means.shape[1:] != (manifest.embedding_dim,) or stats.precision.shape != (
        manifest.embedding_dim,
        manifest.embedding_dim,
    ):
        raise BundleError(str(root), f"{manifest.ood.file} does not fit the embedding size")
    return OodScorer(stats)


def _session_options(intra_op_threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # A spinning intra-op pool burns ~2x the CPU per query on a small box shared with the
    # HTTP server and SQLite writer (measured in benchmarks/edge_load.py); park idle threads.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
    return options


def _options_for(
    providers: list[str], configured: ProviderOptions, intra_op_threads: int | None
) -> list[dict[str, str]]:
    """onnxruntime's per-provider option dicts (strings), in the order of `providers`."""
    by_name = {provider_name(k): v for k, v in configured.items()}
    out = []
    for provider in providers:
        opts = {k: _option_value(v) for k, v in by_name.get(provider, {}).items()}
        if provider == PROVIDER_ALIASES["openvino"] and intra_op_threads:
            # OpenVINO runs its own thread pool, sized to every core by default; the box's
            # budget (one batch in flight per core, model.intra_op_threads each) holds for it too
            opts.setdefault("num_of_threads", str(intra_op_threads))
        out.append(opts)
    return out


def _option_value(value: object) -> str:
    if isinstance(value, bool):  # TOML true -> "true", as the providers' docs spell it
        return "true" if value else "false"
    return str(value)


def _kernel_time_by_provider(profile: Path) -> dict[str, int]:
    """Microseconds of kernel time per provider in an onnxruntime profile (chrome trace)."""
    totals: dict[str, int] = {}
    for event in json.loads(profile.read_bytes()):
        provider = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and provider:
            totals[provider] = totals.get(provider, 0) + int(event.get("dur", 0))
    return totals


def _proof(
    wanted: str, kernel_us: dict[str, int], live: list[str], reasons: list[str]
) -> ProviderProof:
    # (a graph with no timed kernel leaves only the registration to go by)
    provider = max(kernel_us, key=kernel_us.__getitem__) if kernel_us else live[0]
    reasons = list(reasons)
    if provider != wanted and not reasons and wanted not in live:
        # onnxruntime logs a provider that fails to start and goes on without it
        reasons.append(f"{short_name(wanted)} could not start (see onnxruntime's log above)")
    elif provider != wanted and not reasons:
        share = kernel_us.get(wanted, 0) / max(1, sum(kernel_us.values()))
        reasons.append(
            f"{short_name(wanted)} started but ran {share:.0%} of the model's kernel time"
            if share
            else f"{short_name(wanted)} started but took no node of this model"
        )
    return ProviderProof(
        wanted=wanted, provider=provider, kernel_us=kernel_us, reason="; ".join(reasons)
    )


def _first_line(exc: BaseException) -> str:
    """The message of an onnxruntime error without its C++ source location and signature."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return _CPP_PREFIX.sub("", lines[0]) or lines[0]


# "/onnxruntime/.../x.cc:1053 std::shared_ptr<...> ns::Func(const A&, ...) Invalid option: y"
_CPP_PREFIX = re.compile(r"^/\S+:\d+ [^(]*\([^)]*\) ")
