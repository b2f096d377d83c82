"""Phone numbers the public set's generator writes, with and without a cue, and the numbers
that are not phones (order, policy and ticket numbers, amounts, ranges, postcodes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aivos.shared.residency import default_masker
from aivos.shared.residency.phones import PhoneRecognizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pii_phones  # noqa: E402

PHONE = PhoneRecognizer()


def _phones(text: str) -> list[str]:
    return [text[s.start : s.end] for s in PHONE.find(text)]


@pytest.mark.parametrize(
    "value",
    [
        "345-899-3560x4587",  # presidio generator: extension glued on
        "(898)666-3621x0135",
        "259.735.7502x459",
        "001-253-366-9781",  # 001 international prefix
        "+1-903-140-4508x769",
        "119-181-2055",  # North American shape, area code not assigned
        "+41 (0)96 471 07 95",  # trunk zero in brackets after +CC
        "+46 (0)157 548 89",
        "(07700) 921 916",
        "0650 822 64 07",  # Austrian mobile, four groups
        "06 010 891 1512",  # four groups, valid nowhere (the generator's Portuguese numbers)
    ],
)
def test_generator_shapes_without_a_cue(value: str) -> None:
    text = f"I left {value} with the receptionist yesterday."
    assert _phones(text) == [value]


@pytest.mark.parametrize("value", ["48 45 55", "84 23 30"])
def test_six_digit_groups_after_a_cue(value: str) -> None:
    assert _phones(f"Tel: {value}") == [value]
    assert _phones("Tel: 484555") == []  # a bare 6-digit run may be a PIN or a code
    # without a cue six digits are a phone only grouped as a plan writes them and valid there
    # (Greenland: these two; `test_residency_phones_nocue.py`); `12 30 45` is valid nowhere
    assert _phones(f"I left {value} with the receptionist.") == [value]
    assert _phones("I left 12 30 45 with the receptionist.") == []


@pytest.mark.parametrize(
    "text",
    [
        "Your order 4512 3398 was shipped on Monday.",
        "Order number 100234567 has been refunded.",
        "Policy 88 1234 5678 renews each January.",
        "Claim 2024 118 5521 was approved.",
        "Pallet 12 34 56 78 arrived at dock 3.",
        "My driver's license number is 6940579",
        "The transfer of EUR 1 250 000 was approved.",
        "The vault holds 2 500 000 in reserve.",
        "Sessions run 2023-2024 and 2024-2025.",
        "ZIP 94105-1234 is outside the delivery area.",
        "The batch 20240315 0930 ran for 47 minutes.",
        "Batch 2024-03-15-0007 failed.",
    ],
)
def test_other_numbers_are_not_phones(text: str) -> None:
    assert _phones(text) == []


def test_international_prefix_wins_over_a_reference_word() -> None:
    assert _phones("about my account: +44 20 7946 0958.") == ["+44 20 7946 0958"]


def test_generator_recall_and_non_pii_side() -> None:
    """Every FakeNameGenerator shape and provider format of the public set's generator, in
    carrier sentences with and without a cue; realistic non-PII numbers stay."""
    res = pii_phones.evaluate(n_per_shape=2, seed=3)
    assert res["cue"]["all"]["recall"] == 1.0
    # without a cue only the 6-digit Greenland numbers (`## ## ##`) stay
    missed = {k for k, v in res["no_cue"].items() if k.startswith("fng:") and v["recall"] < 1}
    assert missed <= {"fng:GL"}
    # the provider's `0##########` drawn as `00…` reads as an international prefix that leads
    # nowhere (about 1 value in 300): no real number is written so
    assert res["no_cue"]["provider"]["recall"] >= 0.98
    phones_masked = [
        c for c in res["non_pii"]["which"] if any(t == "PHONE" for _, t in c["masked"])
    ]
    assert phones_masked == []


def test_masked_in_place() -> None:
    out = default_masker().mask("Desk: (602)272-9781 Fax: 001-253-366-9781").text
    assert out == "Desk: <PHONE_1> Fax: <PHONE_2>"


def test_second_set_evaluator_counts_spans_it_finds() -> None:
    """`pii_second.py` (the second public set) locates values by their text and counts a
    value masked only when every character of it is covered."""
    import pii_second

    rows = [
        {"text": "Call Anna Schmidt on +44 20 7946 0958.", "NER": [
            {"entity": "+44 20 7946 0958", "label": "PHONE"},
            {"entity": "Anna Schmidt", "label": "PERSON"},
            {"entity": "hunter2", "label": "PASSWORD"},  # not in the text: counted apart
        ]},
        {"text": "The branch opens at nine.", "NER": []},
        {"text": "Password: hunter2", "NER": [{"=": "hunter2", "label": "PASSWORD"}]},
    ]  # fmt: skip
    res = pii_second.evaluate(rows)
    assert res["recall"]["phone"] == {"values": 1, "masked": 1, "recall": 1.0}
    assert res["recall"]["person"]["masked"] == 1
    assert res["recall"]["not covered: PASSWORD"] == {"values": 1, "masked": 0, "recall": 0.0}
    assert res["values_not_found_verbatim"] == 1
    assert (res["pii_free_sentences"], res["pii_free_changed"]) == (1, 0)
