"""Replace PII by typed placeholders (`<EMAIL_1>`) and put the values back into an answer.

One `MaskMapping` per request: pass it to every `mask` call of that request (prompt,
passages, memory) so the same value always gets the same placeholder, then use it to
`restore` the generated answer. The mapping holds raw PII: it never leaves the site.
It refuses to be pickled or encoded by msgspec, and its repr shows counts only.

Text that repeats across requests (knowledge-base passages) need not be searched again:
`mask(text, mapping, cache=True)` keeps what the recognizers found in `text` (its spans,
never the masked text, whose placeholders are numbered per request) in the masker's
`SpanCache`, keyed by the exact text. The cache belongs to one masker, so to one set of
recognizers (built-ins of a locale pack plus a policy's custom rules): a new policy builds a
new masker and starts from an empty cache. Only callers that pass `cache=True` put text in
it; the exit gate does so for the keys its caller names (`ExitGate.apply(cache_keys=...)`),
the escalator for the retrieved passages only, never for the user's prompt or memory.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import msgspec

from aivos.shared.metrics import Counter
from aivos.shared.residency import phone_plans
from aivos.shared.residency.locales import locales_for
from aivos.shared.residency.normalize import normalize
from aivos.shared.residency.recognizers import Recognizer, builtin_recognizers, find_all
from aivos.shared.residency.spans import plan

__all__ = [
    "Masker",
    "MaskMapping",
    "MaskResult",
    "SpanCache",
    "SpanCacheStats",
    "default_masker",
    "PLACEHOLDER_RE",
]

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


# what a masker found in a text: (start, end, entity), offsets in the original text, in order
Found = tuple[tuple[int, int, str], ...]


class SpanCacheStats(msgspec.Struct, frozen=True):
    """A snapshot of a `SpanCache`: lookups that hit and missed, and what it holds."""

    hits: int
    misses: int
    entries: int
    chars: int
    max_entries: int
    max_chars: int
    max_text_chars: int
    prefilled: int = 0  # texts put in ahead of any request (`offer`, see `prefill.py`)


class SpanCache:
    """What a masker found in texts it has seen, least recently used first out.

    Keyed by the exact text; bounded by `max_entries` texts and `max_chars` characters of
    text in all; a text longer than `max_text_chars` is not kept (it is searched every time).
    `max_entries=0` turns it off. Safe to use from several threads: the lookups and updates
    hold a lock; the search itself runs outside it (two threads that miss on the same text
    both search it and store the same result).
    """

    def __init__(
        self, max_entries: int = 4096, max_chars: int = 4_000_000, max_text_chars: int = 16_384
    ) -> None:
        if max_entries < 0 or max_chars < 0 or max_text_chars < 0:
            raise ValueError(
                "SpanCache bounds must be >= 0, got "
                f"max_entries={max_entries}, max_chars={max_chars}, "
                f"max_text_chars={max_text_chars}"
            )
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.max_text_chars = min(max_text_chars, max_chars)
        self._lock = threading.Lock()
        self._found: OrderedDict[str, Found] = OrderedDict()
        self._chars = 0
        self._hits = 0
        self._misses = 0
        self._prefilled = 0
        self._counter: Counter | None = None

    def count_into(self, counter: Counter | None) -> None:
        """Count each lookup in `counter` too (label `result`: `hit` or `miss`)."""
        self._counter = counter

    def get(self, text: str) -> Found | None:
        with self._lock:
            found = self._found.get(text)
            if found is None:
                self._misses += 1
            else:
                self._hits += 1
                self._found.move_to_end(text)
        if self._counter is not None:
            self._counter.inc(result="miss" if found is None else "hit")
        return found

    def put(self, text: str, found: Found) -> None:
        if len(text) > self.max_text_chars or self.max_entries == 0:
            return
        with self._lock:
            if text in self._found:
                return
            self._found[text] = found
            self._chars += len(text)
            while len(self._found) > self.max_entries or self._chars > self.max_chars:
                old, _ = self._found.popitem(last=False)
                self._chars -= len(old)

    def keeps(self, text: str) -> bool:
        """Whether `text` would be kept: not too long, and room for it without evicting."""
        with self._lock:
            return self._has_room(len(text))

    def offer(self, text: str, found: Found) -> bool:
        """Put `text` in only if there is room for it without evicting anything (a pre-fill
        must not push out what requests put in); True when it was put in."""
        with self._lock:
            if text in self._found or not self._has_room(len(text)):
                return False
            self._found[text] = found
            self._chars += len(text)
            self._prefilled += 1
            return True

    def _has_room(self, n_chars: int) -> bool:
        return (
            n_chars <= self.max_text_chars
            and len(self._found) < self.max_entries
            and self._chars + n_chars <= self.max_chars
        )

    def __contains__(self, text: object) -> bool:
        with self._lock:
            return text in self._found

    def __len__(self) -> int:
        return len(self._found)

    def clear(self) -> None:
        with self._lock:
            self._found.clear()
            self._chars = 0

    def stats(self) -> SpanCacheStats:
        with self._lock:
            return SpanCacheStats(
                self._hits,
                self._misses,
                len(self._found),
                self._chars,
                self.max_entries,
                self.max_chars,
                self.max_text_chars,
                self._prefilled,
            )


class Masker:
    """Masks the spans that `recognizers` find; recognizers listed first win ties.

    `span_cache` keeps what was found in texts masked with `cache=True` (see the module's
    docstring); its results are valid for these recognizers only, so it lives and dies with
    this masker (default: a fresh `SpanCache()`; one masker per cache, never shared).
    """

    def __init__(
        self, recognizers: Sequence[Recognizer], *, span_cache: SpanCache | None = None
    ) -> None:
        self._recognizers: tuple[Recognizer, ...] = tuple(recognizers)
        self._plan = plan(self._recognizers)  # looked up once, not once per text
        self.span_cache = SpanCache() if span_cache is None else span_cache

    @property
    def recognizers(self) -> tuple[Recognizer, ...]:
        """Fixed at construction: the span cache is valid for these and no others."""
        return self._recognizers

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

    def mask(
        self, text: str, mapping: MaskMapping | None = None, *, cache: bool = False
    ) -> MaskResult:
        """Replace every recognised value by its placeholder.

        Recognizers run on the normalised text (NFKC, invisible characters removed, digits
        folded); each span is mapped back so the placeholder replaces exactly the original
        characters, invisible ones inside the value included.

        `cache=True`: look the spans of `text` up in `span_cache` first, and keep them there
        after a search. For text that repeats and is not a user's own (knowledge-base
        passages): the cache holds the text itself in memory. The result is the same as
        without the cache, placeholders included (they are numbered here, per `mapping`).
        """
        mapping = MaskMapping() if mapping is None else mapping
        if cache:
            found = self.span_cache.get(text)
            if found is None:
                found = self.find(text)
                self.span_cache.put(text, found)
        else:
            found = self.find(text)
        if not found:
            return MaskResult(text, mapping, {})
        counts: dict[str, int] = {}
        parts: list[str] = []
        pos = 0
        for start, end, entity in found:
            parts.append(text[pos:start])
            parts.append(mapping.placeholder(entity, text[start:end]))
            counts[entity] = counts.get(entity, 0) + 1
            pos = end
        parts.append(text[pos:])
        return MaskResult("".join(parts), mapping, counts)

    def find(self, text: str) -> Found:
        """The values found in `text`: `(start, end, entity)` in text order, offsets in
        `text` itself (not in its normalised form). Never cached."""
        norm = normalize(text)
        return tuple(
            (*norm.span(s.start, s.end), s.entity)
            for s in find_all(norm.text, self._recognizers, self._plan)
        )

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
