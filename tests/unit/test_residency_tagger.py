"""The PII token tagger: its shipped model, the hash check, what it finds and what it leaves."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from importlib import resources
from pathlib import Path

import pytest

from aivos.shared.residency import default_masker
from aivos.shared.residency.names import all_names
from aivos.shared.residency.normalize import normalize
from aivos.shared.residency.recognizers import PhoneRecognizer
from aivos.shared.residency.spans import Span, find_all
from aivos.shared.residency.tagger import (
    _SENTENCE_END,
    _TRIM,
    MODEL_SHA256,
    ModelIntegrityError,
    TaggerRecognizer,
    _contraction,
    _plausible,
    load_model,
    model_from_bytes,
)
from aivos.shared.residency.tagger_features import CLASSES, tokenize
from aivos.shared.residency.words import SUFFIX_WORDS

_ROOT = Path(__file__).resolve().parents[2]


def _model_bytes() -> bytes:
    return resources.files("aivos.shared.residency").joinpath("data", "pii_tagger.npz").read_bytes()


def test_shipped_model_has_the_recorded_hash_and_loads() -> None:
    data = _model_bytes()
    assert hashlib.sha256(data).hexdigest() == MODEL_SHA256
    assert len(data) < 2_000_000
    assert load_model().weights.shape[1] == 3


def test_a_changed_model_file_is_refused() -> None:
    data = bytearray(_model_bytes())
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(ModelIntegrityError) as err:
        model_from_bytes(bytes(data), MODEL_SHA256)
    assert err.value.expected == MODEL_SHA256
    assert err.value.found != MODEL_SHA256


# Names that are in no list the model or the rules were built from (checked below), in
# contexts that none of the rules' cue words start.
_UNSEEN = [
    ("Yesterday Zorvath Quellmir signed the lease.", "Zorvath Quellmir"),
    ("The form was witnessed by Ildrun Vashenko last week.", "Ildrun Vashenko"),
    ("follow up with brannoc teluvski next month", "brannoc teluvski"),
]


@pytest.mark.parametrize(("text", "name"), _UNSEEN)
def test_masks_names_no_list_holds(text: str, name: str) -> None:
    assert not set(name.title().split()) & all_names()
    result = default_masker().mask(text)
    assert name not in result.text
    assert result.counts.get("PERSON") == 1


def test_tags_an_unseen_street_address() -> None:
    text = "Please send the card to 4417 Vorndaleweg 12, Brekkum."
    spans = TaggerRecognizer().find(text)
    assert any(s.entity == "ADDRESS" and text[s.start : s.end].startswith("4417") for s in spans)


@pytest.mark.parametrize(
    "text",
    [
        "Dispute a transaction under Payments > Disputes within 30 days.",
        "Refunds are sent to the original payment method; bank transfers take 1-2 days.",
        "the volunteer orchestra played in the park on sunday",
        "Maybe the branch can help with the billing date.",
        "Call the hotline for amounts above EUR 5,000.",
    ],
)
def test_leaves_text_without_pii_alone(text: str) -> None:
    assert TaggerRecognizer().find(text) == []
    assert default_masker().mask(text).text == text


def test_overlapping_spans_are_joined_not_cut() -> None:
    class Fixed:
        entity = "X"

        def __init__(self, spans: list[Span]) -> None:
            self.spans = spans

        def find(self, text: str) -> list[Span]:
            return self.spans

    text = "abcdefghij"
    spans = find_all(text, [Fixed([Span(0, 6, "ADDRESS")]), Fixed([Span(4, 9, "PHONE")])])
    assert spans == [Span(0, 9, "ADDRESS")]


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("You can reach me on (+358) 40 123 4567 after six.", "(+358) 40 123 4567"),
        ("Mobile: (+30) 2685 955726", "(+30) 2685 955726"),
        ("Call me at (52)/301-1100 tomorrow.", "(52)/301-1100"),
    ],
)
def test_phone_formats(text: str, phone: str) -> None:
    spans = PhoneRecognizer().find(text)
    assert [text[s.start : s.end] for s in spans] == [phone]
    assert phone not in default_masker().mask(text).text


def _every_token_labelled(recognizer: TaggerRecognizer, text: str) -> list[Span]:
    """The tagger's spans the plain way: every token labelled, every run checked."""
    tokens = tokenize(text)
    labels = recognizer.model.labels([t.group() for t in tokens])
    lower_text, spans, i = text.islower(), [], 0
    upper_text = not lower_text and text.isupper()
    while i < len(tokens):
        c = labels[i]
        j = i
        while j + 1 < len(tokens) and labels[j + 1] == c:
            j += 1
        a, b, i = i, j, j + 1
        while a <= b and tokens[a].group() in _TRIM:
            a += 1
        while b >= a and (
            tokens[b].group() in _TRIM or lower_text and _contraction(tokens[b].group())
        ):
            b -= 1
        if c == 2 and a <= b < len(tokens) - 1 and tokens[b + 1].group().lower() in SUFFIX_WORDS:
            b += 1  # the street word the model left out, as `find` does
        if c == 0 or a > b:
            continue
        start, end = tokens[a].start(), tokens[b].end()
        glued = start > 0 and text[start - 1].isalnum() or text[end : end + 1].isalnum()
        before = tokens[a - 1].group() if a > 0 else ""
        before2 = tokens[a - 2].group() if a > 1 else ""
        before3 = tokens[a - 3].group() if a > 2 else ""
        at_start = a == 0 or before in _SENTENCE_END
        words = [t.group() for t in tokens[a : b + 1]]
        lexicon = load_model().lexicon
        context = [t.group() for t in tokens]
        if CLASSES[c] == "ADDRESS" and len(text[start:end].split()) < 2:
            continue
        if not glued and _plausible(
            CLASSES[c],
            words,
            lexicon,
            at_start,
            lower_text,
            upper_text,
            before,
            context,
            before2,
            before3,
        ):
            spans.append(Span(start, end, CLASSES[c]))
    return spans


def test_labelling_only_around_key_words_finds_what_labelling_every_token_finds() -> None:
    """`find` labels only the tokens that can make a run pass the checks and grows their
    runs; on the public sentences, in lower and upper case, and joined with odd spacing it
    must give the spans of labelling every token."""
    with gzip.open(_ROOT / "benchmarks/data/presidio_synth_dataset_v2.jsonl.gz", "rt") as fh:
        public = [json.loads(line)["text"] for line in fh if line.strip()]
    rnd = random.Random(4)
    joined = [rnd.choice(["  ", "\n", " _ ", "\t"]).join(rnd.sample(public, 3)) for _ in range(100)]
    texts = [normalize(t).text for t in public + joined]
    texts += [t.lower() for t in texts[:500]] + [t.upper() for t in texts[:500]]
    tagger = TaggerRecognizer()
    found = [tagger.find(t) for t in texts]
    assert sum(map(len, found)) > 1000  # the set is full of names and streets
    assert [
        t for t, f in zip(texts, found, strict=True) if f != _every_token_labelled(tagger, t)
    ] == []
