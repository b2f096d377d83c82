"""Phone recall without a cue word against numbers that are no phones: before and after, side by side.

A phone written without a cue word ("It changed to 395 3624 last week") is only recognisable
by the number itself; every rule that takes more such numbers also risks taking order
numbers, amounts and ids. This script measures both sides on data nobody here wrote, with the
phone recognizer of a baseline commit (default HEAD, loaded from `git show`) and of the
working tree, in the same run and the same harness (`PhoneRecognizer.find` of the default
"all countries" pack; a span counts when it covers the whole value).

Recall (values in the no-cue carriers of `pii_phones.py`):
- `faker`: Faker's (MIT) `phone_number()` for each of its locales, N per locale, seeded;
- `presidio_space`: the public set's generator value space rebuilt (`pii_phones.py`);
- `libphonenumber_national`: libphonenumber's example numbers, NATIONAL form with spaces,
  dashes, dots (`pii_phone_examples.py`);
- `presidio_space_contexts`: the same values in each of `pii_phones.CONTEXT_CARRIERS`, as
  written, upper-cased and lower-cased (punctuation glued on, table rows, other PII next to
  it: contexts the dev templates do not show); `faker_contexts`: one Faker number per locale
  in each of them, likewise;
- `presidio_dev`: the phone values of the public set's DEV split (whole sentence; never the
  test split).

Numbers that are no phones (rate of sentences in which the phone recognizer finds anything):
- `clinc150`: every query of CLINC150 (all splits: PII-free user requests with amounts, times,
  flight numbers, account digits), `dolly`: `benchmarks/data/dolly_routing_sample.jsonl`,
  `non_pii`: the PII-free sentences of `pii_phones.py`, `presidio_dev_pii_free`: the dev
  split's sentences without a gold span;
- `grouped_amounts` (stress): amounts grouped in thousands (`1 234 567`, `7.013.287`) or
  with cents (`12345.67`);
- `faker_numbers` (stress): Faker's ISBN-13/10, EAN-8/13, prices, postcodes, licence plates,
  bank account numbers (BBAN), building numbers, 6-9 digit random numbers and decimals
  (`3.14159265`) of every locale,
  each alone in a carrier with no context word ("I wrote down {} yesterday."): numbers
  nobody would call phones but that a shape rule could take.

The whole masker's rate of PII-free sentences changed (the issue's budget, <= 3 %) is
reported for the working tree too.

    python benchmarks/pii_phone_tradeoff.py       # -> benchmarks/results/pii_phone_tradeoff.json
    python benchmarks/pii_phone_tradeoff.py --show 20 --baseline HEAD
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import subprocess
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import phonenumbers
from faker import Faker
from faker.config import AVAILABLE_LOCALES
from pii_phone_examples import examples, forms
from pii_phones import CONTEXT_CARRIERS, NO_CUE_CARRIERS, NON_PII, _masked_spans, phone_values
from pii_public import load

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aivos.shared.residency import default_masker  # noqa: E402
from aivos.shared.residency import phones as phones_now  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLINC = ROOT.parent / "shared" / "data" / "clinc150" / "data_full.json"
# fr_QC is a deprecated alias of fr_CA
LOCALES = [loc for loc in AVAILABLE_LOCALES if loc != "fr_QC"]
DOLLY = ROOT / "benchmarks" / "data" / "dolly_routing_sample.jsonl"
NEUTRAL = "I wrote down {} yesterday."
FAKER_NUMBER_KINDS = (
    "isbn13", "isbn10", "ean8", "ean13", "pricetag", "postcode", "license_plate", "bban",
    "building_number",
)  # fmt: skip

Finder = Callable[[str], list[tuple[int, int]]]


def baseline_phones(ref: str) -> types.ModuleType:
    """`shared/residency/phones.py` as it was at `ref`, as a module."""
    src = subprocess.run(
        ["git", "show", f"{ref}:shared/residency/phones.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    mod = types.ModuleType(f"phones_{ref}")
    exec(compile(src, f"{ref}:phones.py", "exec"), mod.__dict__)  # noqa: S102
    return mod


def finder(mod: types.ModuleType) -> Finder:
    rec = mod.PhoneRecognizer(mod.DEFAULT_PHONE_REGIONS)
    return lambda text: [(s.start, s.end) for s in rec.find(text)]


# ---- recall sets: (source, text, value start, value end) ----
def _in_carriers(values: Iterable[tuple[str, str]], seed: int) -> list[tuple[str, str, int, int]]:
    rng = random.Random(seed)
    out = []
    for source, value in values:
        text = rng.choice(NO_CUE_CARRIERS).format(value)
        s0 = text.index(value)
        out.append((source, text, s0, s0 + len(value)))
    return out


def _in_contexts(values: Iterable[tuple[str, str]]) -> list[tuple[str, str, int, int]]:
    cases: dict[str, Callable[[str], str]] = {
        "as written": str,
        "upper": str.upper,
        "lower": str.lower,
    }
    out = []
    for _source, value in values:
        for carrier in CONTEXT_CARRIERS:
            for case, change in cases.items():
                v, text = change(value), change(carrier.format(value))
                s0 = text.index(v)
                out.append((f"{case}: {carrier}", text, s0, s0 + len(v)))
    return out


def faker_phones(per_locale: int, seed: int) -> list[tuple[str, str]]:
    out = []
    for loc in LOCALES:
        fk = Faker(loc)
        fk.seed_instance(seed)
        if not hasattr(fk, "phone_number"):  # a locale without a phone provider
            continue
        out += [(loc, fk.phone_number()) for _ in range(per_locale)]
    return out


def national_examples() -> list[tuple[str, str]]:
    out = []
    for region, _kind, n in examples():
        f = forms(n)
        out += [(region, f[k]) for k in ("national", "national_dash", "national_dot")]
    return out


def presidio_dev_phones() -> list[tuple[str, str, int, int]]:
    return [
        ("dev", r["text"], a, b)
        for r in load("dev")
        for a, b, label in r["spans"]
        if label == "PHONE_NUMBER"
    ]


# ---- texts without phones ----
def clinc_queries() -> list[str]:
    data = json.loads(CLINC.read_text(encoding="utf-8"))
    return [q for split in data.values() for q, _ in split]


def dolly() -> list[str]:
    lines = DOLLY.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["instruction"] for line in lines if line.strip()]


def presidio_dev_pii_free() -> list[str]:
    return [r["text"] for r in load("dev") if not r["spans"]]


def _random_digits(fk: Faker, rng: random.Random) -> str:
    return str(fk.random_number(digits=rng.randint(6, 9), fix_len=True))


def _decimal(fk: Faker, rng: random.Random) -> str:
    left, right = rng.randint(1, 3), rng.randint(4, 9)
    return str(fk.pyfloat(left_digits=left, right_digits=right, positive=True))


def faker_numbers(per_locale: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for loc in LOCALES:
        fk = Faker(loc)
        fk.seed_instance(seed)
        makers: list[Callable[[], Any]] = [
            make for name in FAKER_NUMBER_KINDS if (make := getattr(fk, name, None)) is not None
        ]
        makers += [functools.partial(_random_digits, fk, rng), functools.partial(_decimal, fk, rng)]
        for make in makers:
            for _ in range(per_locale):
                try:
                    out.append(NEUTRAL.format(make()))
                except (AttributeError, KeyError):  # a provider this locale lacks
                    break
    return out


def grouped_amounts(n: int, seed: int) -> list[str]:
    """Amounts of 6-9 digits grouped in thousands by a space or a dot (`1 234 567`), or with
    cents (`12345.67`), alone in a carrier: the European way to write an amount, and also how Spanish or Czech plans write
    9-digit phones (`612 345 678`): without a currency word the two cannot be told apart."""
    rng = random.Random(seed)
    out = []
    for sep in (" ", "."):
        for _ in range(n):
            value = f"{rng.randrange(100_000, 1_000_000_000):,}".replace(",", sep)
            out.append(NEUTRAL.format(value))
    for _ in range(n):  # and with cents, no separator: 12345.67
        out.append(NEUTRAL.format(f"{rng.randrange(10_000, 10_000_000)}.{rng.randrange(100):02d}"))
    return out


def _quiet(make: Callable[..., Any], *args: Any) -> Any:
    # Faker's en_PH bank provider logs a warning ("Numbers generated by this method are purely
    # hypothetical.") for every value
    faker_log = logging.getLogger("faker")
    level = faker_log.level
    faker_log.setLevel(logging.ERROR)
    try:
        return make(*args)
    finally:
        faker_log.setLevel(level)


def recall(find: Finder, items: list[tuple[str, str, int, int]], show: int, name: str) -> dict:
    hit = 0
    by_source: dict[str, list[int]] = {}
    for source, text, a, b in items:
        covered = bytearray(len(text))
        for s, e in find(text):
            covered[s:e] = b"\x01" * (e - s)
        ok = all(covered[a:b])
        hit += ok
        st = by_source.setdefault(source, [0, 0])
        st[0] += 1
        st[1] += ok
        if not ok and show > 0:
            show -= 1
            print(f"  MISS [{name}] {source} {text[a:b]!r} :: {text!r}")
    worst = sorted((round(v[1] / v[0], 3), k) for k, v in by_source.items())[:6]
    return {
        "values": len(items),
        "masked": hit,
        "recall": round(hit / len(items), 4),
        "worst": worst,
    }


def changed(find: Finder, texts: list[str], show: int, name: str) -> dict:
    which = []
    for t in texts:
        spans = find(t)
        if spans:
            which.append({"text": t, "phones": [t[s:e] for s, e in spans]})
    for w in which[:show]:
        print(f"  PHONE IN PII-FREE [{name}] {w['phones']} :: {w['text']!r}")
    return {
        "sentences": len(texts),
        "changed": len(which),
        "rate": round(len(which) / len(texts), 4),
        "which": which[:40],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="HEAD", help="git ref of the phone recognizer before")
    ap.add_argument("--faker-n", type=int, default=20, help="Faker phone numbers per locale")
    ap.add_argument("--faker-numbers-n", type=int, default=5, help="Faker non-phones per kind")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--show", type=int, default=0, help="print this many misses / hits")
    ap.add_argument(
        "--json-out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "pii_phone_tradeoff.json",
    )
    args = ap.parse_args()

    recall_sets = {
        "faker": _in_carriers(_quiet(faker_phones, args.faker_n, args.seed), args.seed),
        "presidio_space": _in_carriers(phone_values(4, 11), args.seed),
        "presidio_space_contexts": _in_contexts(phone_values(1, 11)),
        "faker_contexts": _in_contexts(_quiet(faker_phones, 1, args.seed)),
        "libphonenumber_national": _in_carriers(national_examples(), args.seed),
        "presidio_dev": presidio_dev_phones(),
    }
    free_sets = {
        "clinc150": clinc_queries(),
        "dolly": dolly(),
        "non_pii": list(NON_PII),
        "presidio_dev_pii_free": presidio_dev_pii_free(),
        "faker_numbers": _quiet(faker_numbers, args.faker_numbers_n, args.seed),
        "grouped_amounts": grouped_amounts(1000, args.seed),
    }
    finders = {
        f"before ({args.baseline})": finder(baseline_phones(args.baseline)),
        "after (working tree)": finder(phones_now),
    }
    result: dict[str, Any] = {
        "baseline": args.baseline,
        "pack": "all (DEFAULT_PHONE_REGIONS)",
        "phonenumbers": phonenumbers.__version__,
        "faker_locales": len(LOCALES),
        "seed": args.seed,
        "recall": {},
        "pii_free": {},
    }
    for who, find in finders.items():
        print(who)
        show = args.show if who.startswith("after") else 0
        for name, items in recall_sets.items():
            r = recall(find, items, show, name)
            result["recall"].setdefault(name, {})[who] = r
            print(f"  recall   {name:24} {r['masked']:5d}/{r['values']:<5d} {r['recall']:.4f}")
        for name, texts in free_sets.items():
            c = changed(find, texts, show, name)
            result["pii_free"].setdefault(name, {})[who] = c
            print(f"  phone in {name:24} {c['changed']:5d}/{c['sentences']:<5d} {c['rate']:.4f}")
    # the budget is on the whole masker: PII-free sentences changed by masking at all
    masker = default_masker()
    whole = {}
    for name in ("clinc150", "dolly", "non_pii", "presidio_dev_pii_free"):
        texts = free_sets[name]
        n = sum(1 for t in texts if _masked_spans(masker, t))
        whole[name] = {"sentences": len(texts), "changed": n, "rate": round(n / len(texts), 4)}
        print(f"whole masker (working tree) changes {name:24} {n:5d}/{len(texts)}")
    result["whole_masker_pii_free_changed"] = whole
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
