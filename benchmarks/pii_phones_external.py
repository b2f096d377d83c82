"""Phone recall and phone false positives of the masker on PUBLIC labelled PII sets that are
not presidio-research's (`pii_public.py`) and that nobody here wrote.

Sets (vendored, reduced to text + character spans; `--prepare` rebuilds them from a checkout):

- `pl_pii_bench_v1.jsonl.gz`: pl-pii-bench v1.0.0 (github.com/pl-pii-bench/pl-pii-bench, commit
  ddd2a81, `corpus/` as of 967217d, CC BY 4.0, Copyright 2026 Anonimator; "pl-pii-bench, version 1.0.0,
  Anonimator, CC BY 4.0"; changed: reduced to doc_id, lane, text and the spans' start, end and
  label). Polish administrative documents: 30 labelled phones (`+48 510 070 890`,
  `510-070-889`, `510070895` after "numer telefonu kontaktowego"), ~4,200 other labelled
  values (names, organisations, PESEL, NIP, REGON, IBAN, ID cards, plates, ...) and 14
  hard-negative documents (invoice, order, part and room numbers, dates, serials) that must
  not turn into phones.
  Lanes: core, identifiers, address, negative, pdf (text of PDFs), robustness (OCR confusions,
  inter-digit dots and spaces, line breaks inside values, missing whitespace).
- `contextual_anonymizer_aligned.jsonl.gz`: `data/synthetic_data.json` of
  github.com/kurkowski93/contextual-anonymizer (commit b643d50, the file as of f14e2b0,
  sha256 e1c8d860...07c8, MIT License, Copyright (c) 2025
  Kurkowski93): 4,321 English texts (bank statements, medical notes, chats, e-mails, tickets)
  written by GPT-4o-mini, each with an anonymised copy (`[PHONE_1]`, `[ACCOUNT_2]`, ...). The
  spans are recovered by aligning the two (the literal text between placeholders must match
  exactly; texts that do not align, 344, are dropped), labels kept as the set names them.
- DAB, the Danish Anonymization Benchmark (github.com/alekswael/DAB, commit 309b614,
  `data/DAB_annotated_dataset.json`, sha256 495b3ba1...2a27, MIT License, Copyright (c) 2025
  alekswael): 54 Danish documents (horse-forum posts, news, parliament, Wikipedia
  biographies, patent office letters, e-mails) annotated by hand as direct (`DIREKTE`) and
  quasi identifiers, with no phone label: scored are the number-only direct identifiers
  (phones, CPR, passport and account numbers), masked as anything. NOT vendored: its forum
  posts may hold real people's contact details; pass `--dab PATH` to score it.

Scope: a gold phone is in scope when it has 7–15 digits, no line break and no placeholder
left in it (the anonymiser set also labels `1234`, `987654`, `72` and unreplaced
`[PHONE_4]` as phones); the others are counted apart, not scored.

Measures (as `pii_public.py`):
- recall: an in-scope phone counts as masked when every character of it lies inside a masked
  span of any type (a number masked as an account has not left the site); `as_phone` counts
  those covered by PHONE spans alone;
- phone false positives: PHONE spans overlapping no gold phone, split into those on another
  labelled value (a PESEL masked as a phone: wrong type, no leak) and those on nothing
  labelled (over-masking: a document number, a date, an amount made unreadable).

    python benchmarks/pii_phones_external.py            # -> results/pii_phones_external.json
    python benchmarks/pii_phones_external.py --errors 40
    python benchmarks/pii_phones_external.py --baseline HEAD --dab PATH/DAB_annotated_dataset.json
    python benchmarks/pii_phones_external.py --prepare --pl-pii-bench PATH --contextual PATH
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pii_public import baseline_package, masker_parts  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SETS: dict[str, Path] = {
    "pl-pii-bench": DATA / "pl_pii_bench_v1.jsonl.gz",
    "contextual-anonymizer": DATA / "contextual_anonymizer_aligned.jsonl.gz",
}
PHONE_LABELS = {"PHONE"}


def load(name: str) -> list[dict[str, Any]]:
    with gzip.open(SETS[name], "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# a DAB value made of digits and the signs numbers are written with: a phone, a CPR number, a
# passport or an account number (a street address or a date has letters)
_NUMBER_ONLY = re.compile(r"[\d +()./\n-]+")


def load_dab(path: Path) -> list[dict[str, Any]]:
    """DAB's documents with their first annotator's spans; a number-only value marked as a
    direct identifier (`DIREKTE`) becomes `DIRECT_NUMBER`, the values scored."""
    rows = []
    for doc in json.loads(path.read_text(encoding="utf-8")):
        text = doc["data"]["text"]
        done = [a for a in doc["annotations"] if not a["was_cancelled"]]
        spans = []
        for r in done[0]["result"] if done else ():
            v = r.get("value") or {}
            if "start" not in v or not v.get("labels"):
                continue
            label = v["labels"][0]
            value = text[v["start"] : v["end"]]
            if label == "DIREKTE" and _NUMBER_ONLY.fullmatch(value) and _digits(value) >= 6:
                label = "DIRECT_NUMBER"
            spans.append([v["start"], v["end"], label])
        rows.append({"id": doc["id"], "group": doc["data"]["source_dataset"], "text": text,
                     "spans": spans})  # fmt: skip
    return rows


def _digits(value: str) -> int:
    return sum(c.isdigit() for c in value)


def in_scope(value: str) -> bool:
    return 7 <= _digits(value) <= 15 and "\n" not in value and "[" not in value


def evaluate(
    rows: list[dict[str, Any]],
    n_errors: int = 0,
    pkg: Any = None,
    target: frozenset[str] = frozenset(PHONE_LABELS),
) -> dict[str, Any]:
    masker, norm_of, spans_of = masker_parts(pkg)
    st = {"phones": 0, "masked": 0, "as_phone": 0, "out_of_scope": 0}
    fp = {"phone_spans": 0, "on_other_labelled_value": 0, "on_nothing_labelled": 0}
    by_group: dict[str, dict[str, int]] = {}
    errors: list[str] = []
    for r in rows:
        text = r["text"]
        norm = norm_of(text)
        found = [
            (*norm.span(s.start, s.end), s.entity) for s in spans_of(norm.text, masker.recognizers)
        ]
        covered = bytearray(len(text))
        phone_cov = bytearray(len(text))
        for s, e, t in found:
            covered[s:e] = b"\x01" * (e - s)
            if t == "PHONE":
                phone_cov[s:e] = b"\x01" * (e - s)
        g = by_group.setdefault(r["group"], {"phones": 0, "masked": 0, "phone_fp": 0})
        for s, e, label in r["spans"]:
            if label not in target:
                continue
            if not in_scope(text[s:e]):
                st["out_of_scope"] += 1
                continue
            st["phones"] += 1
            g["phones"] += 1
            if all(covered[s:e]):
                st["masked"] += 1
                g["masked"] += 1
                st["as_phone"] += all(phone_cov[s:e])
            elif len(errors) < n_errors:
                errors.append(f"MISS {text[s:e]!r} :: {_context(text, s, e)!r}")
        for s, e, t in found:
            if t != "PHONE":
                continue
            fp["phone_spans"] += 1
            hits = [lab for gs, ge, lab in r["spans"] if gs < e and s < ge]
            if any(lab in target for lab in hits):
                continue
            g["phone_fp"] += 1
            key = "on_other_labelled_value" if hits else "on_nothing_labelled"
            fp[key] += 1
            if len(errors) < n_errors:
                errors.append(
                    f"FP {text[s:e]!r} ({hits or 'unlabelled'}) :: {_context(text, s, e)!r}"
                )
    return {
        "documents": len(rows),
        "recall": {**st, "recall": round(st["masked"] / st["phones"], 3) if st["phones"] else None},
        "phone_false_positives": fp,
        "by_group": by_group,
        "errors": errors,
    }


def _context(text: str, s: int, e: int, width: int = 60) -> str:
    return text[max(0, s - width) : e + width]


# --- building the vendored files from checkouts of the two repositories ---------------------

_PLACEHOLDER = re.compile(r"\[([A-Z_]+?)_(\d+)\]")


def _prepare_pl(root: Path) -> Iterable[dict[str, Any]]:
    for f in sorted((root / "corpus").rglob("*.json")):
        d = json.loads(f.read_text(encoding="utf-8"))
        if "text" not in d or "entities" not in d:
            continue
        yield {
            "id": d.get("doc_id", f.stem),
            "group": f.parent.name,
            "text": d["text"],
            "spans": [[e["start"], e["end"], e["label"]] for e in d["entities"]],
        }


def _align(original: str, anonymised: str) -> list[list[Any]] | None:
    parts, labels, last = [], [], 0
    for p in _PLACEHOLDER.finditer(anonymised):
        parts += [re.escape(anonymised[last : p.start()]), "(.+?)"]
        labels.append(p.group(1))
        last = p.end()
    parts.append(re.escape(anonymised[last:]))
    m = re.fullmatch("".join(parts), original, re.S)
    if m is None:
        return None
    return [[m.start(i + 1), m.end(i + 1), lab] for i, lab in enumerate(labels)]


def _prepare_contextual(path: Path) -> Iterable[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    for i, r in enumerate(data):
        spans = _align(r["context"], r["anonymized_context"])
        if spans is not None:
            yield {"id": i, "group": _doc_type(r), "text": r["context"], "spans": spans}


def _doc_type(r: dict[str, Any]) -> str:
    labels = r.get("used_labels", "")
    return "with phone" if "[PHONE]" in labels else "without phone"


def prepare(pl_root: Path | None, contextual_json: Path | None) -> None:
    for name, rows in (
        ("pl-pii-bench", _prepare_pl(pl_root) if pl_root else None),
        (
            "contextual-anonymizer",
            _prepare_contextual(contextual_json) if contextual_json else None,
        ),
    ):
        if rows is None:
            continue
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
        with SETS[name].open("wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as fh:
            fh.write("".join(lines).encode("utf-8"))  # mtime 0: the same bytes every time
        print(f"wrote {SETS[name]} ({len(lines)} documents)")


def main() -> None:
    ap = argparse.ArgumentParser(description="Phone recall / false positives on external PII sets")
    ap.add_argument("--errors", type=int, default=0, help="print this many misses / false hits")
    ap.add_argument("--set", choices=tuple(SETS), action="append", default=None)
    ap.add_argument("--prepare", action="store_true", help="rebuild the vendored files")
    ap.add_argument("--pl-pii-bench", type=Path, default=None, help="checkout of pl-pii-bench")
    ap.add_argument("--contextual", type=Path, default=None, help="its data/synthetic_data.json")
    ap.add_argument("--dab", type=Path, default=None, help="DAB's data/DAB_annotated_dataset.json")
    ap.add_argument("--baseline", default=None, metavar="GIT_REF", help="also score this ref")
    ap.add_argument(
        "--json-out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "pii_phones_external.json",
    )
    args = ap.parse_args()
    if args.prepare:
        prepare(args.pl_pii_bench, args.contextual)
        return
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "command": "python " + " ".join(sys.argv),
    }
    base = baseline_package(args.baseline, "_pii_phones_ext_base") if args.baseline else None
    for name in args.set or list(SETS):
        if base is not None:
            before = evaluate(load(name), 0, base)
            before.pop("errors")
            result[f"{name} @ {args.baseline}"] = before
            rc, fp = before["recall"], before["phone_false_positives"]
            print(f"== {name} @ {args.baseline}: phone recall {rc['masked']}/{rc['phones']}"
                  f" = {rc['recall']}; PHONE spans on another labelled value"
                  f" {fp['on_other_labelled_value']}, on nothing labelled {fp['on_nothing_labelled']}")  # fmt: skip
        res = evaluate(load(name), args.errors)
        for line in res.pop("errors"):
            print(line)
        result[name] = res
        rc, fp = res["recall"], res["phone_false_positives"]
        print(f"== {name}: {res['documents']} documents")
        print(f"  phone recall {rc['masked']}/{rc['phones']} = {rc['recall']}"
              f" (as PHONE {rc['as_phone']}; out of scope {rc['out_of_scope']})")  # fmt: skip
        print(f"  PHONE spans {fp['phone_spans']}: on another labelled value"
              f" {fp['on_other_labelled_value']}, on nothing labelled {fp['on_nothing_labelled']}")  # fmt: skip
        for g, v in sorted(res["by_group"].items()):
            print(f"    {g:22} phones {v['masked']:4d}/{v['phones']:<4d} phone FP {v['phone_fp']}")
    if args.dab:
        if base is not None:
            before = evaluate(load_dab(args.dab), 0, base, frozenset({"DIRECT_NUMBER"}))
            before.pop("errors")
            result[f"DAB (not vendored) @ {args.baseline}"] = before
            rc, fp = before["recall"], before["phone_false_positives"]
            print(f"== DAB @ {args.baseline}: masked {rc['masked']}/{rc['phones']};"
                  f" PHONE spans on no value {fp['on_nothing_labelled']}")  # fmt: skip
        res = evaluate(load_dab(args.dab), args.errors, target=frozenset({"DIRECT_NUMBER"}))
        for line in res.pop("errors"):
            print(line)
        result["DAB (not vendored)"] = res
        rc, fp = res["recall"], res["phone_false_positives"]
        print(f"== DAB: {res['documents']} documents; number-only direct identifiers masked"
              f" {rc['masked']}/{rc['phones']} = {rc['recall']} (out of scope {rc['out_of_scope']});"
              f" PHONE spans on no value {fp['on_nothing_labelled']},"
              f" on another value {fp['on_other_labelled_value']}")  # fmt: skip
    if not args.set:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
