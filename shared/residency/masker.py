"""Replace PII by typed placeholders (`<EMAIL_1>`) and put the values back into an answer.

One `MaskMapping` per request: pass it to every `mask` call of that request (prompt,
passages, memory) so the same value always gets the same placeholder, then use it to
`restore` the generated answer. The mapping holds raw PII: it never leaves the site.
It refuses to be pickled or encoded by msgspec, and its repr shows counts only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence

import msgspec

from aivos.shared.residency import phone_plans
from aivos.shared.residency.locales import locales_for
from aivos.shared.residency.normalize import normalize
from aivos.shared.residency.recognizers import Recognizer, builtin_recognizers, find_all
from aivos.shared.residency.spans import plan

__all__ = ["Masker", "MaskMapping", "MaskResult", "default_masker", "PLACEHOLDER_RE"]

# Tolerant of what a model may do to a placeholder: spaces inside the brackets, lower case.
PLACEHOLDER_RE = re.compile(r"<\s*([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z][A-Za-z0-9]*)*)_(\d+)\s*>")


_NOT_ALNUM = re.compile(r"[\W_]+")

# Texts that reach the lazily loaded tables: lower-case and all-caps words (the English word
# list), names, a phone written without a cue, dates, cards, e-mails, IBANs, addresses.
_WARM_UP_TEXTS = (
    "can you text jim on 395 3624 about the laptop, i'm in denver",
    "SEND MY LOCATION TO STEVE AT 12 HIGH STREET, LONDON",
    "Dr Jane Smith, born 01/02/1980, card 4111 1111 1111 1111, jane@example.com, "
    "IBAN DE89 3704 0044 0532 0130 00, +44 20 7946 0958, 10.0.0.1",
)


def _digits(value: str) -> str:
    return _NOT_ALNUM.sub("", value).upper()


def _ip(value: str) -> str:
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return value


# The same value written differently ("4111 1111 ..." vs "4111-1111-...") gets one placeholder.
_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "EMAIL": str.lower,
    "PHONE": _digits,
    "CARD": _digits,
    "NATIONAL_ID": _digits,
    "BANK_ACCOUNT": _digits,
    "PASSPORT": _digits,
    "IBAN": _digits,
    "SSN": _digits,
    "IPV4": _ip,
    "IPV6": _ip,
}


class MaskMapping:
    """Placeholder <-> value table of one request. Site-local: not picklable, not encodable."""

    __slots__ = ("_by_key", "_values", "_next")

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._next: dict[str, int] = {}

    def placeholder(self, entity: str, value: str) -> str:
        """The placeholder of `value` (typed `entity`), allocating `<ENTITY_n>` on first sight."""
        key = (entity, _NORMALIZERS.get(entity, _identity)(value))
        found = self._by_key.get(key)
        if found is not None:
            return found
        n = self._next.get(entity, 0) + 1
        self._next[entity] = n
        token = f"<{entity}_{n}>"
        self._by_key[key] = token
        self._values[token] = value
        return token

    def value(self, placeholder: str) -> str | None:
        """The original value of a placeholder such as `<EMAIL_1>`, or None if unknown."""
        return self._values.get(placeholder)

    def entities(self) -> dict[str, int]:
        """Distinct values per entity type held by this mapping."""
        return dict(self._next)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"MaskMapping(distinct={self.entities()})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("MaskMapping holds raw PII and must not be serialised or leave the site")


def _identity(value: str) -> str:
    return value


class MaskResult(msgspec.Struct, frozen=True):
    """The masked text, the (shared) mapping, and how many values of each type were replaced."""

    text: str
    mapping: MaskMapping
    counts: dict[str, int]


class Masker:
    """Masks the spans that `recognizers` find; recognizers listed first win ties."""

    def __init__(self, recognizers: Sequence[Recognizer]) -> None:
        self.recognizers: tuple[Recognizer, ...] = tuple(recognizers)
        self._plan = plan(self.recognizers)  # looked up once, not once per text

    def warm_up(self) -> None:
        """Load what the recognizers build on first use (name and word lists, the phone
        numbering plans' patterns, compiled expressions), so that no escalation pays for it:
        about a second, once per process. The edge agent runs it at start-up."""
        phone_plans.warm()
        for text in _WARM_UP_TEXTS:
            self.mask(text)

    @property
    def entities(self) -> list[str]:
        return [r.entity for r in self.recognizers]

    def mask(self, text: str, mapping: MaskMapping | None = None) -> MaskResult:
        """Replace every recognised value by its placeholder.

        Recognizers run on the normalised text (NFKC, invisible characters removed, digits
        folded); each span is mapped back so the placeholder replaces exactly the original
        characters, invisible ones inside the value included.
        """
        mapping = MaskMapping() if mapping is None else mapping
        norm = normalize(text)
        spans = find_all(norm.text, self.recognizers, self._plan)
        if not spans:
            return MaskResult(text, mapping, {})
        counts: dict[str, int] = {}
        parts: list[str] = []
        pos = 0
        for span in spans:
            start, end = norm.span(span.start, span.end)
            parts.append(text[pos:start])
            parts.append(mapping.placeholder(span.entity, text[start:end]))
            counts[span.entity] = counts.get(span.entity, 0) + 1
            pos = end
        parts.append(text[pos:])
        return MaskResult("".join(parts), mapping, counts)

    @staticmethod
    def restore(text: str, mapping: MaskMapping) -> str:
        """Put the original values back for every placeholder of `mapping` found in `text`."""

        def sub(m: re.Match[str]) -> str:
            value = mapping.value(f"<{m.group(1).upper()}_{m.group(2)}>")
            return m.group(0) if value is None else value

        return PLACEHOLDER_RE.sub(sub, text)


def default_masker(
    custom: Iterable[Recognizer] = (),
    locales: Sequence[str] | None = None,
    *,
    region: str | None = None,
) -> Masker:
    """A masker with the built-in recognizers of a locale pack plus `custom` ones (checked
    after the built-ins). The pack is `locales` (ISO country codes, or `"*"` for all) when
    given, else the one the site's `region` implies (`locales_for`), else every country
    known. The exit gate passes its policy's pack (`ResidencyPolicy.locale_pack()`)."""
    if locales is None and region is not None:
        locales = locales_for(region)
    elif locales is not None:
        locales = locales_for("", locales)
    return Masker([*builtin_recognizers(locales), *custom])
