"""One cheap pass over a text that tells the expensive recognizers where they may match.

Almost every structured value (cards, phones, national ids, dates, house numbers) contains a
run of digits, and most context rules start at a cue word ("my name is", "address", "rue").
`Scan` finds, once per text and with C-speed operations only:

- digit *clusters*: digits at most three characters apart (`4111 1111 1111 1111 12/26`,
  `+44 (20) 7946-0958`, `RSSMRA85T10A562S`), each with its digit count;
- where given cue words start (`word_starts`), by `str.find` on the lower-cased text.

A recognizer then runs its regexes only inside the clusters that hold enough digits for its
values (`windows(min_digits, before, after)`, with margins for a cue or brand before and an
expiry or extension after), or matches its cue-led pattern only at the cue positions
(`matches_at`). Regexes run on the whole text with `pos`/`endpos`, so look-behinds and
`\\b` still see the real characters before a window. Window ends are moved to the next
whitespace, so a value is never cut. `tests/unit/test_residency_prefilter.py` checks that
the spans found this way equal those of a full scan on the public and generated sets.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from operator import itemgetter

__all__ = ["Scan", "Words", "matches_at", "in_windows", "in_windows_at"]

_CLUSTER = re.compile(r"\d(?:[^\n]{0,3}?\d)*")
# the same on ASCII text (a normalised text's digits are all ASCII) mapped to bytes where
# every digit is `0` and every other character but a newline a space: a pattern that opens
# with a literal, which the regex engine skips to with a plain byte comparison, where it tests
# a character set (`[0-9]`, `\d`) at every character, ten times the instructions
_CLUSTER_ZEROS = re.compile(rb"0(?:[^\n]{0,3}?0)*")
_RUN_ZEROS = re.compile(rb"00*")  # not `0+`: the engine skips only to a literal first
_ZEROS = bytes.maketrans(
    bytes(range(128)), bytes(48 if chr(c).isdigit() else c if c == 10 else 32 for c in range(128))
)
_DIGIT_RUN = re.compile(r"\d+")
_NOT_DIGIT = re.compile(r"\D+")
_HEAD3, _HEAD2 = itemgetter(slice(3)), itemgetter(slice(2))
_DIGITS = itemgetter(2)  # of a cluster
_SNAP = 32  # how far a window edge may move to reach whitespace
# window margins around a cluster: before, a sign, bracket, brand, id letters, a month name
# (`25th of December 1985`) or a sort code; after, an extension (`ext. 12345`), a check letter
BEFORE, AFTER = 24, 12
# every ASCII byte that is not a letter or digit splits a token (for the word gate)
_SPLIT = bytes.maketrans(
    bytes(c for c in range(128) if not chr(c).isalnum()),
    b" " * sum(1 for c in range(128) if not chr(c).isalnum()),
)


class Words:
    """Lower-case words (or phrases) that start a cue, with the keys of the token gate."""

    __slots__ = ("words", "_by_key", "_keys", "_always")

    def __init__(self, *words: str) -> None:
        self.words = words
        self._by_key: dict[bytes, list[str]] = {}
        self._always: list[str] = []  # one-letter keys ("i am", "a/c", "p.o"): always tried
        for w in words:
            key = re.split(r"[^0-9a-z\u00c0-\uffff]", w, maxsplit=1)[0].encode()[:3]
            if len(key) < 2:
                self._always.append(w)
            else:
                self._by_key.setdefault(key, []).append(w)
        self._keys = frozenset(self._by_key)
        _know_keys(self._keys)

    def present(self, heads: frozenset[bytes]) -> list[str]:
        """The words whose key (first two or three letters) starts some token of the text."""
        return [*self._always, *(w for k in self._keys & heads for w in self._by_key[k])]


class Scan:
    """Facts about one (normalised) text, computed lazily and at most once."""

    __slots__ = (
        "text",
        "_lower",
        "_clusters",
        "_runs",
        "_all_runs",
        "_windows",
        "_heads",
        "_windows_by",
        "_runs_by",
        "_pieces",
        "_zeros",
        "max_digits",
    )

    def __init__(self, text: str) -> None:
        self.text = text
        self._lower: str | None = None
        self._runs: list[int] | None = None
        self._all_runs: list[int] | None = None
        self._windows: list[tuple[int, int, int]] | None = None
        self._heads: frozenset[bytes] | None = None
        # `windows(k)` and `run_starts(k)` per `k`: several recognizers ask for the same ones
        self._windows_by: dict[int, list[tuple[int, int]]] = {}
        self._runs_by: dict[int, list[int]] = {}
        self._pieces: list[str] | None = None
        self._zeros: bytes | None = None
        if text.isascii():
            zeros = self._zeros = text.encode().translate(_ZEROS)
            self._clusters = [
                (m.start(), m.end(), m.group().count(48)) for m in _CLUSTER_ZEROS.finditer(zeros)
            ]
        else:
            self._clusters = [
                (m.start(), m.end(), len(_NOT_DIGIT.sub("", m.group())))
                for m in _CLUSTER.finditer(text)
            ]
        #: digits of the largest cluster: a recognizer needing more can stop at once
        self.max_digits = max(map(_DIGITS, self._clusters), default=0)

    @property
    def lower(self) -> str:
        if self._lower is None:
            lower = self.text.lower()
            if len(lower) != len(self.text):  # "İ" lowers to two characters: keep offsets
                lower = "".join(c if len(c.lower()) != 1 else c.lower() for c in self.text)
            self._lower = lower
        return self._lower

    @property
    def pieces(self) -> list[str]:
        """The text split at spaces (`text.split(" ")`): recognizers that look words up piece
        by piece in tables of pieces seen (the tagger, the name gazetteer, the cue gate) share
        these strings, whose hashes Python then computes once."""
        if self._pieces is None:
            self._pieces = self.text.split(" ")
        return self._pieces

    @property
    def clusters(self) -> list[tuple[int, int, int]]:
        """`(start, end, digits)` of every digit cluster, in text order."""
        return self._clusters

    def digit_run_starts(self) -> list[int]:
        """Where each run of digits starts that is not glued to a word or a dash before it."""
        if self._runs is None:
            text = self.text
            self._runs = [
                s
                for s in self.all_run_starts
                if s == 0 or not (text[s - 1].isalnum() or text[s - 1] in "_-")
            ]
        return self._runs

    def windows(self, min_digits: int) -> list[tuple[int, int]]:
        """`[start, end)` regions around the clusters with at least `min_digits` digits,
        widened by `BEFORE` and `AFTER` characters and then to a space (overlaps merged)."""
        if min_digits > self.max_digits:
            return []
        found = self._windows_by.get(min_digits)
        if found is not None:
            return found
        windows = self._windows
        if windows is None:
            text, n = self.text, len(self.text)
            merged: list[tuple[int, int, int]] = []
            for s, e, d in self._clusters:
                # the margins, each edge then moved to a space (at most `_SNAP` characters)
                ws, we = max(0, s - BEFORE), min(n, e + AFTER)
                if ws and text[ws - 1] != " ":
                    k = text.rfind(" ", max(0, ws - _SNAP), ws)
                    ws = k + 1 if k >= 0 else max(0, ws - _SNAP)
                if we < n and text[we] != " ":
                    k = text.find(" ", we, we + _SNAP)
                    we = k if k >= 0 else min(n, we + _SNAP)
                if merged and ws <= merged[-1][1]:
                    ps, pe, pd = merged[-1]
                    merged[-1] = (ps, max(we, pe), max(d, pd))
                else:
                    merged.append((ws, we, d))
            windows = self._windows = merged
        found = self._windows_by[min_digits] = [
            (ws, we) for ws, we, d in windows if d >= min_digits
        ]
        return found

    @property
    def all_run_starts(self) -> list[int]:
        """Where every maximal run of digits starts."""
        if self._all_runs is None:
            if self._zeros is not None:  # one search for a literal (see `_CLUSTER_ZEROS`)
                self._all_runs = [m.start() for m in _RUN_ZEROS.finditer(self._zeros)]
            else:  # every digit lies in a cluster and no run crosses one: search those only
                text, find = self.text, _DIGIT_RUN.finditer
                self._all_runs = [m.start() for s, e, _ in self._clusters for m in find(text, s, e)]
        return self._all_runs

    def run_starts(self, min_digits: int) -> list[int]:
        """Digit-run starts inside `windows(min_digits)`: where a pattern that opens with a
        digit and may not follow a word character can match (`\\d` is a word character)."""
        found = self._runs_by.get(min_digits)
        if found is not None:
            return found
        windows = self.windows(min_digits)
        if not windows:
            return []
        out: list[int] = []
        i, runs = 0, self.all_run_starts
        for ws, we in windows:
            while i < len(runs) and runs[i] < ws:
                i += 1
            while i < len(runs) and runs[i] < we:
                out.append(runs[i])
                i += 1
        self._runs_by[min_digits] = out
        return out

    def iban_starts(self) -> list[int]:
        """Where two letters and two digits start (the country and check digits of an IBAN)."""
        text = self.text
        return [
            s - 2
            for s in self.all_run_starts
            if s >= 2 and text[s - 2 : s].isalpha() and text[s : s + 2].isdigit()
        ]

    def word_starts(self, words: Words) -> list[int]:
        """Sorted positions where one of `words` starts a word of the lower-cased text."""
        lower = self.lower
        if lower.isascii():
            if self._heads is None:
                self._heads = _heads(self.pieces)
            candidates = words.present(self._heads)
        else:
            candidates = list(words.words)
        found: set[int] = set()
        for w in candidates:
            i = lower.find(w)
            while i >= 0:
                if i == 0 or not (lower[i - 1].isalnum() or lower[i - 1] == "_"):
                    found.add(i)
                i = lower.find(w, i + 1)
        return sorted(found)


# Per space-separated piece of text seen, the heads of its tokens that are the key of some
# `Words` (the only heads a gate asks about: most tokens have none), and the keys known when
# the table was started. A new `Words` with keys not known yet starts a new table (a thread
# still busy with the old one fills that one only). Bounded: most pieces recur.
_heads_table: tuple[dict[str, frozenset[bytes]], frozenset[bytes]] = ({}, frozenset())
_PIECE_CACHE = 20_000


def _know_keys(keys: frozenset[bytes]) -> None:
    global _heads_table
    known = _heads_table[1]
    if not keys <= known:
        _heads_table = ({}, known | keys)


def _heads(pieces: list[str]) -> frozenset[bytes]:
    """The first three and first two letters of every token of the pieces (lower case; a
    token ends at any ASCII character that is not a letter or digit) that are keys of some
    `Words`."""
    table, keys = _heads_table
    found = list(map(table.get, pieces))
    if None in found:
        found = [
            _piece_heads(p, table, keys) if f is None else f
            for f, p in zip(found, pieces, strict=True)
        ]
    return frozenset().union(*found)  # type: ignore[arg-type]  # no None left


def _piece_heads(
    piece: str, table: dict[str, frozenset[bytes]], keys: frozenset[bytes]
) -> frozenset[bytes]:
    heads = set(map(_HEAD3, piece.lower().encode().translate(_SPLIT).split()))
    found = keys.intersection(heads.union(map(_HEAD2, heads)))
    if len(table) >= _PIECE_CACHE:
        table.clear()  # bounded: start again (dict operations are atomic under the GIL)
    table[piece] = found
    return found


def matches_at(
    pattern: re.Pattern[str], text: str, starts: Iterable[int]
) -> Iterator[re.Match[str]]:
    """The matches `pattern.finditer(text)` would give that start at one of `starts` (sorted):
    non-overlapping, leftmost first."""
    last = -1
    for p in starts:
        if p < last:
            continue
        m = pattern.match(text, p)
        if m is not None and m.end() > m.start():
            last = m.end()
            yield m


def in_windows(
    pattern: re.Pattern[str], text: str, windows: Iterable[tuple[int, int]]
) -> Iterator[re.Match[str]]:
    """`pattern.finditer` over each `[start, end)` window of `text` in turn."""
    for ws, we in windows:
        yield from pattern.finditer(text, ws, we)


def in_windows_at(
    pattern: re.Pattern[str],
    text: str,
    windows: Iterable[tuple[int, int]],
    starts: list[int],
    chars: str = "",
) -> Iterator[re.Match[str]]:
    """The matches `in_windows(pattern, text, windows)` gives, tried only at the positions of
    `starts` (sorted) and of the characters `chars` inside each window: these must hold every
    position where a match can start (the leftmost match is then found first, as a search
    finds it, and the next is tried from its end on)."""
    for ws, we in windows:
        at = starts[bisect_left(starts, ws) : bisect_left(starts, we)]
        extra = [i for c in chars for i in _positions(text, c, ws, we)]
        last = -1
        for p in sorted(at + extra) if extra else at:
            if p < last:
                continue
            m = pattern.match(text, p, we)
            if m is not None and m.end() > m.start():
                last = m.end()
                yield m


def _positions(text: str, c: str, start: int, end: int) -> Iterator[int]:
    i = text.find(c, start, end)
    while i >= 0:
        yield i
        i = text.find(c, i + 1, end)
