"""Spelling correction on a real built bundle: the build writes its word list, the runtime
corrects typo'd queries before classifying (and only then), old bundles still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest

from aivos.edge.intent import IntentModel
from aivos.edge.intent.evaluate import perturb_typos
from aivos.shared.bundle import load_bundle_manifest, write_manifest
from aivos.shared.datasets import load_examples
from aivos.shared.vocabulary import VOCABULARY_FILE, read_vocabulary
from tests.fixtures.model import run_aivos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(small_bundle: Path) -> tuple[IntentModel, IntentModel]:
    """The same bundle with and without correction."""
    return (
        IntentModel.load(small_bundle, intra_op_threads=1),
        IntentModel.load(small_bundle, intra_op_threads=1, spelling=False),
    )


def _hits(model: IntentModel, texts: list[str], labels: list[str]) -> list[bool]:
    preds = model.classify_batch(texts)
    return [p.intent == label and p.in_scope for p, label in zip(preds, labels, strict=True)]


def test_the_build_writes_the_training_words(small_bundle: Path) -> None:
    manifest = load_bundle_manifest(small_bundle)
    assert VOCABULARY_FILE in manifest.files  # hashed and verified like the model
    vocabulary = read_vocabulary(small_bundle / VOCABULARY_FILE)
    assert {"balance", "transfer", "weather", "alarm"} <= set(vocabulary.words)
    assert vocabulary.pairs  # word pairs for choosing between candidates


def test_typod_queries_are_classified_right_where_they_were_not(
    models: tuple[IntentModel, IntentModel], small_clinc: Path
) -> None:
    on, off = models
    assert on.speller is not None and off.speller is None
    rows = [e for e in load_examples(f"{small_clinc}#test") if e.label != "oos"]
    labels = [e.label for e in rows]
    noisy = perturb_typos([e.text for e in rows], 0.3, seed=5)
    with_fix, without = _hits(on, noisy, labels), _hits(off, noisy, labels)
    rescued = [t for t, a, b in zip(noisy, with_fix, without, strict=True) if a and not b]
    assert rescued, "no typo'd query was rescued by the correction"
    assert sum(with_fix) > sum(without)


def test_only_the_classifier_input_is_corrected(models: tuple[IntentModel, IntentModel]) -> None:
    on, off = models
    typo, fixed = "what is my acount balanse", "what is my account balance"
    assert on.speller is not None and on.speller.correct(typo) == fixed
    texts = [typo]
    pred = on.classify_batch(texts)[0]
    assert texts == [typo]  # the caller's text is untouched
    np.testing.assert_allclose(pred.embedding, off.classify(fixed).embedding, atol=1e-6)
    # knowledge chunks are embedded as written
    np.testing.assert_allclose(on.embed_batch([typo])[0], off.embed_batch([typo])[0], atol=1e-6)
    assert not np.allclose(on.embed_batch([typo])[0], pred.embedding, atol=1e-3)


def test_a_bundle_without_a_word_list_loads_as_before(
    small_bundle: Path, tmp_path: Path, models: tuple[IntentModel, IntentModel]
) -> None:
    old = tmp_path / "old"
    shutil.copytree(small_bundle, old)
    manifest = load_bundle_manifest(old)
    files = {k: v for k, v in manifest.files.items() if k != VOCABULARY_FILE}
    (old / VOCABULARY_FILE).unlink()
    write_manifest(old, msgspec.structs.replace(manifest, files=files))
    model = IntentModel.load(old, intra_op_threads=1)
    # English alone would "correct" the site's own words: such a bundle classifies as written
    assert model.speller is None
    query = "what is my acount balanse"
    assert model.classify(query).confidence == pytest.approx(models[1].classify(query).confidence)
    assert model.classify("what is my account balance").intent == "balance"


def test_eval_cli_reports_the_drop_with_and_without_correction(
    small_bundle: Path, small_clinc: Path
) -> None:
    def run(*extra: str) -> dict[str, object]:
        result = run_aivos(
            "intents", "eval", "--model", str(small_bundle), "--data", f"{small_clinc}#test",
            "--perturb", "typos", "--seed", "5", "--json", *extra,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    on, off = run(), run("--no-spelling")
    assert on["perturbed"]["spelling_correction"] is True  # type: ignore[index]
    assert off["perturbed"]["spelling_correction"] is False  # type: ignore[index]
    assert on["in_scope_drop"] < off["in_scope_drop"]  # type: ignore[operator]
