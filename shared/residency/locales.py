"""Locale packs: which national ids and phone regions a site looks for.

A pack is a tuple of ISO 3166 country codes, set as `[residency] locales = ["GB", "IE"]`, or
`locales = ["*"]` (also `"all"`) for every country the recognizers know (`DEFAULT_LOCALES`).
Left empty, the pack follows the site's `region`: a region whose name starts with a country
or area prefix below (`eu-west` -> the EU/EEA pack) picks that pack, anything else gets
`DEFAULT_LOCALES`. A smaller pack is also a faster one: only its national-id patterns run. Cards, IBANs, e-mails,
IP addresses, phone numbers written with `+CC`/`00CC`, passports and account numbers after
their cue word, names, addresses and dates of birth are looked for whatever the pack.
"""

from __future__ import annotations

from collections.abc import Sequence

from aivos.shared.residency.ids import ID_COUNTRIES
from aivos.shared.residency.phones import DEFAULT_PHONE_REGIONS

__all__ = ["ALL_LOCALES", "DEFAULT_LOCALES", "KNOWN_LOCALES", "locales_for"]

DEFAULT_LOCALES: tuple[str, ...] = tuple(dict.fromkeys((*DEFAULT_PHONE_REGIONS, *ID_COUNTRIES)))
#: the `locales` entries that mean "every country known"
ALL_LOCALES = frozenset({"*", "ALL"})
# Any ISO country code is accepted for phone regions; these have national-id recognizers too.
KNOWN_LOCALES = frozenset(ID_COUNTRIES)

_EU = (
    "DE",
    "FR",
    "ES",
    "IT",
    "NL",
    "BE",
    "AT",
    "IE",
    "PT",
    "SE",
    "DK",
    "FI",
    "PL",
    "GB",
    "CH",
    "NO",
)
_BY_PREFIX: dict[str, tuple[str, ...]] = {
    "eu": _EU,
    "uk": ("GB", "IE"),
    "gb": ("GB", "IE"),
    "us": ("US", "CA", "MX"),
    "ca": ("CA", "US"),
    "in": ("IN",),
    "ap-south": ("IN",),
    "cn": ("CN",),
    "br": ("BR",),
    "sa-east": ("BR",),
    "au": ("AU",),
}


def locales_for(region: str, locales: Sequence[str] = ()) -> tuple[str, ...]:
    """The pack for a site: `locales` when set, else the one its `region` implies."""
    if locales:
        if any(c.upper() in ALL_LOCALES for c in locales):
            return DEFAULT_LOCALES
        return tuple(c.upper() for c in locales)
    r = region.lower()
    for prefix in sorted(_BY_PREFIX, key=len, reverse=True):
        if r == prefix or r.startswith(prefix + "-"):
            return _BY_PREFIX[prefix]
    return DEFAULT_LOCALES
