"""The query spelling corrector (edge/intent/spelling.py) and the bundle word list."""

from __future__ import annotations

from pathlib import Path

import pytest

from aivos.edge.intent.spelling import SpellingCorrector, SpellingOptions, english_counts
from aivos.shared.errors import BundleError
from aivos.shared.vocabulary import Vocabulary, count_words, read_vocabulary, write_vocabulary

DOMAIN = {"balance": 40, "transfer": 30, "routing": 12, "apr": 9, "zelle": 5, "account": 50}


@pytest.fixture(scope="module")
def corrector() -> SpellingCorrector:
    return SpellingCorrector(DOMAIN)


def test_known_words_are_never_changed(corrector: SpellingCorrector) -> None:
    text = "What is the routing number and APR of my checking account, please?"
    assert corrector.correct(text) == text


def test_a_keyboard_slip_is_corrected(corrector: SpellingCorrector) -> None:
    assert corrector.correct("what is my acount balanse") == "what is my account balance"
    assert corrector.correct("trasnfer money") == "transfer money"  # two letters swapped


def test_numbers_addresses_and_codes_are_left_whole(corrector: SpellingCorrector) -> None:
    text = "send 1200 to jon.doe@exmaple.com ref ABC12X3 form w-2 at https://bnak.example/pay"
    assert corrector.correct(text) == text


def test_short_words_acronyms_and_inner_capitals_are_left_alone(
    corrector: SpellingCorrector,
) -> None:
    assert corrector.correct("ot ATMM iPhnoe") == "ot ATMM iPhnoe"
    assert corrector.correct("teh") == "the"  # min_length 3 by default
    assert SpellingCorrector(DOMAIN, SpellingOptions(min_length=4)).correct("teh") == "teh"


def test_the_sites_own_words_win_and_are_known() -> None:
    with_domain = SpellingCorrector(DOMAIN)
    without = SpellingCorrector()
    assert with_domain.correct("pay with zelel") == "pay with zelle"
    assert without.correct("pay with zelel") != "pay with zelle"
    # a word only the site knows is not "corrected" towards English
    assert with_domain.correct("zelle") == "zelle"


def test_punctuation_case_and_the_rest_of_the_text_survive(corrector: SpellingCorrector) -> None:
    # the fix changes lengths: nothing downstream may depend on character offsets
    out = corrector.correct('Balanse? "acount", (trasnfer)!  done')
    assert out == 'Balance? "account", (transfer)!  done'


def test_no_candidate_within_reach_leaves_the_word(corrector: SpellingCorrector) -> None:
    assert corrector.correct("xqzvtk") == "xqzvtk"


def test_contractions_without_apostrophe_are_words(corrector: SpellingCorrector) -> None:
    assert corrector.correct("i dont know why it wouldnt work") == (
        "i dont know why it wouldnt work"
    )


def test_pruned_targets_are_counted() -> None:
    small = SpellingCorrector(DOMAIN, SpellingOptions(english_targets=100))
    assert small.n_targets <= 100 + len(DOMAIN)
    assert small.correct("balanse") == "balance"


def test_english_list_is_ranked_by_frequency() -> None:
    counts = list(english_counts().items())
    assert len(counts) > 80_000
    assert counts[0][1] >= counts[100][1] >= counts[10_000][1]


def test_word_list_round_trip(tmp_path: Path) -> None:
    vocabulary = count_words(["Check my balance", "balance of card 1234", "card-balance"])
    assert vocabulary.words == {"balance": 3, "card": 2, "check": 1, "my": 1, "of": 1}
    assert vocabulary.pairs["card balance"] == 1 and vocabulary.pairs["my balance"] == 1
    path = write_vocabulary(tmp_path / "words.txt", vocabulary)
    assert path.read_text().splitlines()[0] == "balance\t3"
    assert read_vocabulary(path) == vocabulary


def test_neighbours_choose_between_equally_near_candidates() -> None:
    # "rewad" is one edit from both "read" (more frequent) and "reward"
    words = {"read": 90, "reward": 20, "points": 30, "my": 50, "book": 10}
    pairs = {"reward points": 15, "read my": 3, "my book": 2}
    with_pairs = SpellingCorrector(Vocabulary(words, pairs))
    assert with_pairs.correct("redeem rewad points") == "redeem reward points"
    assert with_pairs.correct("please rewad my book") == "please read my book"
    assert SpellingCorrector(words).correct("redeem rewad points") == "redeem read points"


def test_malformed_word_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("balance\t3\nnot a line\n")
    with pytest.raises(BundleError, match="line 2"):
        read_vocabulary(path)


def test_inflections_of_known_words_are_words_not_slips() -> None:
    # "moons" was corrected to "moon" (the English list holds the base form only), which
    # turned an out-of-scope query into an in-scope intent in the edge API test
    corrector = SpellingCorrector({"moon": 3, "book": 5, "cancel": 4, "city": 2})
    text = "how many moons, bookings, cities; i cancelled the moon's booked ones"
    assert corrector.correct(text) == text
    assert corrector.correct("moonz") == "moon"  # a slip is still a slip
