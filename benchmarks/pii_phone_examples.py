"""Phone recall on libphonenumber's own example numbers: every region, every number type.

Google's libphonenumber (Python port `phonenumbers`, Apache-2.0) ships, per region and number
type (fixed line, mobile, toll free, ...), one example number that its maintainers chose from
the region's numbering plan: phone data nobody here wrote, covering 245 regions. Each example
is written the ways people write numbers: E.164 (`+4915123456789`), INTERNATIONAL
(`+49 1512 3456789`), INTERNATIONAL with dashes or dots for the spaces, with `00` for `+`,
NATIONAL (`01512 3456789`) and NATIONAL with dashes, dots or no separators. Each goes into the
carrier sentences of `pii_phones.py` with a phone cue word before it and without one.

Reported per written form and pack: "all" (every country known, the default) and the region
itself as the site's locale pack (a national number is only read as a phone without a cue
in the regions of the site's pack, by design: `docs/policy.md`). The PII-free side is
`pii_phones.py`'s NON_PII sentences.

    python benchmarks/pii_phone_examples.py            # -> benchmarks/results/pii_phone_examples.json
    python benchmarks/pii_phone_examples.py --misses 30
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from pii_phones import CUE_CARRIERS, NO_CUE_CARRIERS, NON_PII, _masked_spans

from aivos.shared.residency import default_masker

TYPES = {
    "fixed": PhoneNumberType.FIXED_LINE,
    "mobile": PhoneNumberType.MOBILE,
    "toll_free": PhoneNumberType.TOLL_FREE,
    "voip": PhoneNumberType.VOIP,
    "uan": PhoneNumberType.UAN,
}


def forms(n: phonenumbers.PhoneNumber) -> dict[str, str]:
    """The written forms of one number."""
    intl = phonenumbers.format_number(n, PhoneNumberFormat.INTERNATIONAL)
    nat = phonenumbers.format_number(n, PhoneNumberFormat.NATIONAL)
    sep = re.compile(r"(?<=\d)[ ](?=\d)")
    out = {
        "e164": phonenumbers.format_number(n, PhoneNumberFormat.E164),
        "intl": intl,
        "intl_dash": sep.sub("-", intl),
        "intl_dot": sep.sub(".", intl),
        "intl_00": "00" + intl[1:],
        "national": nat,
        "national_dash": sep.sub("-", nat),
        "national_dot": sep.sub(".", nat),
        "national_plain": re.sub(r"[^\d]", "", nat),
    }
    return out


def examples() -> list[tuple[str, str, phonenumbers.PhoneNumber]]:
    """(region, type, number) for every region and type with an example."""
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        seen = set()
        for name, t in TYPES.items():
            n = phonenumbers.example_number_for_type(region, t)
            if n is None or n.national_number in seen:
                continue
            seen.add(n.national_number)
            out.append((region, name, n))
    return out


def evaluate(misses: int = 0, seed: int = 3) -> dict[str, Any]:
    rng = random.Random(seed)
    all_pack = default_masker()
    own: dict[str, Any] = {}
    stats: dict[str, list[int]] = {}
    shown = 0
    for region, kind, n in examples():
        for form, value in forms(n).items():
            for cue, carriers in (("cue", CUE_CARRIERS), ("no_cue", NO_CUE_CARRIERS)):
                text = rng.choice(carriers).format(value)
                s0 = text.index(value)
                for pack in ("all", "own"):
                    if pack == "own":
                        if region not in own:
                            own[region] = default_masker(locales=[region])
                        masker = own[region]
                    else:
                        masker = all_pack
                    covered = bytearray(len(text))
                    for s, e, _ in _masked_spans(masker, text):
                        covered[s:e] = b"\x01" * (e - s)
                    hit = all(covered[s0 : s0 + len(value)])
                    for key in (f"{pack} {cue} {form}", f"{pack} {cue} all"):
                        st = stats.setdefault(key, [0, 0])
                        st[0] += 1
                        st[1] += hit
                    if not hit and shown < misses and pack == "own":
                        shown += 1
                        print(f"MISS [{pack} {cue} {form}] {region} {kind} {value!r} :: {text!r}")
    res: dict[str, Any] = {
        "examples": len(examples()),
        "recall": {
            k: {"values": v[0], "masked": v[1], "recall": round(v[1] / v[0], 3)}
            for k, v in sorted(stats.items())
        },
    }
    changed = [t for t in NON_PII if _masked_spans(all_pack, t)]
    res["non_pii"] = {"sentences": len(NON_PII), "changed": len(changed), "which": changed}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--misses", type=int, default=0)
    ap.add_argument(
        "--json-out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "pii_phone_examples.json",
    )
    args = ap.parse_args()
    res = evaluate(args.misses)
    res["phonenumbers"] = phonenumbers.__version__
    for k, v in res["recall"].items():
        print(f"{k:28} {v['masked']:5d}/{v['values']:<5d} {v['recall']}")
    print(f"non-PII sentences changed: {res['non_pii']['changed']}/{res['non_pii']['sentences']}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
