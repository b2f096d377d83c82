"""Spelling normalisation of a query before the intent classifier sees it.

A customer typing on a phone writes "acount balanse"; the tokenizer splits an unknown word
into pieces the model never trained on and the intent is lost. Before classifying, each word
that is not known is replaced by the nearest target word: Damerau (optimal string alignment)
distance 1, found through SymSpell's symmetric-delete index (`symspellpy`, MIT). Among
equally near targets the one the training rows saw beside the same neighbours wins
("rewad points" -> "reward points"); failing that, a training word before an English one,
then the more frequent.

Never changed: known words; words shorter than `min_length`; ALL-CAPS acronyms and words
with a capital inside ("iPhone"); every whitespace-delimited token holding a digit or a
character other than letters, "-" and "'" (numbers, e-mail addresses, codes, URLs); a word
with no target within reach.

Vocabularies:
* *known* = the bundle's training words (`words.txt`, shared/vocabulary.py) + the
  `english_known` most frequent words of the English list symspellpy ships (a rarer word —
  "nae", "jus", "outing" — is more often a slip than meant) + apostrophe-less contractions;
* *targets* (what a word may become) = the training words + the `english_targets` most
  frequent English words: a pruned index keeps start-up and memory small (it holds every
  one-letter deletion of every target).

Only the classifier input changes (`IntentModel.classify_batch`); the text stored, masked,
audited, escalated or shown is the caller's. Options chosen on CLINC150 val; numbers and
costs: benchmarks/intent_typos.py.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import re
from collections.abc import Mapping

import msgspec
from symspellpy import SymSpell, Verbosity
from symspellpy.editdistance import DistanceAlgorithm, EditDistance

from aivos.shared.vocabulary import Vocabulary, word_spans

__all__ = ["SpellingCorrector", "SpellingOptions", "english_counts"]

_ENGLISH_FILE = "frequency_dictionary_en_82_765.txt"
# A training word outranks any English word at the same distance: it is what the site says.
_DOMAIN_BOOST = 10**12
# Tokens the corrector leaves whole: letters with inner "-" or "'" only, once the
# punctuation around them is set aside. Anything else (digits, "@", "/", ".", "_") is a
# number, an address or a code.
_TOKEN = re.compile(r"\S+")
_EDGE_PUNCT = "\"'()[]{}<>.,;:!?*"
_LETTERS = re.compile(r"[A-Za-z]+")  # shared/vocabulary.py's words
_PLAIN = re.compile(r"[A-Za-z][A-Za-z'\-]*")
# Contractions typed without the apostrophe are words, not typos (the English list spells
# them with it, so they would otherwise become "done", "cart", "wont"...).
_CONTRACTIONS = frozenset(
    re.findall(
        r"\w+",
        "arent cant couldnt didnt doesnt dont hadnt hasnt havent hed hes id ill im isnt ive "
        "lets mightnt mustnt shant shes shouldnt thats theres theyd theyll theyre theyve wasnt "
        "wed were weve werent whats wheres whos wont wouldnt youd youll youre youve",
    )
)


# (suffix, letter the stem may have lost): "cards", "boxes", "card's", "booked", "saved",
# "booking", "making", "cheaply", "cities"
_INFLECTIONS = (
    ("'s", ""),
    ("ies", "y"),
    ("es", ""),
    ("s", ""),
    ("ied", "y"),
    ("ed", "e"),
    ("d", ""),
    ("ing", "e"),
    ("ly", ""),
)


class SpellingOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How far the corrector reaches. Defaults chosen on CLINC150 val (benchmarks/intent_typos.py)."""

    min_length: int = 3  # shorter words are left alone (too many neighbours at distance 1)
    english_targets: int = 5_000  # most frequent English words a typo may become
    long_word: int = 0  # words this long may be 2 edits away; 0 = one edit for every word
    # the most frequent English words that count as known (0 = all 82,765); a rarer word
    # ("nae", "jus", "outing") within reach of a better candidate is taken for a typo
    english_known: int = 20_000
    shortest_target: int = 2  # corrections are at least this long
    use_pairs: bool = True  # pick among equally near candidates by the training word pairs
    cache_size: int = 4096  # corrections remembered (a repeated typo costs one lookup)


def english_counts(limit: int | None = None) -> dict[str, int]:
    """The `limit` most frequent words of symspellpy's English frequency list (all: None),
    `word -> count`, most frequent first. Not cached: a corrector keeps only what it uses."""
    text = (importlib.resources.files("symspellpy") / _ENGLISH_FILE).read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        word, _, count = line.partition(" ")
        if word.isalpha():
            rows.append((word, int(count)))
    rows.sort(key=lambda row: -row[1])  # stable; the file appends a few words at its end
    return dict(rows[:limit])


class SpellingCorrector:
    """`correct(text)`: `text` with its misspelt words replaced. Thread-safe (read-only
    after construction; the lru cache is thread-safe)."""

    def __init__(
        self,
        domain: Vocabulary | Mapping[str, int] | None = None,
        options: SpellingOptions | None = None,
        english: Mapping[str, int] | None = None,
    ) -> None:
        self.options = options = options or SpellingOptions()
        if english is None:
            english = english_counts(
                max(options.english_known, options.english_targets)
                if options.english_known
                else None
            )
        words: Mapping[str, int]
        if isinstance(domain, Vocabulary):
            words, self._pairs = domain.words, domain.pairs if options.use_pairs else {}
        else:
            words, self._pairs = domain or {}, {}
        known = itertools.islice(english, options.english_known or None)
        self._known = frozenset(known).union(words, _CONTRACTIONS)
        distance = 2 if options.long_word else 1
        self._index = SymSpell(
            max_dictionary_edit_distance=distance,
            prefix_length=7,
            # editdistpy's C++ distance (symspellpy's own extra): lookups ~2x faster than the
            # pure-Python default, same algorithm
            distance_comparer=EditDistance(DistanceAlgorithm.DAMERAU_OSA_FAST),
        )
        for word, count in itertools.islice(english.items(), options.english_targets):
            if len(word) >= options.shortest_target:
                self._index.create_dictionary_entry(word, count)
        for word, count in words.items():
            if len(word) >= options.shortest_target:
                self._index.create_dictionary_entry(word, count * _DOMAIN_BOOST)
        self._candidates = functools.lru_cache(maxsize=options.cache_size)(self._lookup)

    @property
    def n_targets(self) -> int:
        return len(self._index.words)

    def correct(self, text: str) -> str:
        known, shortest = self._known, self.options.min_length
        if all(len(w) < shortest or w.lower() in known for w in _LETTERS.findall(text)):
            return text  # the common case, at the cost of one regex scan
        words = self._words(text)
        if not any(editable for *_, editable in words):
            return text
        out, last, before = [], 0, ""
        for n, (start, end, editable) in enumerate(words):
            word = text[start:end]
            after = text[words[n + 1][0] : words[n + 1][1]].lower() if n + 1 < len(words) else ""
            fixed = self._word(word, before, after) if editable else word
            if fixed != word:
                out += [text[last:start], fixed]
                last = end
            before = fixed.lower()
        return "".join(out) + text[last:] if out else text

    def _words(self, text: str) -> list[tuple[int, int, bool]]:
        """(start, end, may change) of every run of letters, in order."""
        out = []
        for token in _TOKEN.finditer(text):
            core = token.group(0).strip(_EDGE_PUNCT)
            plain = bool(core) and _PLAIN.fullmatch(core) is not None
            base = token.start()
            out += [(base + w.start(), base + w.end(), plain) for w in word_spans(token.group(0))]
        return out

    def _word(self, word: str, before: str, after: str) -> str:
        if len(word) < self.options.min_length or any(c.isupper() for c in word[1:]):
            return word  # short, an acronym ("ATM", "PIN") or a brand ("iPhone")
        lower = word.lower()
        if lower in self._known or self._inflection_of_known(lower):
            return word
        candidates = self._candidates(lower)
        if not candidates:
            return word
        fixed = self._in_context(candidates, before, after)
        return fixed.capitalize() if word[0].isupper() else fixed

    def _inflection_of_known(self, lower: str) -> bool:
        """A plural, possessive or verb form of a known word ("moons", "jupiter's",
        "booked", "cancelling") is a word, not a slip: the lists hold base forms more often
        than their inflections, and correcting "moons" to "moon" changed a test query's
        intent."""
        known = self._known
        for suffix, restore in _INFLECTIONS:
            if lower.endswith(suffix) and len(lower) - len(suffix) >= 3:
                stem = lower[: -len(suffix)]
                if stem in known or (restore and stem + restore in known):
                    return True
                if suffix in ("ed", "ing") and stem[-1:] == stem[-2:-1] and stem[:-1] in known:
                    return True  # a doubled consonant: "cancelled", "stopping"
        return False

    def _in_context(self, candidates: tuple[str, ...], before: str, after: str) -> str:
        """The candidate the training rows most often saw beside these neighbours; without
        such evidence the first (nearest, then most frequent)."""
        if len(candidates) == 1 or not self._pairs:
            return candidates[0]
        pairs = self._pairs
        seen = [pairs.get(f"{before} {c}", 0) + pairs.get(f"{c} {after}", 0) for c in candidates]
        best = max(range(len(candidates)), key=seen.__getitem__)  # first of equals wins
        return candidates[best] if seen[best] else candidates[0]

    def _lookup(self, word: str) -> tuple[str, ...]:
        """Targets at the smallest distance found, most frequent first."""
        distance = 2 if self.options.long_word and len(word) >= self.options.long_word else 1
        found = self._index.lookup(word, Verbosity.CLOSEST, max_edit_distance=distance)
        return tuple(s.term for s in found)
