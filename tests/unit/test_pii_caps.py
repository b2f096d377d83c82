"""Text written all in capitals, street suffixes and tagged addresses beside phones (issue 14).

- a known name that is also an English dictionary word and comes from another locale's list
  (`JOKE`, `CAR`, `MALE`) is no name by itself in shouted text; one after a determiner, number
  or possessive (`A DOCTOR`, `HOW MANY MILES`, `DELTA'S CARRY`) is none either; an unknown
  acronym of three letters (`PTO`) is none; names people writing English give stay;
- a shouted street match needs a street, not `2 AND 3` or `PLACE TO STAY IN PHOENIX`; a
  shouted English street (`90 WHITCHURCH ROAD`) and military box (`PSC 0413, BOX 8144`) are
  found;
- the tagger's address keeps the street suffix the model left out (`27 moss lane`);
- a tagged address that overlaps a phone number is merged with it, not dropped;
- the span check of `pii_cost.py` holds no sentence of the public test split.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from aivos.shared.residency import default_masker
from aivos.shared.residency.addresses import AddressRecognizer, _caseless_street
from aivos.shared.residency.names import build_english_names, english_names
from aivos.shared.residency.spans import Span, find_all
from aivos.shared.residency.tagger import _plausible, load_model

ROOT = Path(__file__).resolve().parents[2]


def _upper_name(words: list[str], before: str = "", before2: str = "", before3: str = "") -> bool:
    lexicon = load_model().lexicon
    return _plausible("PERSON", words, lexicon, False, False, True, before, words, before2, before3)


@pytest.mark.parametrize(
    ("words", "before"),
    [
        (["JOKE"], "A"),
        (["JOKE"], "ME"),
        (["JOKE"], "LIKE"),  # a dictionary word and another locale's name: alone, no name
        (["CAR"], "NEW"),
        (["MALE"], "A"),
        (["DELTA"], "FLY"),
        (["PTO"], "REQUEST"),
        (["GPS"], "MY"),
        (["A", "DOCTOR"], "SEE"),
        (["A", "GOOD"], "FIND"),
        (["MILES"], "MANY"),
        (["MILES"], "5"),
        (["ROCK"], "MY"),
    ],
)
def test_shouted_common_words_are_no_names(words: list[str], before: str) -> None:
    assert not _upper_name(words, before)


def test_a_word_after_a_possessive_is_no_name_but_one_after_a_contraction_is() -> None:
    assert not _upper_name(["CARRY"], "S", "'", "DELTA")
    assert _upper_name(["MATEJ"], "S", "'", "HERE")


@pytest.mark.parametrize(
    ("words", "before"),
    [
        (["JOHN"], "CALL"),
        (["MARY"], "TEXT"),  # an English name, though `mary` is in web2
        (["FRANK"], "WITH"),
        (["TOMOMI"], "CALL"),  # no dictionary word
        (["TOM", "HANKS"], "LIKE"),  # two name words side by side
        (["JOHN"], "THAT"),  # `that` is also a conjunction: `IT MAY BE THAT JOHN WAS`
        (["GLADYS"], "SAID"),  # right after a verb of speaking to someone
        (["TOM"], "CALL"),
    ],
)
def test_shouted_names_stay(words: list[str], before: str) -> None:
    assert _upper_name(words, before)


def test_mixed_case_text_is_read_as_before() -> None:
    lexicon = load_model().lexicon
    assert _plausible("PERSON", ["Joke"], lexicon, False, False, False, "a", ["a", "Joke"])


@pytest.mark.parametrize(
    "text",
    [
        "TELL ME A JOKE",
        "I NEED TO REQUEST PTO FOR MARCH 2 AND 3",
        "HOW MANY MILES ARE ON MY CAR",
        "DO I HAVE ANY MEETINGS TODAY BETWEEN 2 AND 3",
        "WHAT IS 1100 MINUS 2347",
        "WHERE'S THE BEST PLACE TO HIKE IN THE ROCKIES",
        "I NEED A HOTEL ROOM FOR 4 PEOPLE FROM MAY 3 TO MAY 5 IN BOSTON",
        "CAN YOU CONFIRM THAT I HAVE A RESERVATION FOR 2/20 AT 6:00 PM",
    ],
)
def test_shouted_text_without_pii_is_left_alone(text: str) -> None:
    assert default_masker().mask(text).text == text


@pytest.mark.parametrize(
    ("text", "street"),
    [
        ("I LIVE AT 90 WHITCHURCH ROAD", "90 WHITCHURCH ROAD"),
        ("SEND IT TO 1668 GLYN ST", "1668 GLYN ST"),
        ("PSC 0413, BOX 8144", "PSC 0413, BOX 8144"),
        ("6750 KOSKIKATU 25, HELSINKI", "6750 KOSKIKATU 25, HELSINKI"),
        ("SHE LIVES ON RUA MINA 50", "RUA MINA 50"),
        ("76 BOULEVARD DE NORMANDIE AND 3 OAK LANE", "76 BOULEVARD DE NORMANDIE"),
    ],
)
def test_shouted_streets_are_found(text: str, street: str) -> None:
    found = [text[s.start : s.end] for s in AddressRecognizer().find(text)]
    assert street in found


@pytest.mark.parametrize(
    ("match", "kept"),
    [
        ("2 AND 3", ""),
        ("300 DIVIDED BY 42", ""),
        ("47 TIMES 83", ""),
        ("PLACE AN ORDER FOR MY LIST", ""),
        ("5850 JANA NERUDY 894", "5850 JANA NERUDY 894"),
        ("3911 FOURTH AVENUE", "3911 FOURTH AVENUE"),
        ("12 RUE DE LA PAIX IN PARIS", "12 RUE DE LA PAIX "),
        ("SUITE 680 KISSOUSA", "SUITE 680 KISSOUSA"),
        ("UNIT 4719 BOX 7394 DPO AP 70942 IN CASE OF", "UNIT 4719 BOX 7394 DPO AP 70942 "),
        ("12 MAIN STREET, INDIANAPOLIS, IN 46201", "12 MAIN STREET, INDIANAPOLIS, IN 46201"),
    ],
)
def test_a_shouted_street_match_is_cut_or_dropped(match: str, kept: str) -> None:
    assert match[: _caseless_street(match, 0, len(match))] == kept


@pytest.mark.parametrize(
    "text",
    [
        "can you get uber for two people going to 27 moss lane",
        "deliver it to 27 moss lane please",
    ],
)
def test_the_taggers_address_keeps_its_street_suffix(text: str) -> None:
    masked = default_masker().mask(text).text
    assert "moss" not in masked and "lane" not in masked


class _Fixed:
    def __init__(self, entity: str, spans: list[Span], weak: bool = False) -> None:
        self.entity, self.spans, self.weak = entity, spans, weak

    def find(self, text: str) -> list[Span]:
        return self.spans


def test_a_tagged_address_over_a_phone_number_masks_both() -> None:
    text = "the restaurant is at 17151 2450 crown st"
    phone = _Fixed("PHONE", [Span(21, 31, "PHONE")])
    tagged = _Fixed("PERSON", [Span(21, 40, "ADDRESS")], weak=True)
    assert find_all(text, [phone, tagged]) == [Span(21, 40, "ADDRESS")]
    # the longer names the merged span
    short = _Fixed("PERSON", [Span(27, 35, "ADDRESS")], weak=True)
    assert find_all(text, [phone, short]) == [Span(21, 35, "PHONE")]


def test_a_tagged_address_over_a_validated_value_is_still_dropped() -> None:
    text = "IBAN PL14 1090 1014 0000 0712 1981 2874 Street"
    iban = _Fixed("IBAN", [Span(5, 39, "IBAN")])
    tagged = _Fixed("PERSON", [Span(30, 46, "ADDRESS")], weak=True)
    assert find_all(text, [iban, tagged]) == [Span(5, 39, "IBAN")]


def test_the_masker_keeps_a_street_beside_a_number_read_as_a_phone() -> None:
    masked = default_masker().mask("The restaurant is at 9816 214 Pavlou Drandaki").text
    assert "Pavlou" not in masked and "9816" not in masked


def test_english_names_file_is_fakers_english_locales() -> None:
    pytest.importorskip("faker")
    data = ROOT / "shared/residency/data/english_names.txt.gz"
    assert build_english_names() == data.read_bytes()
    assert {"Mary", "Frank", "Reed"} <= english_names()
    assert not {"Joke", "Car", "Male"} & english_names()


def test_cost_span_check_holds_no_public_test_sentence() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pii_cost

    path = ROOT / "benchmarks/data/presidio_synth_dataset_v2.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    dev = {r["text"] for r in rows if r["template_id"] % 2 == 0}
    test_only = {r["text"] for r in rows if r["template_id"] % 2 == 1} - dev
    texts = set(pii_cost.corpus())
    assert dev <= texts
    assert not test_only & texts
    assert not {t.upper() for t in test_only} & texts


def test_upper_case_gate_admits_a_suffixed_street_only() -> None:
    from aivos.shared.residency.addresses import _digit_starts
    from aivos.shared.residency.scan import Scan

    scan = Scan("SEE 7 DAYS. IF IT IS 3 TIMES A DAY, OR 90 WHITCHURCH ROAD")
    assert [scan.text[p : p + 4] for p in _digit_starts(scan)] == ["90 W"]
    found = AddressRecognizer().find_scanned(scan)
    assert [scan.text[s.start : s.end] for s in found] == ["90 WHITCHURCH ROAD"]
    assert found == AddressRecognizer().find(scan.text)
