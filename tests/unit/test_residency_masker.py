"""Placeholders are typed, stable within a request, restorable, and the mapping stays local."""

from __future__ import annotations

import pickle

import msgspec
import pytest

from aivos.shared.residency import MaskMapping, default_masker


def test_typed_placeholders_and_counts() -> None:
    r = default_masker().mask("mail a@x.com or b@y.org, call +44 20 7946 0958")
    assert r.text == "mail <EMAIL_1> or <EMAIL_2>, call <PHONE_1>"
    assert r.counts == {"EMAIL": 2, "PHONE": 1}


def test_same_value_same_placeholder_across_fields() -> None:
    masker, mapping = default_masker(), MaskMapping()
    prompt = masker.mask("card 4111 1111 1111 1111, mail a@x.com", mapping)
    passage = masker.mask("A@X.COM used 4111-1111-1111-1111 and c@z.io", mapping)
    assert prompt.text == "card <CARD_1>, mail <EMAIL_1>"
    assert passage.text == "<EMAIL_1> used <CARD_1> and <EMAIL_2>"
    assert mapping.entities() == {"CARD": 1, "EMAIL": 2}


def test_restore_round_trip_tolerates_model_edits() -> None:
    masker, mapping = default_masker(), MaskMapping()
    text = "Refund to DE89 3704 0044 0532 0130 00 for anna@example.org"
    masked = masker.mask(text, mapping).text
    assert "anna@example.org" not in masked
    assert masker.restore(masked, mapping) == text
    answer = "Dear < email_1 >, the refund goes to <IBAN_1>; <PHONE_9> is unknown."
    assert masker.restore(answer, mapping) == (
        "Dear anna@example.org, the refund goes to DE89 3704 0044 0532 0130 00; <PHONE_9> is unknown."
    )


def test_mapping_cannot_leave_the_site() -> None:
    mapping = MaskMapping()
    default_masker().mask("a@x.com", mapping)
    with pytest.raises(TypeError):
        pickle.dumps(mapping)
    with pytest.raises(TypeError):
        msgspec.json.encode(mapping)
    assert "a@x.com" not in repr(mapping)


def test_text_without_pii_is_unchanged() -> None:
    r = default_masker().mask("order ORD-2024-004512 on 2024-03-15 for $1,249.99")
    assert r.text == "order ORD-2024-004512 on 2024-03-15 for $1,249.99"
    assert r.counts == {}
