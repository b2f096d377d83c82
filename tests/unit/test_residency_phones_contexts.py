"""Phones in contexts and spellings the public set's dev templates do not show, found with our
own generators (`benchmarks/pii_phones.py` context carriers, `benchmarks/pii_phone_tradeoff.py`
Faker numbers): one test per format, each with the look-alikes that must stay unmasked."""

from __future__ import annotations

import pytest

from aivos.shared.residency import MaskMapping, default_masker
from aivos.shared.residency.phones import PhoneRecognizer

PHONE = PhoneRecognizer()


def _phones(text: str) -> list[str]:
    return [text[s.start : s.end] for s in PHONE.find(text)]


def _masked(text: str) -> str:
    """The text as the whole masker (scanned path) leaves it."""
    return default_masker().mask(text, MaskMapping()).text


@pytest.mark.parametrize(
    "text, value",
    [
        # an upper-cased sentence writes the extension `X`, not `x`
        ("I LEFT 858-970-5993X344 WITH THE RECEPTIONIST.", "858-970-5993X344"),
        ("PHONE: (837)989-2847X006", "(837)989-2847X006"),
        ("I LEFT 908.662.2303X815 WITH HER.", "908.662.2303X815"),
    ],
)
def test_extension_in_upper_case(text: str, value: str) -> None:
    assert _phones(text) == [value]
    assert value not in _masked(text)


def test_a_resolution_with_an_upper_case_x_stays() -> None:
    assert _phones("The screen is 1920X1080 pixels.") == []


@pytest.mark.parametrize(
    "text, value",
    [
        ("Smith,0623 286 01 29,js@example.com", "0623 286 01 29"),
        ("Anna Berg,(898)666-3621,anna@example.com", "(898)666-3621"),
    ],
)
def test_a_value_glued_to_a_word_by_a_comma_in_a_csv_row(text: str, value: str) -> None:
    assert _phones(text) == [value]
    assert value not in _masked(text)


def test_a_comma_after_a_digit_is_still_a_thousands_separator() -> None:
    assert _phones("We processed 1,234,567 payments and 12,345,678 refunds.") == []


@pytest.mark.parametrize(
    "text, value",
    [
        ("Phone#0623 286 01 29", "0623 286 01 29"),
        ("Tel #0623 286 01 29 after six", "0623 286 01 29"),
        ("Mobile#395 3624", "395 3624"),
    ],
)
def test_hash_glued_after_a_phone_cue(text: str, value: str) -> None:
    assert _phones(text) == [value]
    assert value not in _masked(text)


@pytest.mark.parametrize(
    "text",
    ["Ticket#4471203 is closed.", "We met at #0623 286 01 29 street.", "Order #100234567"],
)
def test_hash_after_any_other_word_is_a_reference(text: str) -> None:
    assert _phones(text) == []


@pytest.mark.parametrize(
    "text, value",
    [
        ("Call us on 0800 123 4567 24/7.", "0800 123 4567"),
        ("The hotline +447700 650 856 24/7 takes cards.", "+447700 650 856"),
    ],
)
def test_around_the_clock_after_a_number_is_no_part_of_it(text: str, value: str) -> None:
    assert _phones(text) == [value]
    assert "24/7" in _masked(text)


@pytest.mark.parametrize(
    "value",
    [
        "+54 9 3358 0730",  # Faker es_AR: a digit short of Argentina's mobile plan
        "+389(0)332245383",  # Faker mk_MK: `(0)` glued, a digit more than the plan
        "+1-555-010-99999",
    ],
)
def test_plus_and_ten_to_fifteen_digits_in_groups(value: str) -> None:
    assert _phones(f"It changed to {value} last week.") == [value]


@pytest.mark.parametrize(
    "text",
    [
        "Revenue moved +12 345 on the quarter.",  # too few digits
        "It changed to +1234 5678 9012 3456 7 last week.",  # 17 digits: no phone
    ],
)
def test_plus_with_other_digit_counts_stays(text: str) -> None:
    assert _phones(text) == []


@pytest.mark.parametrize(
    "text, values",
    [
        ("From 0623 286 01 29/0725 102 73 46 after six.", ["0623 286 01 29", "0725 102 73 46"]),
        ("Tel/Fax: 75721103/30271937!", ["75721103", "30271937"]),  # a cue counts for both
        ("Desk (898)666-3621/+41 (0)96 471 07 95", ["(898)666-3621", "+41 (0)96 471 07 95"]),
    ],
)
def test_numbers_joined_by_a_slash_each_on_its_own(text: str, values: list[str]) -> None:
    assert _phones(text) == values
    masked = _masked(text)
    assert not any(v in masked for v in values)


@pytest.mark.parametrize(
    "text",
    [
        "Vejle! 75721103/30271937!",  # bare 8-digit runs with no cue stay, as alone
        "FV 0932/01/2026 is due.",
        "Dates 12.05.2024/13.05.2024 are booked.",
    ],
)
def test_slashes_that_join_no_phones(text: str) -> None:
    assert _phones(text) == []


def test_an_area_code_before_a_slash_is_not_split_off() -> None:
    assert _phones("Berlin 030/1234567") == ["030/1234567"]


@pytest.mark.parametrize(
    "text, value",
    [
        ("Room 12 +41 (0)96 471 07 95", "+41 (0)96 471 07 95"),
        ("Unit 5 +44 20 7946 0958 is mine", "+44 20 7946 0958"),
    ],
)
def test_an_international_number_right_after_another_number(text: str, value: str) -> None:
    assert value in _phones(text)
    assert "+41" not in _masked(text) and "+44" not in _masked(text)


@pytest.mark.parametrize("value", ["80 59 01", "56 24 56"])
def test_three_groups_before_a_capitalised_word_are_no_house_numbers(value: str) -> None:
    # Greenland numbers as their plan writes them; two house numbers are two groups
    assert _phones(f"It changed to {value} Monday.") == [value]
    # a pack without these numbers' regions: only the plan grouping could take them
    assert PhoneRecognizer(["US", "CA", "MX"]).find("at 9816 214 Pavlou Drandaki") == []


def test_a_double_zero_that_leads_nowhere_in_the_north_american_shape() -> None:
    assert _phones("Use 005-599-2651 if the other one is busy.") == ["005-599-2651"]
    assert _phones("Order 005-599-2651 shipped.") == []


@pytest.mark.parametrize(
    "text, value",
    [
        ("It changed to 788 4965 Please call me there.", "788 4965"),  # Estonia, 3 + 4
        ("It changed to 788 4965 Monday.", "788 4965"),
    ],
)
def test_two_groups_before_a_sentence_going_on_are_no_house_numbers(text: str, value: str) -> None:
    assert _phones(text) == [value]


@pytest.mark.parametrize(
    "text",
    [
        "my addresses, here they are: 638 2229 Wolmarans St",
        "Meet me at 7943 2027 Prospect St, Dehylov",
        "Please return to 788 4965 Heatherleigh Suite 620",
        "The restaurant is at 9816 214 Pavlou Drandaki",
    ],
)
def test_two_groups_before_a_street_name_stay_house_numbers(text: str) -> None:
    # a pack without these numbers' regions: only the plan grouping could take them
    assert PhoneRecognizer(["US", "CA", "MX"]).find(text) == []


@pytest.mark.parametrize(
    "text, value",
    [
        ("Tel.:0623 286 01 29", "0623 286 01 29"),
        ("Phone No.:0623 286 01 29", "0623 286 01 29"),
        ("Ph.#0623 286 01 29", "0623 286 01 29"),
    ],
)
def test_a_label_abbreviated_with_a_full_stop_then_glued(text: str, value: str) -> None:
    assert _phones(text) == [value]
    assert value not in _masked(text)


@pytest.mark.parametrize(
    "text", ["Ref.:0623 286 01 29", "Ref.#0623 286 01 29", "at 10:42:13 today", "v1.:123456789"]
)
def test_abbreviated_labels_of_other_numbers_and_times_stay(text: str) -> None:
    assert _phones(text) == []
