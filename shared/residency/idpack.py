"""The national-id and account recognizers of one locale pack, run in one pass per gate.

Each `IdRecognizer` alone tries its regex at its own candidate positions (digit-run starts,
cue words, digit windows; see `scan.py`), one Python-level call per pattern and position.
`IdPack` joins the patterns that share a kind of gate into one regex of optional lookaheads,
`(?:(?=(P1))|)(?:(?=(P2))|)...`: one `match` at a position says which patterns match there
and where each ends. Per pattern it then keeps what `IdRecognizer.find_scanned` keeps: only
positions of that pattern's own gate, leftmost first, never overlapping its previous match,
and only values its validator accepts. The spans, and their order, are those of the
recognizers run one by one (`find`, checked by `tests/unit/test_residency_prefilter.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aivos.shared.residency.ids import LEFT_EDGE, Gate, IdRecognizer
from aivos.shared.residency.scan import Scan, Words
from aivos.shared.residency.spans import Span

__all__ = ["IdPack"]

_BACKREF = re.compile(r"\\([1-9])")
_WORD_RUN = re.compile(r"\w+")


def _scoped(rec: IdRecognizer, strip: str = "") -> tuple[str, int]:
    """`rec`'s pattern as a self-contained piece (flags scoped, `strip` taken off its start)
    and its number of groups."""
    pattern, flags = rec.pattern.removeprefix(strip), rec.flags
    if pattern.startswith("(?i)"):
        pattern, flags = pattern[4:], flags | re.I
    if flags & ~re.I:
        raise ValueError(f"unsupported flags {flags!r} in an id pattern")
    groups = re.compile(pattern).groups
    return (f"(?i:{pattern})" if flags & re.I else pattern), groups


def _shift(piece: str, by: int) -> str:
    """`piece` with its backreferences `\\1`.. renumbered for groups `by` places later."""

    def sub(m: re.Match[str]) -> str:
        return f"\\{int(m.group(1)) + by}"

    return _BACKREF.sub(sub, piece)


class _Joined:
    """One regex of optional lookaheads over `recs` (pattern i in group `wrap[i]`), and `any`."""

    def __init__(self, recs: Sequence[IdRecognizer]) -> None:
        self.recs = tuple(recs)
        parts: list[str] = []
        self.wrap: list[int] = []
        n = 0
        for rec in self.recs:
            piece, groups = _scoped(rec)
            w = n + 1  # the wrapper group; the pattern's own group j becomes w + j
            shifted = _shift(piece, w)
            parts.append(f"(?:(?=({shifted}))|)")
            self.wrap.append(w)
            n = w + groups
        self.joined = re.compile("".join(parts))
        # where any pattern matches (to search windows): their common left edge tested once
        edged = self.edged = all(r.pattern.startswith(LEFT_EDGE) for r in self.recs)
        anys: list[str] = []
        n = 0
        for rec in self.recs:
            piece, groups = _scoped(rec, strip=LEFT_EDGE if edged else "")
            o = n
            anys.append(_shift(piece, o))
            n += groups
        alts = "|".join(f"(?:{a})" for a in anys)
        self.any = re.compile((LEFT_EDGE if edged else "") + f"(?={alts})")


class IdPack:
    """`IdRecognizer`s of one pack (any entities) as one recognizer; list order kept."""

    entity = "NATIONAL_ID"

    def __init__(self, recognizers: Sequence[IdRecognizer]) -> None:
        self.recognizers = tuple(recognizers)
        self.entities = tuple(dict.fromkeys(r.entity for r in self.recognizers))
        self._digit = [r for r in self.recognizers if not r.cues and r.digit_led]
        self._cued = [r for r in self.recognizers if r.cues]
        self._windowed = [r for r in self.recognizers if not r.cues and not r.digit_led]
        self._d = _Joined(self._digit) if self._digit else None
        self._c = _Joined(self._cued) if self._cued else None
        self._w = _Joined(self._windowed) if self._windowed else None
        self._cue_words = Words(*(w for r in self._cued for w in r.cues))

    def find(self, text: str) -> list[Span]:
        """The spans of the recognizers run one by one over the whole text (the reference)."""
        return [s for r in self.recognizers for s in r.find(text)]

    def find_scanned(self, scan: Scan) -> list[Span]:
        found: dict[int, list[Span]] = {}
        if self._d is not None:
            self._digit_pass(scan, self._d, found)
        if self._c is not None:
            self._cue_pass(scan, self._c, found)
        if self._w is not None:
            self._window_pass(scan, self._w, found)
        return [s for r in self.recognizers for s in found.get(id(r), ())]

    def _digit_pass(self, scan: Scan, j: _Joined, found: dict[int, list[Span]]) -> None:
        live = [(i, r) for i, r in enumerate(j.recs) if scan.max_digits >= r.min_digits]
        if not live:
            return
        kmin = min(r.min_digits for _, r in live)
        starts = scan.run_starts(kmin)
        if j.edged:  # the second and later groups of `4111 1111 ...` fail it: skip them here
            text = scan.text
            starts = [p for p in starts if _left_edge(text, p)]
        if not starts:
            return
        allowed: dict[int, frozenset[int]] = {}
        text, last = scan.text, [-1] * len(j.recs)
        for p in starts:
            m = j.joined.match(text, p)
            if m is None:  # never: every part may match empty
                continue
            for i, r in live:
                w = j.wrap[i]
                if m.start(w) < 0 or p < last[i]:
                    continue
                k = r.min_digits
                if k != kmin:
                    if k not in allowed:
                        allowed[k] = frozenset(scan.run_starts(k))
                    if p not in allowed[k]:
                        continue
                last[i] = m.end(w)
                _keep(r, m, w, found)

    def _cue_pass(self, scan: Scan, j: _Joined, found: dict[int, list[Span]]) -> None:
        live = [(i, r) for i, r in enumerate(j.recs) if scan.max_digits >= r.min_digits]
        if not live:
            return
        text, lower, last = scan.text, scan.lower, [-1] * len(j.recs)
        for p in scan.word_starts(self._cue_words):
            m = j.joined.match(text, p)
            if m is None:  # never: every part may match empty
                continue
            for i, r in live:
                w = j.wrap[i]
                if m.start(w) < 0 or p < last[i] or not lower.startswith(r.cues, p):
                    continue
                last[i] = m.end(w)
                _keep(r, m, w, found)

    def _window_pass(self, scan: Scan, j: _Joined, found: dict[int, list[Span]]) -> None:
        live = [(i, r) for i, r in enumerate(j.recs) if scan.max_digits >= r.min_digits]
        if not live:
            return
        if any(r.gate is None for _, r in live):
            self._window_search(scan, j, live, found)
            return
        # every pattern is gated: its value starts at most `lead` characters before a digit
        # run of its window that follows its gate (`IdRecognizer.gate`): only there is it tried
        text, runs = scan.text, scan.all_run_starts
        gated_by: dict[Gate, list[int]] = {}  # several patterns share a gate
        words: dict[int, int] = {}  # per gated run, where its word starts (width patterns)
        # per window, the positions to try there and the patterns that may match at them
        tries: dict[tuple[int, int], tuple[set[int], list[tuple[int, IdRecognizer]]]] = {}
        for i, r in live:
            gate = r.gate
            assert gate is not None
            gated = gated_by.get(gate)
            if gated is None:
                gated = gated_by[gate] = gate.runs(text, runs)
            if gated:
                _add_starts(text, scan.windows(r.min_digits), (i, r), gated, words, tries)
        last = [-1] * len(j.recs)
        for window in sorted(tries):  # windows are disjoint: in text order
            starts, here = tries[window]
            ordered = sorted(starts)
            if j.edged:
                ordered = [p for p in ordered if _left_edge(text, p)]
            we = window[1]
            for p in ordered:
                self._try(j, here, j.joined.match(text, p, we), p, last, found)

    def _window_search(
        self,
        scan: Scan,
        j: _Joined,
        live: list[tuple[int, IdRecognizer]],
        found: dict[int, list[Span]],
    ) -> None:
        """The window pass when some pattern has no gate: every window is searched for the
        patterns whose `min_digits` it holds."""
        allowed = {k: frozenset(scan.windows(k)) for k in {r.min_digits for _, r in live}}
        text, last = scan.text, [-1] * len(j.recs)
        for window in scan.windows(min(r.min_digits for _, r in live)):
            here = [(i, r) for i, r in live if window in allowed[r.min_digits]]
            pos, we = window
            while True:
                hit = j.any.search(text, pos, we)
                if hit is None:
                    break
                p = hit.start()
                self._try(j, here, j.joined.match(text, p, we), p, last, found)
                pos = p + 1

    @staticmethod
    def _try(
        j: _Joined,
        here: list[tuple[int, IdRecognizer]],
        m: re.Match[str] | None,
        p: int,
        last: list[int],
        found: dict[int, list[Span]],
    ) -> None:
        """Keep, for each pattern of `here` that matched at `p` (the groups of `m`), its value
        unless it overlaps that pattern's previous one."""
        if m is None:  # never: every part may match empty
            return
        for i, r in here:
            w = j.wrap[i]
            if m.start(w) < 0 or p < last[i]:
                continue
            last[i] = m.end(w)
            _keep(r, m, w, found)


def _add_starts(
    text: str,
    windows: list[tuple[int, int]],
    rec: tuple[int, IdRecognizer],
    gated: list[int],
    words: dict[int, int],
    tries: dict[tuple[int, int], tuple[set[int], list[tuple[int, IdRecognizer]]]],
) -> None:
    """Add to `tries` where the gated pattern `rec` can match in `windows` (those holding its
    `min_digits`): per digit run of `gated` (sorted: the runs after its gate) inside one, the
    positions from `lead` to `least` before it (not before its window); for a pattern of one whole
    word of `width` characters, only the start of the word holding the run, when that word has
    this width up to the window's end (as far as the match sees). `words` keeps, per run,
    where its word starts (-1: before the window)."""
    r = rec[1]
    k, n = 0, len(windows)
    for g in gated:
        while k < n and windows[k][1] <= g:
            k += 1
        if k == n:
            return
        window = ws, we = windows[k]
        if g < ws:
            continue
        lo = max(ws, g - r.lead)
        if r.width:
            p = words.get(g)
            if p is None:
                p = words[g] = _word_start(text, g, ws)
            if p < lo:
                continue  # the word starts before `lo`: no value of it starts within reach
            m = _WORD_RUN.match(text, p, we)
            if m is None or m.end() - p != r.width:
                continue
            at: range | tuple[int] = (p,)
        else:
            at = range(lo, g - r.least + 1)
        entry = tries.get(window)
        if entry is None:
            entry = tries[window] = (set(), [])
        entry[0].update(at)
        if entry[1][-1:] != [rec]:
            entry[1].append(rec)


def _word_start(text: str, g: int, lo: int) -> int:
    r"""Where the word (run of `\w` characters) holding position `g` starts, or -1 if that is
    before `lo`."""
    p = g
    while p > lo and _is_word(text[p - 1]):
        p -= 1
    if p > 0 and _is_word(text[p - 1]):
        return -1
    return p


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"  # what `\w` matches in a str pattern


def _left_edge(text: str, p: int) -> bool:
    r"""Whether `LEFT_EDGE` (`(?<![\w-])(?<!\d[ .-])`) holds at `p`, without the regex engine:
    not glued to a word character (`\w` is `isalnum()` or `_`) or a dash, nor one group of a
    longer digit sequence."""
    if p == 0:
        return True
    c = text[p - 1]
    if c.isalnum() or c in "_-":
        return False
    return not (p >= 2 and c in " ." and text[p - 2].isdecimal())


def _keep(rec: IdRecognizer, m: re.Match[str], w: int, found: dict[int, list[Span]]) -> None:
    g = w + rec.group
    if rec.valid(m.group(g)):
        found.setdefault(id(rec), []).append(Span(m.start(g), m.end(g), rec.entity))
