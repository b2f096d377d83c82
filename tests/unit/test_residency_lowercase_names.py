"""Names in text without case (chat and assistant queries in lower case, SMS in capitals):
what makes a word a name there.

Case says nothing in such text, so the tagger's PERSON runs need other evidence: a word that
is a known first or last name, or a word in no dictionary (`tomomi`); a common English word
(`wanna`, `laptop`) is none. A lone name right after a place word (`to`, `from`, `at`) is
mostly a place (`a bus to dallas`), unless the text speaks of reaching a person (`send my
location to steve`). Issue 14: text without PII changed by masking, measured on CLINC150 by
`benchmarks/pii_free_text.py`.
"""

from __future__ import annotations

import pytest

from aivos.shared.residency import default_masker
from aivos.shared.residency.names import common_words, gazetteer


@pytest.fixture(scope="module")
def mask():
    masker = default_masker()
    return lambda text: masker.mask(text)


@pytest.mark.parametrize(
    "text",
    [
        "i wanna find a hotel with good reviews in phoenix",
        "what is the best reviewed laptop available on the market",
        "how can i take a bus to dallas",
        "will traffic be light on the way to orlando",
        "book a flight from houston to atlanta for tomorrow",
        "alert the bank that i am traveling to kenya next week",
        "what's the total pto i've used",
        "is my flight, dl123 on time",
        "is the polar vortex of 2019 apart of global warming",
    ],
)
def test_lower_case_text_without_a_name_is_left_alone(mask, text):
    result = mask(text)
    assert result.text == text
    assert result.counts == {}


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("call john", "john"),
        ("share my location with jessica", "jessica"),
        ("can you confirm my reservation for kevin at red robin", "kevin"),
        ("send my current location to steve, please", "steve"),
        ("i want to talk to sarah", "sarah"),
        ("please make a phone call to christopher", "christopher"),
        ("have you heard tomomi arata speak yet", "tomomi arata"),
    ],
)
def test_lower_case_names_are_still_masked(mask, text, name):
    result = mask(text)
    assert name not in result.text
    assert result.mapping.value("<PERSON_1>") == name


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("HOW CAN I TAKE A BUS TO DALLAS", True),
        ("WHAT IS THE BEST REVIEWED LAPTOP", True),
        ("SEND MY LOCATION TO STEVE", False),
        ("CALL JOHN", False),
    ],
)
def test_text_all_in_capitals_follows_the_same_rules(mask, text, kept):
    result = mask(text)
    assert (result.text == text) is kept
    assert result.counts == ({} if kept else {"PERSON": 1})


def test_a_contraction_after_a_name_is_not_part_of_it(mask):
    result = mask("tell jim i'm coming home soon")
    assert result.text == "tell <PERSON_1> i'm coming home soon"
    assert result.mapping.value("<PERSON_1>") == "jim"


def test_capitalised_names_do_not_need_the_lower_case_evidence(mask):
    result = mask("Send the file to Dallas Reed before Friday")
    assert "Dallas Reed" not in result.text
    assert result.counts.get("PERSON") == 1


def test_common_words_are_english_words_that_are_no_names():
    words = common_words()
    assert {"wanna", "laptop", "steakhouse"} <= words
    assert not {"john", "dallas", "sarah"} & words  # names of the gazetteer stay out
    first, _last = gazetteer()
    assert {"Dallas", "Sarah"} <= first
