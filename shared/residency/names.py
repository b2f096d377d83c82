"""The name gazetteer: ~20k first and ~18k last names, less words that are mostly not names.

The lists come from Faker's locale data (MIT licence) and ship as `data/first_names.txt.gz`
and `data/last_names.txt.gz`; they are loaded once, on first use.

`english_names()`: the first and last names of Faker's English-language locales alone
(`data/english_names.txt.gz`, ~6k: `ENGLISH_LOCALES`, rebuilt by `build_english_names`). In
text without case a gazetteer name that is also a dictionary word (`JOKE`, `CAR`, `MALE` come
from other locales' lists) is taken for a name by itself only when it is one of these
(`MARY`, `FRANK`, `REED`): a name people writing English give (see `tagger._caps_strong`).
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

__all__ = [
    "ENGLISH_LOCALES",
    "STOP",
    "STOP_LOWER",
    "all_names",
    "build_english_names",
    "common_words",
    "english_names",
    "gazetteer",
]

# symspellpy's English frequency list (MIT; counts from Google Books n-grams), which the base
# install has for the edge's spelling correction: 82k words, modern ones (`laptop`, `wanna`)
# that the tagger's web2 lexicon (1934) lacks
_FREQUENCY_FILE = "frequency_dictionary_en_82_765.txt"

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


#: Faker's English-language person providers whose names make `english_names()`
ENGLISH_LOCALES = ("en_US", "en_GB", "en_IE", "en_NZ", "en_IN", "en_PK", "en_TH")
_ENGLISH_FILE = "english_names.txt.gz"


@lru_cache(maxsize=1)
def english_names() -> frozenset[str]:
    """First and last names of English-language locales, capitalised (`Mary`, `Reed`)."""
    ref = resources.files("aivos.shared.residency").joinpath("data", _ENGLISH_FILE)
    return frozenset(gzip.decompress(ref.read_bytes()).decode("utf-8").split())


def build_english_names() -> bytes:
    """The bytes of `data/english_names.txt.gz` from the installed Faker (a dev dependency;
    the edge only reads the file): every first and last name of `ENGLISH_LOCALES`, sorted."""
    import importlib

    names: set[str] = set()
    for locale in ENGLISH_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in ("first_names", "first_names_male", "first_names_female", "last_names"):
            names.update(getattr(provider, attr, ()) or ())
    names = {n for n in names if n.replace("-", "").replace("'", "").isalpha()}
    return gzip.compress(("\n".join(sorted(names)) + "\n").encode("utf-8"), mtime=0)


@lru_cache(maxsize=1)
def all_names() -> frozenset[str]:
    """First and last names together."""
    first, last = gazetteer()
    return first | last


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """The lower-case words of the English frequency list that are no name of the gazetteer
    (`wanna`, `laptop`, `walmart`, `steakhouse`). The list holds names too (`john`, `dallas`):
    those are left out, so a word here is a common word and not a known name."""
    ref = resources.files("symspellpy").joinpath(_FREQUENCY_FILE)
    words = (line.partition(" ")[0] for line in ref.read_text(encoding="utf-8").splitlines())
    names = {n.lower() for n in all_names()}
    return frozenset(w for w in words if w.isalpha() and w not in names)
