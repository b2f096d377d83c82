"""Phone recall on the shapes the public set's generator produces, and the false-positive side.

The public set (`pii_public.py`, presidio-research `synth_dataset_v2.json`) was filled by
presidio-research's generator (commit f3ff907, which added the data set): a phone value is
either a FakeNameGenerator record's `TelephoneNumber` (3,000 records,
`raw_data/FakeNameGenerator.com_3000.csv`, 30 countries) or one of the generator's own
`PhoneNumberProviderNew.formats` (`faker_extensions/providers.py`). This script rebuilds
both value spaces WITHOUT any row of the set:

- `FNG_SHAPES`: every (country, digit shape) of the CSV's `TelephoneNumber` column (read
  from the generator's repository; shapes only, no values; the first digit written out where
  every value of that shape shares it, as the trunk `0`). Digits are filled at random,
  retried until `phonenumbers` finds the number valid for that country (as 90 % of the CSV's
  numbers are; 300 tries, then kept as drawn: the CSV's Portuguese numbers are never valid);
- `PROVIDER_FORMATS`: the provider's formats, verbatim (`#` = random digit).

Each value goes into carrier sentences written for this script, half with no phone cue word
before it (the hard case: nothing but the number says it is one). The other side:
`NON_PII` are realistic numeric strings in PII-free sentences (order and ticket numbers,
amounts, times, dates, postcodes, versions, ranges, quantities) that must stay untouched.

    python benchmarks/pii_phones.py                  # writes benchmarks/results/pii_phones.json
    python benchmarks/pii_phones.py --misses 20      # print missed values / masked non-PII
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import phonenumbers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aivos.shared.residency import default_masker  # noqa: E402
from aivos.shared.residency.normalize import normalize  # noqa: E402
from aivos.shared.residency.recognizers import find_all  # noqa: E402

# (country, shape, share of the CSV's 3,000 rows) — the TelephoneNumber column's shapes
FNG_SHAPES: tuple[tuple[str, str, int], ...] = (
    ("AT", "0### ### ## ##", 103), ("AU", "(0#) #### ####", 83), ("BE", "0### ## ## ##", 97),
    ("BR", "(##) ####-####", 89), ("CA", "###-###-####", 92), ("CH", "0## ### ## ##", 102),
    ("CY", "## ######", 194), ("CZ", "### ### ###", 93), ("DE", "0## ## ## ##", 7),
    ("DE", "0### ## ## ##", 13), ("DE", "0#### ## ## ##", 54), ("DE", "0##### ## ##", 8),
    ("DK", "##-##-##-##", 106), ("EE", "### ####", 122), ("ES", "### ### ###", 112),
    ("FI", "0## ### ####", 100), ("FR", "0#.##.##.##.##", 91), ("GB", "0## #### ####", 89),
    ("GL", "## ## ##", 87), ("HU", "(##) ###-###", 85), ("HU", "(##) ###-####", 6),
    ("HU", "(1) ###-####", 6), ("IS", "4## ####", 105), ("IT", "0### #######", 84),
    ("NL", "0#-########", 99), ("NO", "### ## ###", 106), ("NZ", "(0##) ####-###", 93),
    ("PL", "## ### ## ##", 100), ("PT", "2# ### ### ####", 89), ("SE", "0###-#######", 69),
    ("SE", "0##-#######", 22), ("SE", "0#-#######", 2), ("SI", "###-###-###", 102),
    ("TN", "7# ### ###", 106), ("US", "###-###-####", 103), ("UY", "9### ####", 87),
    ("ZA", "0## ### ####", 94),
)  # fmt: skip

PROVIDER_FORMATS: tuple[str, ...] = (
    "##########", "##########", "###-###-####", "###-###-####", "###-#######",
    "07700 ### ###", "07700 ######", "07700######", "(07700) ### ###", "(07700) ######",
    "(07700)######", "+447700 ### ###", "+447700 ######", "+447700######",
    "+91##########", "0##########", "##########",
    "+41 2# ### ## ##", "+41 3# ### ## ##", "+41 4# ### ## ##", "+41 5# ### ## ##",
    "+41 6# ### ## ##", "+41 7# ### ## ##", "+41 8# ### ## ##", "+41 9# ### ## ##",
    "+41 (0)2# ### ## ##", "+41 (0)3# ### ## ##", "+41 (0)4# ### ## ##",
    "+41 (0)5# ### ## ##", "+41 (0)6# ### ## ##", "+41 (0)7# ### ## ##",
    "+41 (0)8# ### ## ##", "+41 (0)9# ### ## ##",
    "+46 (0)8 ### ### ##", "+46 (0)## ## ## ##", "+46 (0)### ### ##",
    "(###)###-####", "(###)###-####", "(###)###-####", "(###)###-####",
    "###.###.####", "###.###.####",
    "###-###-####x###", "###-###-####x####", "(###)###-####x###", "(###)###-####x####",
    "###.###.####x###", "###.###.####x####",
    "+1-###-###-####", "001-###-###-####", "+1-###-###-####x###",
)  # fmt: skip

# written for this script; `{}` is the phone value
CUE_CARRIERS: tuple[str, ...] = (
    "Please call me on {} after six.",
    "Tel: {}",
    "My mobile is {}, text first.",
    "You can reach the front desk at {} any weekday.",
    "Fax {} for the signed form.",
)
NO_CUE_CARRIERS: tuple[str, ...] = (
    "I left {} with the receptionist yesterday.",
    "Use {} if the other one is busy.",
    "Her details: {}\nAddress on file.",
    "{} is the best way to get hold of me.",
    "Forward everything to {} from now on.",
    "It changed to {} last week.",
)

# more ways a value is written into text (written for this script, after the carriers above
# were all masked): punctuation glued on, rows of a table, lists, labels, other PII next to
# it; `pii_phone_tradeoff.py` puts each value into each, as written, upper- and lower-cased
CONTEXT_CARRIERS: tuple[str, ...] = (
    "Phone number: {}", "({})", "[{}]", '"{}"', "'{}'", "phone:{}", "Phone#{}", "tel. {}",
    "Smith,{},js@example.com", "Smith;{};js@example.com", "Smith|{}|js@example.com",
    "Name\t{}\tEmail", "<{}>", "Is it {}?", "Got it: {}!", "{}; then the other one",
    "Reach John at {} or john@example.com", "John Smith {} john@example.com",
    "number is {} (mobile)", "{} (home)", "Contact No: {}", "Mob.No.{}", "call me on:{}",
    "Emergency contact: Jane Doe, {}", "12 Main St, Springfield, IL 62704, {}",
    "Springfield IL 62704\n{}", "My number is {}\u2014call anytime", "{}...", '{{"phone": "{}"}}',
    "phone={}", "Customer phone: {}", "Please send the code to {}", "Who owns {}?",
    "The caller ID showed {}", "Missed call from {} at 10:42", "Missed call from {} on 2024-03-12",
    "{} - John", "John: {}", "John({})", "Kind regards,\nJohn Smith\n{}\njohn@example.com",
    "Hi, it's Anna ({}), about the invoice", "the number {} belongs to Mark",
    "Call us on {} 24/7", "DOB: 1985-03-12 Phone: {}", "SSN 123-45-6789 phone {}",
    "Card 4111 1111 1111 1111 and {}", "{}(ext. 12)",
)  # fmt: skip

# PII-free sentences with numbers a phone pattern could take (written for this script)
NON_PII: tuple[str, ...] = (
    "Your order 4512 3398 was shipped on Monday.",
    "Order number 100234567 has been refunded.",
    "Ticket #4471203 is closed; reopen it within 14 days.",
    "Invoice INV-2024-00871 is due on 31 March.",
    "Reference 2024/0012/3456 was cancelled.",
    "The transfer of EUR 1 250 000 was approved.",
    "Total: $12,345.67 including VAT of 2,057.61.",
    "Amounts between 1 000 and 25 000 need a second signature.",
    "The branch is open 09:00-17:30, Saturdays 10:00-13:00.",
    "Your appointment is at 14.30 on 12.05.2024.",
    "The statement covers 01/04/2024 to 30/06/2024.",
    "Sessions run 2023-2024 and 2024-2025.",
    "Post it to the office at 75008 Paris or SW1A 1AA London.",
    "ZIP 94105-1234 is outside the delivery area.",
    "Version 3.12.4 fixes the login issue; build 20240315.1 follows.",
    "Rates rose 3-5 % over 12-18 months.",
    "We processed 1,234,567 payments in 2023.",
    "The batch 20240315 0930 ran for 47 minutes.",
    "Pallet 12 34 56 78 arrived at dock 3.",
    "Store 0451 sold 318 units in week 12.",
    "Please quote case 5512 887 when you write.",
    "The vault holds 2 500 000 in reserve.",
    "Model 7700 400 series is out of stock.",
    "Flight LH 2045 departs at 06:45 from gate 12.",
    "Parcel 00340434161234567890 is in transit.",
    "Meter reading 004512.7 kWh on 2024-02-01.",
    "Room 1204, floor 12, building 3.",
    "The loan of 350000 runs for 240 months at 4.1 %.",
    "Batch 2024-03-15-0007 failed at 10:42:13.",
    "Score 1450 out of 1600; percentile 97.",
    "Account balance 18 450,75 EUR on 30.06.2024.",
    "Policy 88 1234 5678 renews each January.",
    "Claim 2024 118 5521 was approved.",
    "Stock code 5901234 123457 is a barcode, not an item.",
    "Serial SN 4412-8890-1123 was recalled.",
    "Between 2019 and 2023 we opened 38 branches.",
    "The tracking code is 1Z 999 AA1 0123 4567 84.",
    "Please pay 1500.00 by 15.07.",
    "We need 3 copies of pages 12-19 and 104-110.",
    "Contract 2023-4471-22 ends on 2025-12-31.",
)


def _fill(shape: str, rng: random.Random) -> str:
    return "".join(str(rng.randrange(10)) if c == "#" else c for c in shape)


def _valid_fill(country: str, shape: str, rng: random.Random) -> str:
    value = _fill(shape, rng)
    for _ in range(300):
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(value, country)):
                return value
        except phonenumbers.NumberParseException:
            pass
        value = _fill(shape, rng)
    return value


def phone_values(n_per_shape: int, seed: int) -> list[tuple[str, str]]:
    """(source, value) pairs: `n_per_shape` per FakeNameGenerator shape and provider format."""
    rng = random.Random(seed)
    out = []
    for country, shape, _ in FNG_SHAPES:
        out += [(f"fng:{country}", _valid_fill(country, shape, rng)) for _ in range(n_per_shape)]
    for fmt in PROVIDER_FORMATS:
        out += [("provider", _fill(fmt, rng)) for _ in range(n_per_shape)]
    return out


def _masked_spans(masker: Any, text: str) -> list[tuple[int, int, str]]:
    norm = normalize(text)
    return [(*norm.span(s.start, s.end), s.entity) for s in find_all(norm.text, masker.recognizers)]


def evaluate(
    n_per_shape: int = 4, seed: int = 11, locales: tuple[str, ...] | None = None, misses: int = 0
) -> dict[str, Any]:
    masker = default_masker(locales=locales)
    res: dict[str, Any] = {}
    for name, carriers in (("cue", CUE_CARRIERS), ("no_cue", NO_CUE_CARRIERS)):
        rng = random.Random(seed)
        by_source: dict[str, list[int]] = {}
        shown = 0
        for source, value in phone_values(n_per_shape, seed):
            text = rng.choice(carriers).format(value)
            s0 = text.index(value)
            covered = bytearray(len(text))
            for s, e, _ in _masked_spans(masker, text):
                covered[s:e] = b"\x01" * (e - s)
            hit = all(covered[s0 : s0 + len(value)])
            key = "fng" if source.startswith("fng") else "provider"
            for k in {key, source, "all"}:
                st = by_source.setdefault(k, [0, 0])
                st[0] += 1
                st[1] += hit
            if not hit and shown < misses:
                shown += 1
                print(f"MISS [{name}] {source} {value!r} :: {text!r}")
        res[name] = {
            k: {"values": v[0], "masked": v[1], "recall": round(v[1] / v[0], 3)}
            for k, v in sorted(by_source.items())
        }
    changed = []
    for text in NON_PII:
        spans = _masked_spans(masker, text)
        if spans:
            changed.append({"text": text, "masked": [(text[s:e], t) for s, e, t in spans]})
    for c in changed[:misses]:
        print(f"NON-PII MASKED {c['masked']} :: {c['text']!r}")
    res["non_pii"] = {"sentences": len(NON_PII), "changed": len(changed), "which": changed}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4, help="values per shape / format")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--misses", type=int, default=0)
    ap.add_argument(
        "--json-out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "pii_phones.json",
    )
    args = ap.parse_args()
    from aivos.shared.residency.locales import locales_for

    result: dict[str, Any] = {"seed": args.seed, "values_per_shape": args.n}
    for pack, locales in (("all", None), ("us-east", locales_for("us-east"))):
        r = evaluate(args.n, args.seed, locales, args.misses if pack == "all" else 0)
        result[pack] = r
        for name in ("cue", "no_cue"):
            a = r[name]
            print(f"[{pack}] {name:6} all {a['all']['recall']}  fng {a['fng']['recall']}  "
                  f"provider {a['provider']['recall']}")  # fmt: skip
        worst = sorted((v["recall"], k) for k, v in r["no_cue"].items() if k.startswith("fng:"))[:8]
        print(f"[{pack}] no-cue weakest countries: {worst}")
        print(f"[{pack}] non-PII sentences changed: {r['non_pii']['changed']}/{len(NON_PII)}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
