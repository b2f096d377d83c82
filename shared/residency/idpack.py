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
from bisect import bisect_left
from collections.abc import Callable, Sequence

from aivos.shared.residency.ids import LEFT_EDGE, IdRecognizer
from aivos.shared.residency.scan import Scan, Words
from aivos.shared.residency.spans import Span

__all__ = ["IdPack"]

_BACKREF = re.compile(r"\\([1-9])")


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
        kmin = min(r.min_digits for _, r in live)
        windows = scan.windows(kmin)
        allowed = {k: frozenset(scan.windows(k)) for k in {r.min_digits for _, r in live}}
        text, last = scan.text, [-1] * len(j.recs)
        runs = scan.all_run_starts
        for ws, we in windows:
            in_window = runs[bisect_left(runs, ws) : bisect_left(runs, we)]
            passing: dict[Callable[[str, int], bool], list[int]] = {}  # per gate (shared)
            here = []
            # a gated pattern's value starts at most `lead` characters before a digit run of
            # the window that passes its gate (`IdRecognizer.gate`): only there can it match
            starts: set[int] | None = set()
            for i, r in live:
                if (ws, we) not in allowed[r.min_digits]:
                    continue
                if r.gate is None:
                    starts = None  # an ungated pattern: search the whole window
                    here.append((i, r))
                    continue
                gated = passing.get(r.gate)
                if gated is None:
                    gated = passing[r.gate] = [g for g in in_window if r.gate(text, g)]
                if not gated:
                    continue  # no digit run here passes its gate: it cannot match here
                here.append((i, r))
                if starts is not None:
                    for g in gated:
                        starts.update(range(max(ws, g - r.lead), g + 1))
            if not here:
                continue
            if starts is not None:
                # every position where a pattern of `here` matches is in `starts`: trying
                # each (in order) keeps what the window search would
                ordered = sorted(starts)
                if j.edged:
                    ordered = [p for p in ordered if _left_edge(text, p)]
                for p in ordered:
                    self._try(j, here, j.joined.match(text, p, we), p, last, found)
                continue
            pos = ws
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
