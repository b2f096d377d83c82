"""Build the PII token tagger shipped as `shared/residency/data/pii_tagger.npz`.

    python -m aivos.cloud.modelbuild.pii_model                # writes the model, prints its sha256
    python -m aivos.cloud.modelbuild.pii_model --holdout      # train on half the dev templates,
                                                              # report recall on the other half

Training data, and nothing else:
- the DEV split of presidio-research synth_dataset_v2 (`template_id % 2 == 0`, MIT; see
  `benchmarks/pii_public.py`); its test split is never read here;
- sentences from `_generate` below: carrier sentences written for this project, filled with
  names from the shipped gazetteer and with addresses assembled from word lists here.

For a third of the generated names, and a third of the dev ones, the gazetteer features are
hidden, so the model also learns names the gazetteer does not hold from their shape, affixes
and context. The model is an averaged perceptron (numpy), deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aivos.shared.residency.names import gazetteer
from aivos.shared.residency.tagger_features import (
    CLASSES,
    N_BUCKETS,
    OFFSETS,
    PAD_END,
    PAD_START,
    Lexicon,
    feature_rows,
    tokenize,
    word_features,
)

__all__ = ["build", "train", "examples", "main"]

_ROOT = Path(__file__).resolve().parents[2]
PRESIDIO = _ROOT / "benchmarks" / "data" / "presidio_synth_dataset_v2.jsonl.gz"
OUT = _ROOT / "shared" / "residency" / "data" / "pii_tagger.npz"
# how far a class's score must exceed "not PII" (chosen with --holdout: 0 / 5 / 20 / 50 gave
# PERSON recall 0.966 / 0.966 / 0.891 / 0.749 with 221 / 176 / 101 / 81 spans on no gold value)
MARGIN = 5.0
_GOLD = {"PERSON": "PERSON", "STREET_ADDRESS": "ADDRESS"}
Example = tuple[str, list[tuple[int, int, str]]]

# --- the generator ----------------------------------------------------------------------

_PERSON_CARRIERS = """
Please transfer the money to {name} before Friday.
I spoke with {name} at the branch yesterday and she confirmed the limit.
{name} called about a blocked card this morning.
Can you check whether {name} has signed the mortgage papers?
The account was opened by {name} in 2019.
Patient {name} was admitted with chest pain.
Referral letter for {name}, please see attached results.
{name} asked us to update the contact details on file.
My husband {name} will come to collect the documents.
We have a joint account with {name}.
Thank you {name} for your patience.
Hello {name}, your appointment is confirmed for Tuesday.
Kind regards,\n{name}
Best wishes\n{name}\nCustomer Service
From: {name}\nSubject: refund
The payee is {name} and the reference is rent.
Add {name} as a second card holder please.
Remove {name} from the list of authorised users.
{name} said the statement was wrong.
According to {name}, the transfer never arrived.
I am writing on behalf of {name}.
Is {name} still the beneficiary of this policy?
The loan was guaranteed by {name}.
Send the invoice to {name} at the head office.
Dr. {name} will see you at 10.
{name} ({age}) lives with her parents.
Mr {name} asked for a new PIN.
Could {name} sign on my behalf?
Notes: {name} prefers to be contacted by post.
{name} and {name2} share the savings account.
The cheque was made out to {name}.
{name} works as a nurse at the clinic.
Please ask {name} to call back.
Why did {name} close the account?
Meeting with {name} moved to Thursday.
{name}: I lost my card.
{name} wrote: the app keeps crashing.
Our advisor {name} will contact you.
Witness: {name}
Signed by {name} on the last page.
The nurse told {name} to rest.
{name}'s card was declined twice.
I think {name}'s account is overdrawn.
It was {name} who reported the fraud.
tell {name} the card is ready
{name} is the new branch manager.
{name} is from the finance team.
{name} had lunch with {name2}.
The song was written by {name} and recorded in Lisbon.
A film directed by {name} and starring {name2}.
Interview with author {name} about her new book.
Player {name} was transferred to another club.
Minister {name} announced new rules for banks.
Congratulations to {name} on the promotion!
Ask {name} or {name2} about the form.
Our founders, {last}, {last2} and {last3}, started the company in a garage.
Can I speak to {first}?
{first}, did you get my message?
See you soon, {first}!
Thanks {first}, that helps.
Hey {first}, the meeting is at noon.
Account holder: {name}
Name: {name}
Full name: {name}\nDate: today
Beneficiary name {name}
"""
_ADDRESS_CARRIERS = """
Please send the new card to {address}.
My new address is {address}.
I moved to {address} last month.
The branch is at {address}.
Deliver the parcel to {address}, thanks.
{address}
Address: {address}
Ship to:\n{address}
We live at {address} since 2015.
The office at {address} is closed on Mondays.
Meet me at {address} after work.
Correspondence address\n{address}
Could you update my billing address to {address}?
She stays at {address} during the week.
The clinic moved from {address} to a new building.
It is on the corner of {street} and {street2}.
{name}\n{address}
{name}\n{company}\n{address}
"""
_CLEAN = """
The interest rate on savings accounts changes on the first of each month.
To block a card, open the app and choose Cards, then Block.
Refunds are sent to the original payment method within five business days.
Our branches are open from Monday to Friday, nine to five.
International transfers in Euro arrive within one business day.
The Premium Account includes travel insurance and airport lounge access.
Please bring a valid ID and a proof of address to open an account.
Mortgage applications are reviewed by the Credit Committee every Tuesday.
For questions about Direct Debits, see the Payments section.
The Emergency Department is open day and night.
Vaccination appointments can be booked online or by phone.
Take the tablets twice a day after meals.
The Annual Report is published in March.
Contactless payments are limited to a fixed amount per transaction.
A new version of the Mobile Banking app is available in the App Store and Google Play.
The Customer Charter explains how we handle complaints.
Your statement shows all Card Transactions of the last month.
Overdraft fees apply when the balance falls below zero.
The Fraud Team will never ask for your PIN.
Dispute a transaction under Payments > Disputes.
Cardiology and Radiology are on the second floor.
Lab results are usually ready after two days.
The Board approved the new Lending Policy.
Open Banking lets you share account data with other providers.
Exchange rates are updated every hour during trading days.
Standing orders can be changed until the day before they are due.
The Help Centre has guides on Savings, Loans and Insurance.
What is the daily withdrawal limit at an ATM?
How do I change my PIN?
Can I pay my bills with a credit card?
Is there a fee for a replacement card?
The Security Code is on the back of the card.
Pension contributions are deducted before tax.
The Clinic will be closed over the Easter holidays.
Please read the Terms and Conditions before signing.
Our Privacy Notice explains which data we keep.
Visa and Mastercard payments are accepted in all stores.
The Interest Calculator shows what a loan would cost.
Monthly Statement available under Documents.
Balance Transfer offers end on the last day of the quarter.
"""
_COMPANIES = (
    "Northwind Traders", "Acme Corporation", "Globex Inc.", "Initech", "Blue Harbor Bank",
    "Riverside Clinic", "Summit Insurance Ltd", "Oakwood Medical Centre", "Helix Labs",
    "Bright Path Consulting", "Stellar Logistics", "Pinecrest Credit Union",
)  # fmt: skip
_CITIES = (
    "Springfield", "Riverton", "Lakewood", "Bergen", "Lyon", "Porto", "Graz", "Utrecht",
    "Tampere", "Gdańsk", "Brno", "Szeged", "Cork", "Leeds", "Aarhus", "Uppsala", "Toledo",
    "Salzburg", "Ghent", "Bologna", "Zaragoza", "Reykjavík", "Tartu", "Ljubljana", "Nicosia",
    "Montevideo", "Calgary", "Adelaide", "Pune", "Curitiba", "MOSS", "LEEDS", "BODØ",
)  # fmt: skip
_REGIONS = ("CA", "NY", "TX", "ON", "QC", "NSW", "Bavaria", "Tuscany", "Ontario", "nan")
_COUNTRIES = (
    "United States", "Canada", "Germany", "France", "Spain", "Italy", "Norway", "Sweden",
    "Finland", "Poland", "Hungary", "Czech Republic", "Portugal", "Iceland", "Estonia",
    "Slovenia", "Belgium", "Netherlands", "Austria", "Uruguay", "Cyprus", "Australia",
)  # fmt: skip
_SUFFIXES = (
    "Street", "St.", "Road", "Rd", "Avenue", "Ave", "Lane", "Drive", "Court", "Way", "Place",
    "Square", "Terrace", "Boulevard", "Crescent", "Close", "Hill", "Park", "Row", "Parkway",
    "Bridge", "Forges", "Coves", "Rapids", "Point", "Flat", "Club", "Isle", "Pass", "Hills",
)  # fmt: skip
_EU_ENDINGS = (
    "straße", "strasse", "weg", "gasse", "vej", "gatan", "vägen", "veien", "vegen", "laan",
    "straat", "katu", "tie", "utca", "gata", "gade", "platz", "allee", "ring",
)  # fmt: skip
_PREFIXES = (
    "rue de la", "rue du", "Avenue des", "Via", "Viale", "Calle", "Avenida", "Rua", "ul.",
    "Piazza", "Carrer de", "Boulevard de", "Chemin des", "Plaza de", "Rúa",
)  # fmt: skip


def _generate(rng: random.Random, n: int) -> Iterator[Example]:
    first, last = (sorted(s) for s in gazetteer())
    persons = [c for c in _PERSON_CARRIERS.strip().split("\n") if c]
    addresses = [c for c in _ADDRESS_CARRIERS.strip().split("\n") if c]
    clean = [c for c in _CLEAN.strip().split("\n") if c]

    def name() -> str:
        r = rng.random()
        f, l_ = rng.choice(first), rng.choice(last)
        if r < 0.55:
            return f"{f} {l_}"
        if r < 0.7:
            return f"{f} {rng.choice('ABCDEFGHJKLMNPRST')}. {l_}"
        if r < 0.8:
            return f"{f} {rng.choice('ABCDEFGHJKLMNPRST')} {l_}"
        if r < 0.88:
            return f"{f} {rng.choice(['van', 'de', 'van der', 'da', 'von'])} {l_}"
        if r < 0.94:
            return f"{f} {l_}-{rng.choice(last)}"
        return rng.choice([f, l_])

    def street() -> str:
        r = rng.random()
        num = str(rng.randint(1, 9999))
        word = rng.choice(last if rng.random() < 0.6 else first)
        if r < 0.4:
            return f"{num} {word} {rng.choice(_SUFFIXES)}"
        if r < 0.65:
            return f"{word}{rng.choice(_EU_ENDINGS)} {num}"
        if r < 0.85:
            return f"{rng.choice(_PREFIXES)} {word} {num}"
        return f"{rng.choice(_SUFFIXES[:5])} {word} {num}"

    def address() -> str:
        parts = [street()]
        if rng.random() < 0.4:
            parts[0] += f" {rng.choice(['Apt.', 'Suite', 'Unit', 'Flat'])} {rng.randint(1, 999)}"
        if rng.random() < 0.3:
            parts.insert(0, str(rng.randint(10, 99999)))
            parts = [" ".join(parts)]
        sep = rng.choice([", ", "\n", " ", "\n "])
        city = rng.choice(_CITIES)
        tail = rng.random()
        if tail < 0.3:
            parts.append(f"{city}, {rng.choice(_REGIONS)} {rng.randint(10000, 99999)}")
        elif tail < 0.55:
            parts += [city, f"{rng.choice(_COUNTRIES)} {rng.randint(1000, 99999)}"]
        elif tail < 0.8:
            parts.append(city)
        return sep.join(parts)

    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            yield _fill(rng.choice(clean), {})
            continue
        carrier = rng.choice(persons if r < 0.65 else addresses)
        values = {
            "name": (name(), "PERSON"),
            "name2": (name(), "PERSON"),
            "first": (rng.choice(first), "PERSON"),
            "last": (rng.choice(last), "PERSON"),
            "last2": (rng.choice(last), "PERSON"),
            "last3": (rng.choice(last), "PERSON"),
            "address": (address(), "ADDRESS"),
            "street": (street(), "ADDRESS"),
            "street2": (f"{rng.choice(first)} {rng.choice(_SUFFIXES)}", "ADDRESS"),
            "company": (rng.choice(_COMPANIES), ""),
            "age": (str(rng.randint(18, 90)), ""),
        }
        text, spans = _fill(carrier, values)
        case = rng.random()
        if case < 0.1:
            text = text.lower()
        elif case < 0.13:
            text = text.upper()
        yield text, spans


def _fill(carrier: str, values: dict[str, tuple[str, str]]) -> Example:
    carrier = carrier.replace("\\n", "\n")
    out, spans, pos = [], [], 0
    for m in re.finditer(r"\{(\w+)\}", carrier):
        out.append(carrier[pos : m.start()])
        value, entity = values[m.group(1)]
        start = sum(len(p) for p in out)
        out.append(value)
        if entity:
            spans.append((start, start + len(value), entity))
        pos = m.end()
    out.append(carrier[pos:])
    return "".join(out), spans


# --- training data ----------------------------------------------------------------------


def _dev_rows(templates: str = "all") -> list[Example]:
    """The presidio dev split (`template_id % 2 == 0`); `templates` = "train" / "holdout"
    takes half of its templates (`% 4 == 0` / `% 4 == 2`) for `--holdout` runs."""
    with gzip.open(PRESIDIO, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    mods = {"all": (0, 2), "train": (0,), "holdout": (2,)}[templates]
    return [
        (r["text"], [(s, e, _GOLD[g]) for s, e, g in r["spans"] if g in _GOLD])
        for r in rows
        if r["template_id"] % 4 in mods
    ]


def examples(rng: random.Random, dev: list[Example], generated: int) -> list[Example]:
    return [*dev, *_generate(rng, generated)]


def _token_labels(text: str, spans: list[tuple[int, int, str]]) -> tuple[list[str], list[int]]:
    words, labels = [], []
    for t in tokenize(text):
        words.append(t.group())
        label = 0
        for s, e, entity in spans:
            if t.start() < e and s < t.end():
                label = CLASSES.index(entity)
        labels.append(label)
    return words, labels


def _featurize(
    rng: random.Random, words: list[str], labels: list[int], lexicon: Lexicon, hide: float
) -> list[np.ndarray]:
    """The feature rows of each token; the gazetteer is hidden for a share `hide` of the
    name tokens (the same choice for that token in every window it is part of)."""
    padded = [PAD_START, PAD_START, *words, PAD_END, PAD_END]
    hidden = [False, False, *[lab == 1 and rng.random() < hide for lab in labels], False, False]
    out = []
    for i in range(len(words)):
        feats: list[str] = ["bias"]
        for k, offset in enumerate(OFFSETS):
            j = i + k
            feats.extend(word_features(padded[j], offset, lexicon, not hidden[j]))
        out.append(np.array(sorted(set(feature_rows(feats))), dtype=np.int64))
    return out


def train(
    data: list[Example], lexicon: Lexicon, epochs: int, seed: int, hide: float = 0.33
) -> np.ndarray:
    """Averaged-perceptron weights `(N_BUCKETS, classes)`; every token has the "bias" row."""
    rng = random.Random(seed)
    tokens: list[tuple[np.ndarray, int]] = []
    for text, spans in data:
        words, labels = _token_labels(text, spans)
        tokens.extend(zip(_featurize(rng, words, labels, lexicon, hide), labels, strict=True))
    n_classes = len(CLASSES)
    w = np.zeros((N_BUCKETS, n_classes), dtype=np.float64)
    acc = np.zeros_like(w)  # sum over steps of each update times its step: for the average
    step = 1
    order = list(range(len(tokens)))
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            rows, gold = tokens[i]
            pred = int(w[rows].sum(axis=0).argmax())
            if pred != gold:
                w[rows, gold] += 1
                w[rows, pred] -= 1
                acc[rows, gold] += step
                acc[rows, pred] -= step
            step += 1
    return w - acc / step


def english_lexicon() -> Lexicon:
    """The lower-case words of `web2` (public domain) from the `english-words` package."""
    from english_words import get_english_words_set

    return Lexicon.of(w for w in get_english_words_set(["web2"], alpha=True) if w.islower())


def build(
    out: Path, epochs: int, generated: int, seed: int, templates: str = "all"
) -> tuple[bytes, str]:
    rng = random.Random(seed)
    lexicon = english_lexicon()
    weights = train(examples(rng, _dev_rows(templates), generated), lexicon, epochs, seed)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        weights=weights.astype(np.float16),
        bias=weights[feature_rows(["bias"])[0]].astype(np.float32),
        margin=np.array([0.0, MARGIN, MARGIN], np.float32),
        lexicon=lexicon.bits,
    )
    data = buf.getvalue()
    out.write_bytes(data)
    return data, hashlib.sha256(data).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--generated", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--holdout", action="store_true")
    args = ap.parse_args()
    templates = "train" if args.holdout else "all"
    data, digest = build(args.out, args.epochs, args.generated, args.seed, templates)
    print(f"wrote {args.out} ({len(data)} bytes) sha256 {digest}")
    if args.holdout:
        _report_holdout(data, digest)


def _report_holdout(data: bytes, digest: str) -> None:
    from aivos.shared.residency.masker import Masker
    from aivos.shared.residency.recognizers import builtin_recognizers
    from aivos.shared.residency.spans import Recognizer, find_all
    from aivos.shared.residency.tagger import TaggerRecognizer, model_from_bytes

    tagger = TaggerRecognizer(model_from_bytes(data, digest))
    runs: dict[str, tuple[list[Recognizer], float]] = {"rules": (builtin_recognizers(), 0.0)}
    for margin in (0.0, 5.0, 20.0, 50.0):
        runs[f"rules+tagger margin {margin}"] = ([*builtin_recognizers(), tagger], margin)
    for name, (recs, margin) in runs.items():
        tagger.model.set_margin(np.array([0.0, margin, margin], np.float32))
        masker = Masker(recs)
        hit: dict[str, list[int]] = {"PERSON": [0, 0], "ADDRESS": [0, 0]}
        false_hits = 0
        for text, spans in _dev_rows("holdout"):
            covered = bytearray(len(text))
            found = find_all(text, masker.recognizers)
            for s in found:
                covered[s.start : s.end] = b"\x01" * (s.end - s.start)
                if s.entity in hit and not any(
                    a < s.end and s.start < b and g == s.entity for a, b, g in spans
                ):
                    false_hits += 1
            for start, end, entity in spans:
                hit[entity][0] += 1
                hit[entity][1] += all(covered[start:end])
        recall = {k: f"{m}/{v} = {m / v:.3f}" for k, (v, m) in hit.items()}
        print(name, recall, f"spans on no gold value of their type: {false_hits}")


if __name__ == "__main__":
    main()
