"""Gaps found on public data nobody here wrote (issue 14): the second public set
(Nannigalaxy), libphonenumber's example numbers, and shouted (ALL-CAPS) text."""

from __future__ import annotations

import pytest

from aivos.shared.residency import default_masker
from aivos.shared.residency.tagger import TaggerRecognizer


def _masked(text: str, locales: list[str] | None = None) -> tuple[str, dict[str, int]]:
    r = default_masker(locales=locales).mask(text)
    return r.text, r.counts


@pytest.mark.parametrize(
    "text",
    [
        "Acme Bank listed EIN 94-2841935 in its filings.",
        "His tax ID number 22-3456789 might be visible in logs.",
        "Federal Tax ID: 942841935",
        "Employer Identification Number 94-2841935",
    ],
)
def test_us_ein_after_a_cue(text: str) -> None:
    masked, counts = _masked(text, ["US"])
    assert "2841935" not in masked and "3456789" not in masked
    assert counts == {"NATIONAL_ID": 1}


@pytest.mark.parametrize(
    "text",
    [
        "Order 94-2841935 shipped on time.",  # no cue: an order number
        "Our EIN is 00-2841935.",  # 00 is no IRS campus prefix
    ],
)
def test_ein_shape_without_cue_or_with_a_bad_prefix_is_kept(text: str) -> None:
    assert _masked(text, ["US"])[0] == text


def test_a_word_between_cue_and_value() -> None:
    masked, counts = _masked("The traveller's passport ID QX2019843 was scanned.")
    assert "QX2019843" not in masked and counts == {"PASSPORT": 1}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Send it to IFSC SBIN0001234 today.", "SBIN0001234"),
        ("IFSC code: HDFC0CAGSBK", "HDFC0CAGSBK"),  # branch part without a digit
        ("with account number SBIN012345678901.", "SBIN012345678901"),  # bank prefix glued on
    ],
)
def test_indian_bank_codes(text: str, value: str) -> None:
    masked, counts = _masked(text, ["IN"])
    assert value not in masked and counts == {"BANK_ACCOUNT": 1}


def test_ifsc_shape_needs_the_zero() -> None:
    text = "The code SBINX001234 is not a branch."
    assert _masked(text, ["IN"])[0] == text


def test_shouted_words_are_no_names() -> None:
    text = (
        "DUPLICATE CHARGES: WHEN A CARD PAYMENT IS SHOWN TWICE, THE SECOND ENTRY IS USUALLY A "
        "PRE-AUTHORISATION THAT DROPS OFF WITHIN 3-5 BUSINESS DAYS."
    )
    assert TaggerRecognizer().find(text) == []
    assert _masked(text)[0] == text


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("PLEASE FORWARD THIS TO MARGARET KOWALSKA BY FRIDAY.", "MARGARET KOWALSKA"),
        ("THE FORM WAS SIGNED BY TOMOMI HASEGAWA.", "TOMOMI"),  # a word in no dictionary
    ],
)
def test_names_in_shouted_text_are_still_masked(text: str, name: str) -> None:
    assert name not in _masked(text)[0]


@pytest.mark.parametrize(
    "phone",
    [
        "012.34.56.78",  # Belgium, dots: the shape of an IP address, but no valid one
        "0450-00-12-34",  # Belgium, dashes: no ISO date in front
        "0049 800 1234567890",  # 00 + 13 digits: the 00 is no digit of the number
        "(06 1) 234 5678",  # Hungary: a bracketed trunk and area code
        "8 (71234) 5 67 89",  # Kazakhstan: a five-digit code in brackets
    ],
)
def test_libphonenumber_example_shapes(phone: str) -> None:
    masked, counts = _masked(f"Please call me on {phone} after six.")
    assert phone not in masked and counts == {"PHONE": 1}


@pytest.mark.parametrize("phone", ["80-21-23", "75.12.34", "32-10-00"])
def test_six_digits_in_groups_after_a_cue_that_are_no_date(phone: str) -> None:
    assert _masked(f"Tel: {phone}")[0] == "Tel: <PHONE_1>"


@pytest.mark.parametrize(
    "text",
    [
        "Please call me on 12.05.24 about the loan.",  # a real date after "call me on"
        "The server 192.168.1.20 was restarted.",  # a valid IPv4 address stays one
        "Batch 2024-03-15-0007 failed at 10:42:13.",
    ],
)
def test_dates_and_addresses_stay_no_phones(text: str) -> None:
    _, counts = _masked(text)
    assert "PHONE" not in counts


def test_a_phone_cue_word_is_no_name() -> None:
    assert _masked("Tel: 62889")[0] == "Tel: 62889"
