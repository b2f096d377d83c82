"""Generate a labelled PII set: customer-message sentences with embedded PII and look-alikes.

Each JSONL record: {"id": N, "text": "...", "spans": [{"start", "end", "entity", "value"}],
"distractors": ["..."]}. Spans are character offsets into `text`. Distractors are values
that must NOT be flagged (order numbers, dates, amounts, invalid-Luhn card numbers,
invalid IBANs, invalid SSNs, times, versions). Deterministic for a given seed.

    python benchmarks/pii_dataset.py --n 2000 --seed 7 --out benchmarks/results/pii_set.jsonl
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import string
from collections.abc import Callable
from pathlib import Path

__all__ = ["generate", "ENTITIES"]

ENTITIES = ("EMAIL", "PHONE", "CARD", "IBAN", "IPV4", "IPV6", "SSN")

_FIRST = [
    "anna",
    "ben",
    "chloe",
    "david",
    "emma",
    "farid",
    "giulia",
    "hans",
    "ines",
    "jamal",
    "kenji",
    "lena",
    "mateo",
    "nora",
    "oliver",
    "priya",
    "quentin",
    "rosa",
    "sven",
    "tomasz",
]
_LAST = [
    "smith",
    "mueller",
    "dubois",
    "rossi",
    "garcia",
    "kowalski",
    "nguyen",
    "oconnor",
    "jansen",
    "silva",
    "novak",
    "berg",
    "khan",
    "lopez",
    "martin",
    "weber",
]
_DOMAINS = ["gmail.com", "outlook.com", "example.org", "mail.co.uk", "web.de", "orange.fr",
            "company-mail.com", "uni-hamburg.de", "proton.me", "shop.example.net"]  # fmt: skip


def _luhn_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def _email(r: random.Random) -> str:
    f, last = r.choice(_FIRST), r.choice(_LAST)
    local = r.choice([f"{f}.{last}", f"{f[0]}{last}{r.randint(1, 99)}", f"{f}_{last}+billing",
                      f"{f.capitalize()}.{last.capitalize()}", f"{last}{r.randint(1970, 2005)}"])  # fmt: skip
    return f"{local}@{r.choice(_DOMAINS)}"


def _d(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def _phone(r: random.Random) -> str:
    a, b, c = f"{r.randint(201, 989)}", f"{r.randint(200, 999)}", _d(r, 4)
    forms = [
        f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"+1-{a}-{b}-{c}",
        f"+44 20 {_d(r, 4)} {_d(r, 4)}", f"+44 7{_d(r, 3)} {_d(r, 6)}", f"020 {_d(r, 4)} {_d(r, 4)}",
        f"+49 30 {_d(r, 8)}", f"+49 151 {_d(r, 8)}", f"030 {_d(r, 8)}", f"+4915{_d(r, 9)}",
        f"+33 6 {_d(r, 2)} {_d(r, 2)} {_d(r, 2)} {_d(r, 2)}",
        f"06 {_d(r, 2)} {_d(r, 2)} {_d(r, 2)} {_d(r, 2)}", f"+34 {r.randint(600, 699)} {_d(r, 3)} {_d(r, 3)}",
        f"+39 3{_d(r, 2)} {_d(r, 7)}", f"+31 6 {_d(r, 8)}", f"07{_d(r, 9)}",
    ]  # fmt: skip
    return r.choice(forms)


def _card_digits(r: random.Random) -> str:
    kind = r.choice(["visa", "mc", "mc2", "amex", "disc", "visa"])
    if kind == "amex":
        body = r.choice(["34", "37"]) + _d(r, 12)
    elif kind == "mc":
        body = f"5{r.randint(1, 5)}" + _d(r, 13)
    elif kind == "mc2":
        body = str(r.randint(2221, 2720)) + _d(r, 11)
    elif kind == "disc":
        body = "6011" + _d(r, 11)
    else:
        body = "4" + _d(r, 14)
    return body + _luhn_digit(body)


def _fmt_card(r: random.Random, digits: str) -> str:
    sep = r.choice([" ", "-", ""])
    if len(digits) == 15:
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return sep.join(groups)


def _card(r: random.Random) -> str:
    return _fmt_card(r, _card_digits(r))


def _bad_card(r: random.Random) -> str:
    digits = _card_digits(r)
    wrong = str((int(digits[-1]) + r.randint(1, 9)) % 10)
    return _fmt_card(r, digits[:-1] + wrong)


# country: (length, BBAN pattern: n = digit, a = upper letter, c = alnum)
_IBAN_FMT = {
    "DE": "n" * 18, "FR": "n" * 10 + "c" * 11 + "nn", "GB": "aaaa" + "n" * 14, "NL": "aaaa" + "n" * 10,
    "ES": "n" * 20, "IT": "a" + "n" * 10 + "c" * 12, "BE": "n" * 12, "CH": "n" * 5 + "c" * 12,
    "AT": "n" * 16, "PL": "n" * 24, "IE": "aaaa" + "n" * 14, "PT": "n" * 21,
}  # fmt: skip


def _iban_check(country: str, bban: str) -> str:
    num = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{98 - num % 97:02d}"


def _iban_compact(r: random.Random) -> str:
    country = r.choice(list(_IBAN_FMT))
    pool = {
        "n": string.digits,
        "a": string.ascii_uppercase,
        "c": string.digits + string.ascii_uppercase,
    }
    bban = "".join(r.choice(pool[k]) for k in _IBAN_FMT[country])
    return country + _iban_check(country, bban) + bban


def _fmt_iban(r: random.Random, iban: str) -> str:
    if r.random() < 0.5:
        return iban
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _iban(r: random.Random) -> str:
    return _fmt_iban(r, _iban_compact(r))


def _bad_iban(r: random.Random) -> str:
    iban = _iban_compact(r)
    i = r.randrange(4, len(iban))
    pool = string.digits if iban[i].isdigit() else string.ascii_uppercase
    c = r.choice([x for x in pool if x != iban[i]])
    return _fmt_iban(r, iban[:i] + c + iban[i + 1 :])


def _ipv4(r: random.Random) -> str:
    return str(ipaddress.IPv4Address(r.getrandbits(32)))


def _ipv6(r: random.Random) -> str:
    if r.random() < 0.5:  # documentation / ULA-like prefix with zero runs -> compressed form
        addr = ipaddress.IPv6Address((0x20010DB8 << 96) | r.getrandbits(32))
    else:
        addr = ipaddress.IPv6Address(r.getrandbits(128))
    return addr.exploded if r.random() < 0.2 else addr.compressed


def _ssn(r: random.Random) -> str:
    area = r.choice([r.randint(1, 665), r.randint(667, 899)])
    sep = r.choice(["-", "-", " "])
    return f"{area:03d}{sep}{r.randint(1, 99):02d}{sep}{r.randint(1, 9999):04d}"


def _bad_ssn(r: random.Random) -> str:
    area = r.choice(["000", "666", str(r.randint(900, 999))])
    return f"{area}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"


_GEN: dict[str, Callable[[random.Random], str]] = {
    "EMAIL": _email, "PHONE": _phone, "CARD": _card, "IBAN": _iban,
    "IPV4": _ipv4, "IPV6": _ipv6, "SSN": _ssn,
}  # fmt: skip

_MONTHS = ["January", "March", "June", "September", "November"]


def _distractor(r: random.Random) -> str:
    kind = r.randrange(12)
    if kind == 0:
        return f"ORD-{r.randint(2019, 2025)}-{_d(r, 6)}"
    if kind == 1:
        return f"#{r.randint(10_000_000, 99_999_999)}"
    if kind == 2:
        return f"{r.randint(2019, 2025)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
    if kind == 3:
        return f"{r.randint(1, 28):02d}/{r.randint(1, 12):02d}/{r.randint(2019, 2025)}"
    if kind == 4:
        return f"{r.choice(_MONTHS)} {r.randint(1, 28)}, {r.randint(2019, 2025)}"
    if kind == 5:
        return r.choice(["$", "€", "£"]) + f"{r.randint(1, 9999):,}.{r.randint(0, 99):02d}"
    if kind == 6:
        return f"{r.randint(1, 9)} {r.randint(100, 999)},{r.randint(0, 99):02d} EUR"
    if kind == 7:
        return _bad_card(r)
    if kind == 8:
        return _bad_iban(r)
    if kind == 9:
        return _bad_ssn(r)
    if kind == 10:
        return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"
    return f"v{r.randint(1, 9)}.{r.randint(0, 30)}.{r.randint(0, 99)}"


_LABEL = {
    "EMAIL": ["my email is", "write to", "contact me at", "reply to", "send it to"],
    "PHONE": ["call me on", "my number is", "reach me at", "phone:", "text me at"],
    "CARD": ["my card", "card number", "I paid with", "the card ending in nothing, full number"],
    "IBAN": ["my IBAN is", "refund to", "account", "transfer it to IBAN"],
    "IPV4": ["from IP", "the router at", "my address was", "blocked"],
    "IPV6": ["from", "the IPv6 address", "login from", "host"],
    "SSN": ["my SSN is", "social security number", "SSN", "tax id"],
}
_OPEN = ["Hi,", "Hello team,", "Good morning.", "", "Urgent:", "Quick question -", "Dear support,"]
_MIDDLE = [
    "I was charged twice for my card",
    "my refund has not arrived yet",
    "I cannot log in to online banking",
    "the app shows an error when I pay",
    "please update my contact details",
    "I want to dispute a transaction",
    "my parcel never arrived",
    "the transfer failed again",
]
_DIST_LABEL = ["regarding order", "on", "for", "invoice", "amount", "reference", "at"]
_CLOSE = ["Thanks.", "Thank you!", "Regards, a customer.", "", "Please help.", "Cheers"]


def _record(r: random.Random, idx: int) -> dict[str, object]:
    pieces: list[tuple[str, str | None]] = []  # (text, entity or None)
    opener = r.choice(_OPEN)
    if opener:
        pieces.append((opener + " ", None))
    pieces.append((r.choice(_MIDDLE), None))
    slots: list[tuple[str, str | None]] = []
    n_pii = 0 if r.random() < 0.1 else r.randint(1, 3)
    for _ in range(n_pii):
        ent = r.choice(ENTITIES)
        slots.append((r.choice(_LABEL[ent]), ent))
    for _ in range(r.randint(0, 2)):
        slots.append((r.choice(_DIST_LABEL), None))
    r.shuffle(slots)
    distractors: list[str] = []
    for label, ent in slots:
        pieces.append((r.choice([", ", "; ", ". ", " - "]) + label + " ", None))
        if ent is None:
            value = _distractor(r)
            distractors.append(value)
            pieces.append((value, None))
        else:
            pieces.append((_GEN[ent](r), ent))
    pieces.append((r.choice([".", "!", "", " ?"]), None))
    close = r.choice(_CLOSE)
    if close:
        pieces.append((" " + close, None))
    text, spans = "", []
    for chunk, ent in pieces:
        if ent is not None:
            spans.append(
                {"start": len(text), "end": len(text) + len(chunk), "entity": ent, "value": chunk}
            )
        text += chunk
    return {"id": idx, "text": text, "spans": spans, "distractors": distractors}


def generate(n: int, seed: int = 7) -> list[dict[str, object]]:
    """`n` labelled records, identical for the same seed."""
    r = random.Random(seed)
    return [_record(r, i) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "pii_set.jsonl"
    )
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for rec in generate(args.n, args.seed):
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {args.n} records to {args.out}")


if __name__ == "__main__":
    main()
