"""The label of an id format is no name: `codice fiscale`, `NINO`, `partita IVA`, `Documento
Nacional` stay in the clear while the id and the names next to them are masked; a label word
that is also a first name (`Nino`, `Iva`) is still masked when written as a name."""

from __future__ import annotations

import pytest

from aivos.shared.residency import default_masker
from aivos.shared.residency.id_labels import is_id_label

_MASKER = default_masker()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "NINO AB 12 34 56 C, codice fiscale RSSMRA85T10A562S, Aadhaar 2345 6789 0124",
            "NINO <NATIONAL_ID_1>, codice fiscale <NATIONAL_ID_2>, Aadhaar <NATIONAL_ID_3>",
        ),
        ("Codice Fiscale: RSSMRA85T10A562S", "Codice Fiscale: <NATIONAL_ID_1>"),
        (
            "His partita IVA and codice fiscale are on file.",
            "His partita IVA and codice fiscale are on file.",
        ),
        (
            "CODICE FISCALE RSSMRA85T10A562S DI NINO ROSSI",
            "CODICE FISCALE <NATIONAL_ID_1> DI <PERSON_1>",
        ),
        (
            "Documento Nacional de Identidad 12345678Z",
            "Documento Nacional de Identidad <NATIONAL_ID_1>",
        ),
    ],
)
def test_id_labels_are_not_masked_as_names(text: str, masked: str) -> None:
    assert _MASKER.mask(text).text == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "Nino Rossi, codice fiscale RSSMRA85T10A562S",
            "<PERSON_1>, codice fiscale <NATIONAL_ID_1>",
        ),
        (
            "Iva Horvat called about her passport YA1234567",
            "<PERSON_1> called about her passport <PASSPORT_1>",
        ),
    ],
)
def test_a_label_word_written_as_a_name_is_still_a_name(text: str, masked: str) -> None:
    assert _MASKER.mask(text).text == masked


def test_which_words_are_labels() -> None:
    assert is_id_label("fiscale") and is_id_label("Codice") and is_id_label("Aadhaar")
    assert is_id_label("NINO") and is_id_label("IVA")  # acronyms in mixed-case text
    assert not is_id_label("Nino") and not is_id_label("Iva")  # first names, as names
    assert not is_id_label("NINO", upper_text=True)  # all capitals: case says nothing
    assert not is_id_label("Rossi")
