"""Every format issue 14 found passing through unmasked, each one now masked."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from aivos.shared.errors import ConfigError
from aivos.shared.residency import ResidencyPolicy, default_masker
from aivos.shared.residency.cli import mask_cmd
from aivos.shared.residency.normalize import normalize

MASKER = default_masker()


@pytest.mark.parametrize(
    ("value", "entity"),
    [
        ("4111 1111 1111 1111", "CARD"),  # followed by its expiry below
        ("4111.1111.1111.1111", "CARD"),
        ("４１１１ １１１１ １１１１ １１１１", "CARD"),  # fullwidth digits
        ("4111\u200b1111\u200b1111\u200b1111", "CARD"),  # zero-width spaces
        ("6759649826438453", "CARD"),  # Maestro 6759
        ("5018000000000009", "CARD"),  # Maestro 50xx
        ("6070000000000002", "CARD"),  # RuPay 60xx
        ("de89 3704 0044 0532 0130 00", "IBAN"),
        ("DE89-3704-0044-0532-0130-00", "IBAN"),
        ("jösé.müller@bücher.de", "EMAIL"),
        ("anna.smith at example dot com", "EMAIL"),
        ("1-800-555-0199", "PHONE"),
        ("0049 30 12345678", "PHONE"),
        ("+49 30 12345678", "PHONE"),
        ("+91 98765 43210", "PHONE"),
        ("138 0013 8000", "PHONE"),
        ("+55 11 91234-5678", "PHONE"),
        ("123.45.6789", "SSN"),
        ("20-00-00 12345678", "BANK_ACCOUNT"),
        ("AB 12 34 56 C", "NATIONAL_ID"),  # UK NI number
        ("12345678Z", "NATIONAL_ID"),  # Spanish DNI
        ("RSSMRA85T10A562S", "NATIONAL_ID"),  # Italian codice fiscale
        ("2341 2341 2346", "NATIONAL_ID"),  # Aadhaar
        ("130 692 544", "NATIONAL_ID"),  # Canadian SIN
        ("2 84 05 73 128 042 02", "NATIONAL_ID"),  # French INSEE number
    ],
)
def test_format_is_masked(value: str, entity: str) -> None:
    text = f"Hi, please use {value} for this."
    result = MASKER.mask(text)
    assert value not in result.text
    assert result.counts.get(entity) == 1, result.text
    assert result.text == f"Hi, please use <{entity}_1> for this."


@pytest.mark.parametrize(
    ("text", "entity", "masked"),
    [
        ("card 4111 1111 1111 1111 12/26 please", "CARD", "card <CARD_1> 12/26 please"),
        ("paid with VISA4111111111111111 yesterday", "CARD", "paid with VISA<CARD_1> yesterday"),
        ("routing 021000021 account 123456789", "BANK_ACCOUNT",
         "routing <BANK_ACCOUNT_1> account <BANK_ACCOUNT_2>"),
        ("my passport number is X1234567", "PASSPORT", "my passport number is <PASSPORT_1>"),
    ],
)  # fmt: skip
def test_format_in_context(text: str, entity: str, masked: str) -> None:
    assert MASKER.mask(text).text == masked


def test_placeholder_replaces_exactly_the_original_characters() -> None:
    text = "x ４１１１\u200b１１１１\u200b１１１１\u200b１１１１ y"
    norm = normalize(text)
    assert norm.text == "x 4111111111111111 y"
    result = MASKER.mask(text)
    assert result.text == "x <CARD_1> y"
    assert result.mapping.value("<CARD_1>") == text[2:-2]


def test_names_addresses_dates_of_birth() -> None:
    text = "My name is Anette Lahtela, born 11/3/1985, I live at 217 Lovers Lane, Springfield."
    result = MASKER.mask(text)
    assert result.counts == {"PERSON": 1, "DATE_OF_BIRTH": 1, "ADDRESS": 1}
    assert "Lahtela" not in result.text and "1985" not in result.text


def test_text_without_pii_is_unchanged() -> None:
    text = "Refunds take 3-5 business days; disputes over EUR 5,000 go to the branch on 2024-03-15."
    assert MASKER.mask(text).text == text


def test_custom_rule_runs_in_linear_time_and_lookaround_is_rejected() -> None:
    policy = ResidencyPolicy.from_mapping({"custom": [{"name": "BAD", "pattern": "(a+)+$"}]})
    assert policy.recognizers()[0].find("a" * 20000 + "!") == []  # would hang on `re`
    with pytest.raises(ConfigError, match=r"custom\[0\]\.pattern"):
        ResidencyPolicy.from_mapping({"custom": [{"name": "X", "pattern": r"(?<=a)b"}]})


def test_locale_pack_follows_region() -> None:
    assert "GB" in ResidencyPolicy(region="eu-west").locale_pack()
    assert ResidencyPolicy(region="x", locales=("in",)).locale_pack() == ("IN",)


def test_all_locales_option_and_site_pack_masker() -> None:
    from aivos.shared.residency.locales import DEFAULT_LOCALES

    assert ResidencyPolicy(region="us-east", locales=("*",)).locale_pack() == DEFAULT_LOCALES
    assert ResidencyPolicy(locales=("all",)).locale_pack() == DEFAULT_LOCALES
    with pytest.raises(ConfigError, match=r"locales\[0\]"):
        ResidencyPolicy(locales=("**",))
    dni = "DNI 12345678Z"
    assert default_masker(region="eu-west").mask(dni).counts == {"NATIONAL_ID": 1}
    assert default_masker(region="us-east").mask(dni).counts == {}  # not in the US pack
    assert default_masker(locales=["*"]).mask(dni).counts == {"NATIONAL_ID": 1}


@pytest.mark.parametrize(
    "text, value",
    [
        ("The restaurant is at 217 Lovers Lane, Springfield", "217 Lovers Lane, Springfield"),
        ("ship it to 17151 2450 Crown St please", "17151 2450 Crown St"),
        ("Sven\n\n85199 Avda. Rio Nalon 58\n Apt. 461\n\n Spain 61709", "Avda. Rio Nalon 58"),
        ("It is at Kálmán Imre u. 12. in town", "Kálmán Imre u. 12."),
        ("Meet at 6 Pinto Flats, Nuuk", "6 Pinto Flats"),
    ],
)
def test_street_addresses(text: str, value: str) -> None:
    masked = MASKER.mask(text)
    assert "ADDRESS" in masked.counts and value not in masked.text


def test_name_with_a_middle_initial_outside_the_gazetteer() -> None:
    masked = MASKER.mask("the verses from Faina D. Yefremova's Cautionary Tales")
    assert "Yefremova" not in masked.text and masked.counts.get("PERSON") == 1
    assert MASKER.mask("LIVE IN THE U.S. ARMY").counts == {}


def test_name_after_a_label_with_a_colon() -> None:
    masked = MASKER.mask("Date: 2003-08-28\nName: Sieda Batukayev\nPhone: (99) 645-791")
    assert "Batukayev" not in masked.text and masked.counts.get("PERSON") == 1


def test_mask_command_contract() -> None:
    lines = json.dumps({"text": "call +44 20 7946 0958"}) + "\n" + json.dumps({"text": "hi"})
    out = CliRunner().invoke(mask_cmd, [], input=lines)
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert rows == [
        {"text": "call <PHONE_1>", "counts": {"PHONE": 1}},
        {"text": "hi", "counts": {}},
    ]
