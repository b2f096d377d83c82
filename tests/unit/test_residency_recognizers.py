"""Each built-in recognizer: values it must find, look-alikes it must not."""

from __future__ import annotations

import pytest

from aivos.shared.residency.recognizers import (
    CardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    Ipv4Recognizer,
    Ipv6Recognizer,
    PhoneRecognizer,
    RegexRecognizer,
    SsnRecognizer,
    builtin_recognizers,
    find_all,
    iban_valid,
    luhn_valid,
)


def _found(rec, text: str) -> list[str]:
    return [text[s.start : s.end] for s in rec.find(text)]


@pytest.mark.parametrize(
    ("rec", "value"),
    [
        (EmailRecognizer(), "anna.smith+billing@mail.co.uk"),
        (PhoneRecognizer(), "+44 20 7946 0958"),
        (PhoneRecognizer(), "(555) 123-4567"),
        (PhoneRecognizer(), "555.123.4567"),
        (PhoneRecognizer(), "+4915112345678"),
        (PhoneRecognizer(), "06 12 34 56 78"),
        (PhoneRecognizer(), "030 12345678"),
        (CardRecognizer(), "4111 1111 1111 1111"),
        (CardRecognizer(), "5500-0000-0000-0004"),
        (CardRecognizer(), "378282246310005"),
        (CardRecognizer(), "3782 822463 10005"),
        (IbanRecognizer(), "DE89 3704 0044 0532 0130 00"),
        (IbanRecognizer(), "GB82WEST12345698765432"),
        (IbanRecognizer(), "FR1420041010050500013M02606"),
        (Ipv4Recognizer(), "192.168.1.20"),
        (Ipv6Recognizer(), "2001:db8::8a2e:370:7334"),
        (Ipv6Recognizer(), "fe80:0000:0000:0000:0202:b3ff:fe1e:8329"),
        (SsnRecognizer(), "123-45-6789"),
        (SsnRecognizer(), "123 45 6789"),
    ],
)
def test_finds_value_in_a_sentence(rec, value: str) -> None:
    text = f"Hi, about my account: {value}. Thanks"
    assert _found(rec, text) == [value]


@pytest.mark.parametrize(
    ("rec", "text"),
    [
        (CardRecognizer(), "card 4111 1111 1111 1112"),  # Luhn fails
        (CardRecognizer(), "order 1234567890123456"),  # Luhn ok? prefix 1 is no card network
        (CardRecognizer(), "IBAN ES06 9124 6451 7505 7849 9791"),  # inside an IBAN
        (IbanRecognizer(), "DE89 3704 0044 0532 0130 01"),  # mod-97 fails
        (IbanRecognizer(), "DE89 3704 0044 0532 0130"),  # too short for DE
        (Ipv4Recognizer(), "version 1.2.300.4"),
        (Ipv4Recognizer(), "on 15.03.2024"),
        (Ipv6Recognizer(), "at 10:30:00 and MAC 00:1A:2B:3C:4D:5E"),
        (SsnRecognizer(), "000-12-3456 666-12-3456 912-34-5678 123-00-4567 123-45-0000"),
        (SsnRecognizer(), "order 123456789"),
        (PhoneRecognizer(), "order ORD-2024-004512 on 2024-03-15 for $1,249.99"),
        (PhoneRecognizer(), "card 5500 0000 0000 0004"),
        (EmailRecognizer(), "not an email: anna@ or @example.com"),
    ],
)
def test_ignores_look_alikes(rec, text: str) -> None:
    assert _found(rec, text) == []


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE88370400440532013000")


def test_bare_ssn_only_after_a_label() -> None:
    assert _found(SsnRecognizer(), "my SSN is 123456789") == ["123456789"]


def test_ipv4_at_sentence_end_excludes_the_period() -> None:
    assert _found(Ipv4Recognizer(), "blocked from 10.0.0.1.") == ["10.0.0.1"]


def test_custom_regex_recognizer() -> None:
    rec = RegexRecognizer("EMPLOYEE_ID", r"EMP-\d{6}")
    assert [(s.entity, s.start) for s in rec.find("ask EMP-123456 or EMP-1")] == [
        ("EMPLOYEE_ID", 4)
    ]


def test_overlap_longest_wins_and_is_deterministic() -> None:
    text = "refund to DE89 3704 0044 0532 0130 00 please"
    short = RegexRecognizer("DIGITS", r"\d{4} \d{4}")
    spans = find_all(text, [*builtin_recognizers(), short])
    assert [(s.entity, text[s.start : s.end]) for s in spans] == [
        ("IBAN", "DE89 3704 0044 0532 0130 00")
    ]
    # equal length: the recognizer listed first wins
    a, b = RegexRecognizer("A", r"x\d+"), RegexRecognizer("B", r"x\d+")
    assert [s.entity for s in find_all("x123", [b, a])] == ["B"]
