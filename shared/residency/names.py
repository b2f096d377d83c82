"""The name gazetteer: ~20k first and ~18k last names, less words that are mostly not names.

The lists come from Faker's locale data (MIT licence) and ship as `data/first_names.txt.gz`
and `data/last_names.txt.gz`; they are loaded once, on first use.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

__all__ = ["STOP", "STOP_LOWER", "gazetteer", "all_names"]

# Capitalised words that are names in the gazetteer but mostly ordinary words here.
_STOP_WORDS = """
    A An The I We You He She It They My Your Our His Her Their This That These Those
    What Which Who Whom How Why When Where Is Are Was Were Be Been Do Does Did Can Could
    Will Would Shall Should May Might Must Have Has Had Not No Yes Please Thanks Thank
    Hi Hello Dear Hey Ok Okay And Or But If Then So As At By For From In Into Of On To
    With Without About After Before Card Bank Account Credit Debit Visa Master
    Mastercard Amex Pay Payment Money Cash Loan Street Road Lane Avenue Drive Court Way
    Place Park Hill Square Apt Suite Unit Floor Monday Tuesday Wednesday Thursday Friday
    Saturday Sunday January February March April June July August September October
    November December Mr Mrs Ms Miss Dr Prof Sir Madam North South East West New Old
    Great Little Big Long Young Grand Saint San Santa St Chase Price Rich Love Hope Joy
    Grace Faith Mark Bill Jack Sunny Summer Winter Rose Ruby Pearl Jade Amber Crystal
    Honey Candy Star Angel Happy Guy Don Art Van Le La Da De Del Di Du Des Von Der Den
    Al El Bin Ben Via Co Inc Ltd Llc Group Company Corp Team Support English French
    German Spanish Italian Dutch Polish Swedish Danish Finnish British American Canada
    France Germany Spain Italy Paris London Berlin Rome Madrid Europe America Asia Black
    White Green Brown Gray Grey Red Blue Gold Silver Stone King Queen Prince Duke Lord
    Baker Smith Cook Hunter Fisher Taylor Walker Turner Carter Parker Cooper Miller
    Mason Christian Muslim Jewish Catholic God Jesus Christmas Easter Internet Email
    Phone Online Mobile App Web Google Apple Microsoft Amazon Uber Tesla Windows Android
    Tel Tél Fax Mob Telephone Telefon Teléfono
"""
STOP = frozenset(_STOP_WORDS.split())
STOP_LOWER = frozenset(w.lower() for w in STOP)


@lru_cache(maxsize=1)
def gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, last names), capitalised, stop words removed."""

    def load(name: str) -> frozenset[str]:
        ref = resources.files("aivos.shared.residency").joinpath("data", name)
        return frozenset(gzip.decompress(ref.read_bytes()).decode("utf-8").split())

    return load("first_names.txt.gz") - STOP, load("last_names.txt.gz") - STOP


@lru_cache(maxsize=1)
def all_names() -> frozenset[str]:
    """First and last names together."""
    first, last = gazetteer()
    return first | last
