"""Train-time text noise: the slips people make typing on phones, so the model learns to
read through them.

`augment_examples` returns one noisy copy for a seeded share of the training rows: keyboard
typos, casing, dropped punctuation and contractions (or their expansion). The build adds
these copies to the clean rows; validation and calibration stay clean.

Deliberately not the generator `aivos intents eval --perturb typos` uses
(`edge/intent/evaluate.py`): a different keyboard model (diagonal neighbours too, doubled
letters), words of 3+ letters, a per-sentence rate, its own seed stream. Training on the
evaluation's exact noise would flatter the perturbed figure.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from aivos.shared.datasets import Example

__all__ = ["AUGMENT_RATIO", "augment_examples", "noisy_text"]

# One noisy copy for half of the rows: measured on CLINC150 (docs/models.md, "Robustness"),
# at 1.5x the fine-tuning time. Copies, not replacements, so no clean row is lost.
AUGMENT_RATIO = 0.5

# A stream of its own, so the copies do not depend on how other stages use the build seed.
_SEED_SALT = 0x5EED_A06

_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_POS = {ch: (r, c) for r, row in enumerate(_KEYBOARD) for c, ch in enumerate(row)}
# Every key within one step, diagonals included (rows are offset by about half a key).
_NEAR: dict[str, str] = {
    ch: "".join(
        other
        for other, (r2, c2) in _POS.items()
        if other != ch and abs(r2 - r) <= 1 and abs((c2 + 0.5 * r2) - (c + 0.5 * r)) <= 1.0
    )
    for ch, (r, c) in _POS.items()
}
_WORD = re.compile(r"[A-Za-z]{3,}")
_PUNCT = re.compile(r"[?!.,;:\"']")

# Both directions: users write "what's" and "what is", "dont" and "do not".
_CONTRACTIONS = {
    "what is": "what's",
    "it is": "it's",
    "that is": "that's",
    "there is": "there's",
    "i am": "i'm",
    "you are": "you're",
    "we are": "we're",
    "they are": "they're",
    "do not": "don't",
    "does not": "doesn't",
    "did not": "didn't",
    "can not": "can't",
    "cannot": "can't",
    "will not": "won't",
    "is not": "isn't",
    "are not": "aren't",
    "i would": "i'd",
    "i will": "i'll",
    "i have": "i've",
    "let us": "let's",
    "how is": "how's",
    "where is": "where's",
    "who is": "who's",
}
_EXPANSIONS = {short: long for long, short in _CONTRACTIONS.items() if long != "cannot"}
_CONTRACT_RE = re.compile(r"\b(" + "|".join(map(re.escape, _CONTRACTIONS)) + r")\b", re.I)
_EXPAND_RE = re.compile(r"\b(" + "|".join(map(re.escape, _EXPANSIONS)) + r")\b", re.I)


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    near = _NEAR.get(word[i].lower()) or word[i]
    if word[i].isupper():
        near = near.upper()
    kind = rng.choices(("near", "drop", "double", "swap", "extra"), (4, 2, 1, 2, 1))[0]
    if kind == "near":
        return word[:i] + rng.choice(near) + word[i + 1 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[: i + 1] + word[i] + word[i + 1 :]
    if kind == "swap" and i < len(word) - 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + rng.choice(near) + word[i:]


def _typos(text: str, rng: random.Random) -> str:
    rate = rng.uniform(0.15, 0.45)
    return _WORD.sub(lambda m: _typo(m.group(0), rng) if rng.random() < rate else m.group(0), text)


def _contractions(text: str, rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.4:
        return _CONTRACT_RE.sub(lambda m: _CONTRACTIONS[m.group(0).lower()], text)
    if choice < 0.7:
        return _EXPAND_RE.sub(lambda m: _EXPANSIONS[m.group(0).lower()], text)
    return text.replace("'", "")  # "dont", "whats"


def _casing(text: str, rng: random.Random) -> str:
    return rng.choice((str.upper, str.title, str.capitalize, str.lower))(text)


def noisy_text(text: str, rng: random.Random) -> str:
    """`text` as a hurried typist might send it; differs from `text` whenever it can."""
    out = text
    if rng.random() < 0.5:
        out = _contractions(out, rng)
    if rng.random() < 0.5:
        out = _PUNCT.sub("", out)
    if rng.random() < 0.3:
        out = _casing(out, rng)
    if rng.random() < 0.8 or out == text:
        out = _typos(out, rng)
    for _ in range(3):  # a short text may come through unchanged: force a slip
        if out != text or not _WORD.search(out):
            break
        words = list(_WORD.finditer(out))
        m = rng.choice(words)
        out = out[: m.start()] + _typo(m.group(0), rng) + out[m.end() :]
    return " ".join(out.split()) or text


def augment_examples(
    examples: Sequence[Example], ratio: float = AUGMENT_RATIO, seed: int = 13
) -> list[Example]:
    """Noisy copies (same labels) of a seeded `ratio` of `examples`; the same input, ratio
    and seed give the same copies. Copies identical to their source are left out."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"augmentation ratio must be within [0, 1], got {ratio}")
    rng = random.Random(seed ^ _SEED_SALT)
    out: list[Example] = []
    for example in examples:
        if rng.random() >= ratio:
            continue
        text = noisy_text(example.text, rng)
        if text != example.text:
            out.append(Example(text=text, label=example.label))
    return out
