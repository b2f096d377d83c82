"""Words that name an identifier format: the labels text puts before an id ("codice fiscale",
"NINO", "partita IVA", "Aadhaar", "numéro de sécurité sociale").

A label is not a name. The name tagger took some for one: a lower-case word in no English
dictionary reads as a name (`desrosiers`), and so did `fiscale` in "codice fiscale" and an
all-caps acronym before an id (`NINO AB 12 34 56 C`, `partita IVA`). `is_id_label` says
which words are labels, for the locales of the id pack (`ids.py`) and the words that
number them in the languages those ids are written in.

Some labels are first names too (`Nino`, `Iva`, `Rut`): written as a name (title case) they
stay possible names; written as an acronym (`NINO`, `IVA`) in text that is not all in
capitals they are labels. In text all in capitals, where case says nothing, such a word
stays a possible name.
"""

from __future__ import annotations

from aivos.shared.residency.names import gazetteer

__all__ = ["ID_LABEL_WORDS", "is_id_label"]

# lower case; one word of a label each (multi-word labels by their words)
_LABELS = """
    nino ni utr nhs
    ssn itin ein fein tin
    dni nie nif cif documento nacional identidad identidade identité identità nazionale
    codice fiscale partita iva tessera sanitaria cf
    aadhaar aadhar uid uidai pan gstin ifsc epic
    sin nas
    insee nir sécurité securite sociale vitale
    cpf cnpj
    bsn pesel curp rfc steuer-id steuernummer steueridentifikationsnummer
    personalausweis ausweis
    passport passeport pasaporte passaporto reisepass paspoort
    iban bic swift
    numero número numéro nummer
"""
ID_LABEL_WORDS = frozenset(_LABELS.split())


def is_id_label(word: str, upper_text: bool = False) -> bool:
    """Whether `word` names an identifier format here: a label word that is no first name,
    or one written in capitals (`NINO`, `IVA`) in text not all in capitals (`upper_text`)."""
    lower = word.lower()
    if lower not in ID_LABEL_WORDS:
        return False
    first, _last = gazetteer()
    if word.title() not in first:
        return True
    return not upper_text and len(word) > 1 and word.isupper()
