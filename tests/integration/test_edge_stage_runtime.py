"""IntentModel's one-query path (issue 16: c=1 runs a batch of one, tokenised with `encode`,
fed without padding arrays, with shared read-only masks) gives exactly what the general
path gives a batch of one: same tokens, same intent, in-scope flag and truncation, the same
scores and embedding to the bit. (A query in a larger batch may differ a little:
int8 activations are quantised per run.) A real int8 bundle (tests/fixtures/model.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aivos.edge.intent.runtime import IntentModel

TEXTS = [
    "what is my account balanse",  # corrected by the speller first
    "how do i freeze my card",
    "book a table for two at eight",
    "tell me a joke about penguins",
    "asdf qwer zxcv",
    " ".join(["please transfer money to my savings account"] * 60),  # past max_length
]


def _reference(model: IntentModel, text: str) -> tuple[str, float, float, np.ndarray, int, bool]:
    """A batch of one the general way: `encode_batch`, zero-filled padded arrays, numpy
    argmax / max and the out-of-scope score, Python values by `float()`."""
    fixed = model.speller.correct(text) if model.speller is not None else text
    encoding = model._tokenizer.encode_batch([fixed])[0]
    seq = encoding.ids
    ids = np.zeros((1, len(seq)), dtype=np.int64)
    mask = np.zeros((1, len(seq)), dtype=np.int64)
    ids[0, : len(seq)] = seq
    mask[0, : len(seq)] = 1
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in {i.name for i in model._session.get_inputs()}:
        feed["token_type_ids"] = np.zeros_like(ids)
    probs, embs = model._session.run(["probs", "sentence_embedding"], feed)
    msp = probs.max(1)
    scores = msp if model.ood is None else model.ood.score(msp, embs)
    intent = str(np.asarray(model.manifest.labels)[probs.argmax(1)[0]])
    return intent, float(scores[0]), float(msp[0]), embs[0], len(seq), bool(encoding.overflowing)


def test_one_query_takes_the_short_path_to_the_same_result(small_bundle: Path) -> None:
    model = IntentModel.load(small_bundle)
    assert model.ood is not None  # the bundle's out-of-scope score is part of what is compared
    for text in TEXTS:
        alone = model.classify(text)
        intent, confidence, msp, embedding, n_tokens, truncated = _reference(model, text)
        assert (alone.intent, alone.n_tokens, alone.truncated) == (intent, n_tokens, truncated)
        assert alone.confidence == confidence and alone.msp == msp
        assert alone.in_scope == (
            confidence >= model.threshold and intent != model.manifest.oos_label
        )
        assert np.array_equal(alone.embedding, embedding)
        assert type(alone.intent) is str and type(alone.confidence) is float
    assert model.classify(TEXTS[-1]).truncated
    assert model.classify(TEXTS[-1]).n_tokens == model.manifest.max_length
    # the shared masks are read-only and stay what they are
    assert model._masks
    for mask, type_ids in model._masks.values():
        assert not mask.flags.writeable and bool((mask == 1).all())
        assert not type_ids.flags.writeable and bool((type_ids == 0).all())


def test_a_batch_still_classifies_every_row(small_bundle: Path) -> None:
    model = IntentModel.load(small_bundle)
    batch = model.classify_batch(TEXTS)
    assert len(batch) == len(TEXTS)
    for text, together in zip(TEXTS, batch, strict=True):
        alone = model.classify(text)
        # tokens are the row's own; its scores may differ a little (int8 activations are
        # quantised per run, over the rows run together)
        assert (alone.intent, alone.n_tokens, alone.truncated) == (
            together.intent,
            together.n_tokens,
            together.truncated,
        )
