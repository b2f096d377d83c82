"""Phones with no cue word, recognised by how they are grouped (`phone_plans.py`), and phones
behind a label glued to them (`Phone:0623 286 01 29`); the numbers that must stay."""

from __future__ import annotations

import pytest

from aivos.shared.residency import MaskMapping, default_masker
from aivos.shared.residency.phone_plans import written_as_plan
from aivos.shared.residency.phones import PhoneRecognizer

PHONE = PhoneRecognizer()


def _phones(text: str) -> list[str]:
    return [text[s.start : s.end] for s in PHONE.find(text)]


@pytest.mark.parametrize(
    "value",
    [
        # Estonia / Iceland: 3 + 4, as their plans write 7-digit numbers; valid in no region
        # of the default pack, so before only a cue word made them phones
        "788 4965",
        "786 3468",
        "798 3687",
        "499 5035",
        "66 31 35",  # Greenland: three pairs
    ],
)
def test_plan_grouped_numbers_outside_the_pack_without_a_cue(value: str) -> None:
    assert not {"IS", "EE", "GL"} & set(PHONE.regions)
    assert _phones(f"It changed to {value} last week.") == [value]


@pytest.mark.parametrize(
    "text",
    [
        "It changed to 3953624 last week.",  # a bare 7-digit run: an order number as often
        "Your order 395 3624 was shipped.",  # a word naming another number still vetoes
        "It changed to 712 345 last week.",  # six digits in two groups (an amount as often)
        "I left 12 30 45 with the receptionist.",  # three pairs valid in no plan
        "The batch 20240315 0930 ran for 47 minutes.",
    ],
)
def test_numbers_that_stay(text: str) -> None:
    assert _phones(text) == []


@pytest.mark.parametrize("value", ["12345.67", "2500000.00", "102938.45"])
def test_an_amount_with_cents_is_no_phone_without_a_cue(value: str) -> None:
    assert _phones(f"We paid {value} yesterday.") == []
    assert _phones(f"Tel: {value}") == [value]  # a cue still says otherwise


@pytest.mark.parametrize(
    "text",
    [
        "The restaurant is at 9816 214 Pavlou Drandaki",  # building + house number, a street
        "3747 3911 fourth avenue suite 112 calgary alberta",
    ],
)
def test_house_numbers_before_a_street_are_left_to_the_address_rules(text: str) -> None:
    # a pack without these numbers' regions: only the plan grouping could take them
    assert PhoneRecognizer(["US", "CA", "MX"]).find(text) == []


def test_written_as_plan() -> None:
    assert written_as_plan("395 3624")
    assert written_as_plan("66-31-35")  # the separator's kind does not matter
    assert not written_as_plan("3953624")  # one group: nothing to read
    assert not written_as_plan("1234 5678")  # 4 + 4 but valid for no region written so
    assert not written_as_plan("250 000")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Phone:0623 286 01 29", "0623 286 01 29"),
        ("tel:+44 20 7946 0958", "+44 20 7946 0958"),
        ("Whatsapp:26 943046 ok", "26 943046"),
        ("Caller ID 0623 286 01 29 showed up.", "0623 286 01 29"),
        ("Tel.0195 683 23 74", "0195 683 23 74"),
        ("Mob.0195 683 23 74, evenings", "0195 683 23 74"),
    ],
)
def test_label_glued_to_the_number(text: str, value: str) -> None:
    assert _phones(text) == [value]
    masked = default_masker().mask(text, MaskMapping()).text  # the pre-filtered path too
    assert value not in masked and "<PHONE_1>" in masked


@pytest.mark.parametrize(
    "text", ["at 10:42:13 today", "ratio 1:2345678 x", "ID:123456789", "at 10.42.13 ok"]
)
def test_a_colon_after_a_digit_or_an_id_word_is_no_label(text: str) -> None:
    assert _phones(text) == []
