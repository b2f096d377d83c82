"""`Masker.warm_up` loads what the recognizers would otherwise build on a request's time."""

from __future__ import annotations

from aivos.shared.residency import names, phone_plans
from aivos.shared.residency.masker import default_masker


def test_warm_up_compiles_every_numbering_plan_pattern() -> None:
    phone_plans._re.cache_clear()
    default_masker().warm_up()
    patterns = {
        p
        for formats in phone_plans._index().values()
        for f in formats
        for p in (f.pattern, f.leading)
        if p
    }
    assert len(patterns) > 100  # libphonenumber's formats, not an empty index
    assert phone_plans._re.cache_info().currsize == len(patterns)


def test_warm_up_loads_the_word_and_name_lists() -> None:
    names.common_words.cache_clear()
    names.gazetteer.cache_clear()
    default_masker().warm_up()
    assert names.common_words.cache_info().currsize == 1
    assert names.gazetteer.cache_info().currsize == 1


def test_warm_up_changes_nothing_the_masker_finds() -> None:
    text = "can you text jim on 395 3624 about the laptop"
    cold = default_masker().mask(text).text
    masker = default_masker()
    masker.warm_up()
    assert masker.mask(text).text == cold
