"""Names in text written all in capitals, where case says nothing (issue 14).

A cued word in shouted text is a name only if it could be one (a known first or last name, or
a word in no dictionary); a lone known name that is also a dictionary word (`TRUE`, `LOT`,
`FRIEND`) needs a naming cue (`MY NAME IS`, `CALLED`, `I AM`, `DEAR`), not a greeting or
`THIS IS`. Text with case is read as before.
"""

from __future__ import annotations

import pytest

from aivos.shared.residency.persons import PersonRecognizer


def _found(text: str) -> set[str]:
    return {text[s.start : s.end] for s in PersonRecognizer().find(text)}


@pytest.mark.parametrize(
    "text",
    [
        "YES, THIS IS TRUE",
        "THIS IS A TRUE STATEMENT",
        "THANKS A LOT FOR THE ANSWER",
        "HELLO, FRIEND",
        "HOW IS HELLO SAID IN FRENCH",
        "MY NAME IS GOING TO BE SHERLOCK",
        "WHAT IS MY FIRST NAME SAVED AS",
        "WHAT NAME IS MINE",
    ],
)
def test_shouted_common_words_are_no_names(text: str) -> None:
    assert _found(text) == set()


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("MY NAME IS NICK", "NICK"),
        ("I WANT TO BE CALLED FRANK", "FRANK"),
        ("I AM JOHN", "JOHN"),
        ("YOUR NAME IS ROMAN", "ROMAN"),
        ("DEAR JOHN, SEE YOU", "JOHN"),
        ("I AM KATIE E MILES, FROM LEEDS", "KATIE E MILES"),
        ("MY NAME IS MARY O'BRIEN-KELLY", "MARY O'BRIEN-KELLY"),
    ],
)
def test_shouted_names_after_a_naming_cue_stay(text: str, name: str) -> None:
    assert _found(text) == {name}


def test_a_shouted_cued_name_is_cut_to_its_name_words() -> None:
    text = "AI, MY NAME IS DEB PLEASE USE MY NAME WHEN YOU TALK TO ME"
    assert _found(text) == {"DEB"}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Yes, this is True", {"True"}),  # with case, a capitalised first name is read as one
        ("Hello, Friend", {"Friend"}),
        ("Hi Joe, this is Tom", {"Joe", "Tom"}),
    ],
)
def test_text_with_case_is_read_as_before(text: str, names: set[str]) -> None:
    assert _found(text) == names
