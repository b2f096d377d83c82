"""The masker's span cache: masked output is byte-identical with and without it (placeholder
numbering included), it stays within its bounds, a new policy starts from an empty one, only
the keys a caller names are cached (passages, never the prompt or memory), and its counters
move; the pre-fill puts knowledge-base passages in ahead of requests, within its bounds."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest

from aivos.edge.escalation import Escalator
from aivos.edge.uplink.link import Uplink
from aivos.shared.messages import Passage
from aivos.shared.metrics import Registry
from aivos.shared.residency import (
    CustomRecognizer,
    DataClass,
    ExitGate,
    Masker,
    MaskMapping,
    PrefillStats,
    ResidencyPolicy,
    SpanPrefill,
    default_masker,
)
from aivos.shared.residency.masker import SpanCache
from tests.fixtures.pii_corpus import residency_texts

_CLASSES = {"escalation_prompt": "mask", "memory": "mask"}


def _policy(**kw: object) -> ResidencyPolicy:
    return ResidencyPolicy(region="eu-west", classes=_CLASSES, **kw)  # type: ignore[arg-type]


def _corpus() -> list[str]:
    """The texts the residency tests run on (`tests/fixtures/pii_corpus.py`), plus formats
    that need normalising (fullwidth digits, zero-width spaces)."""
    return [
        *residency_texts(),
        "card ４１１１ １１１１ １１１１ １１１１ or 4111\u200b1111\u200b1111\u200b1111, anna@example.org",
    ]


CORPUS = _corpus()


def _requests(seed: int) -> list[tuple[str, list[str], list[str]]]:
    """(prompt, passages, memory) triples: every corpus text is once a passage, next to two
    from a small pool (which repeat, as knowledge-base chunks do); the prompt is often one
    of the request's passages or contains one, so the same values occur in prompt and
    passages."""
    rnd = random.Random(seed)
    pool = rnd.sample(CORPUS, 120)
    out = []
    for i, text in enumerate(CORPUS):
        passages = [text, *rnd.sample(pool, 2)]
        if i % 3 == 0:
            prompt = f"{CORPUS[(i * 7) % len(CORPUS)]} {passages[1]}"
        elif i % 3 == 1:
            prompt = text
        else:
            prompt = CORPUS[(i + 1) % len(CORPUS)]
        memory = [rnd.choice(pool)] if i % 4 == 0 else []
        out.append((prompt, passages, memory))
    return out


def _apply(gate: ExitGate, prompt: str, passages: list[str], memory: list[str], cached: bool):
    mapping = MaskMapping()
    keys = ("passages",) if cached else ()
    d = gate.apply(
        DataClass.ESCALATION_PROMPT,
        {"prompt": prompt, "passages": passages},
        mapping=mapping,
        cache_keys=keys,
    )
    m = gate.apply(DataClass.MEMORY, {"memory": memory}, mapping=mapping, cache_keys=keys)
    restored = [gate.restore(t, mapping) for t in [d.payload["prompt"], *d.payload["passages"]]]
    return d.payload, d.counts, m.payload, m.counts, mapping.entities(), restored


def test_masked_output_with_the_cache_equals_without_it_on_the_corpora() -> None:
    plain = ExitGate(_policy())
    cached = ExitGate(_policy())
    for prompt, passages, memory in _requests(seed=7):
        want = _apply(plain, prompt, passages, memory, cached=False)
        assert want[5] == [prompt, *passages]
        cold = _apply(cached, prompt, passages, memory, cached=True)
        warm = _apply(cached, prompt, passages, memory, cached=True)  # all passages hit
        assert cold == want, (prompt, passages)
        assert warm == want, (prompt, passages)
    stats = cached.masker.span_cache.stats()
    assert stats.entries == len(set(CORPUS))  # the passages; memory is masked, not cached
    assert stats.hits >= 3 * len(CORPUS)  # every request's second pass hit on all 3
    assert plain.masker.span_cache.stats().entries == 0


def test_placeholder_numbers_follow_the_request_not_the_cache() -> None:
    """A cached passage gets the numbers of the request it is masked in: the same e-mail
    found first in the prompt keeps the prompt's number in the passage."""
    gate = ExitGate(_policy())
    passage = "Write to ops@example.org or bob@example.org about card disputes."
    first = gate.apply(
        DataClass.ESCALATION_PROMPT,
        {"prompt": "hello", "passages": [passage]},
        cache_keys=("passages",),
    )
    second = gate.apply(
        DataClass.ESCALATION_PROMPT,
        {"prompt": "my address is bob@example.org", "passages": [passage]},
        cache_keys=("passages",),
    )
    assert first.payload["passages"] == ["Write to <EMAIL_1> or <EMAIL_2> about card disputes."]
    assert second.payload["prompt"] == "my address is <EMAIL_1>"
    assert second.payload["passages"] == ["Write to <EMAIL_2> or <EMAIL_1> about card disputes."]
    assert gate.masker.span_cache.stats().hits == 1


def test_only_named_keys_are_cached() -> None:
    registry = Registry()
    gate = ExitGate(_policy(), registry=registry)
    prompt = "I am Jane Smith, call me on +44 20 7946 0958"
    passages = ["Branch hours: 9-17. Call +44 20 7946 0000.", "Cards: report a loss in the app."]
    for _ in range(3):
        gate.apply(
            DataClass.ESCALATION_PROMPT,
            {"prompt": prompt, "passages": passages},
            cache_keys=("passages",),
        )
    cache = gate.masker.span_cache
    assert prompt not in cache
    assert all(p in cache for p in passages)
    assert len(cache) == 2
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (4, 2)
    text = registry.render()
    assert 'aivos_residency_span_cache_total{result="hit"} 4.0' in text
    assert 'aivos_residency_span_cache_total{result="miss"} 2.0' in text
    assert "aivos_residency_span_cache_entries 2.0" in text


def test_escalator_caches_passages_not_prompt_or_memory() -> None:
    gate = ExitGate(_policy())
    esc = Escalator(Uplink(None, "s1"), gate, max_tokens=16)
    kb = [
        Passage(
            text="Disputes: write to disputes@bank.example within 60 days.", source="a", score=1
        ),
        Passage(text="Fees: none under EUR 5,000; call +49 30 12345678.", source="b", score=0.5),
    ]
    prompt = "Jane Smith here, card 4111 1111 1111 1111, mail disputes@bank.example"
    memory = ["my IBAN is DE89 3704 0044 0532 0130 00"]
    cold = esc.prepare("r1", prompt, kb, memory)
    warm = esc.prepare("r2", prompt, kb, memory)
    assert warm.request.prompt == cold.request.prompt
    assert warm.request.passages == cold.request.passages
    assert warm.request.memory == cold.request.memory
    assert warm.pii_counts == cold.pii_counts
    assert cold.request.passages[0].text == "Disputes: write to <EMAIL_1> within 60 days."
    cache = gate.masker.span_cache
    assert [p.text in cache for p in kb] == [True, True]
    assert prompt not in cache and memory[0] not in cache
    assert (cache.stats().hits, cache.stats().misses) == (2, 2)


def test_a_new_policy_starts_from_an_empty_cache() -> None:
    """A policy change builds a new gate, so a new masker and cache (`Agent.apply_remote_config`
    builds `gate.with_policy(residency)`): custom rules and locale packs never see stale findings."""
    passage = "Ask EMP-123456 (codice fiscale RSSMRA85T10A562S) about it."
    custom = (CustomRecognizer(name="EMPLOYEE_ID", pattern="EMP-[0-9]{6}"),)

    def masked(gate: ExitGate) -> str:
        d = gate.apply(
            DataClass.ESCALATION_PROMPT, {"passages": [passage]}, cache_keys=["passages"]
        )
        return str(d.payload["passages"][0])

    old = ExitGate(_policy(custom=custom, locales=("IT",)))
    assert masked(old) == masked(old)
    assert "<EMPLOYEE_ID_1>" in masked(old) and "RSSMRA85T10A562S" not in masked(old)
    assert old.masker.span_cache.stats().hits == 3

    no_rule = ExitGate(_policy(locales=("IT",)))
    assert "EMP-123456" in masked(no_rule) and "RSSMRA85T10A562S" not in masked(no_rule)
    assert no_rule.masker.span_cache.stats().misses == 1
    other_pack = ExitGate(_policy(custom=custom, locales=("US",)))
    assert "RSSMRA85T10A562S" in masked(other_pack)
    assert other_pack.masker.span_cache.stats().misses == 1
    assert old.masker.span_cache is not no_rule.masker.span_cache


def test_a_gate_for_a_new_policy_keeps_counting_into_the_same_metrics() -> None:
    """`with_policy` (what `Agent.apply_remote_config` uses): a fresh masker and cache, the
    metrics registered once and still moving, the gauge reading the new cache."""
    registry = Registry()
    old = ExitGate(_policy(), registry=registry)
    payload = {"passages": ["Call +44 20 7946 0000."]}
    old.apply(DataClass.ESCALATION_PROMPT, payload, cache_keys=["passages"])
    new = old.with_policy(_policy(locales=("US",)))
    assert new.masker.span_cache is not old.masker.span_cache and len(new.masker.span_cache) == 0
    new.apply(DataClass.ESCALATION_PROMPT, payload, cache_keys=["passages"])
    new.apply(DataClass.ESCALATION_PROMPT, payload, cache_keys=["passages"])
    text = registry.render()
    assert text.count("# TYPE aivos_residency_passed_total") == 1
    assert 'aivos_residency_passed_total{data_class="escalation_prompt",rule="mask"} 3.0' in text
    assert 'aivos_residency_span_cache_total{result="miss"} 2.0' in text
    assert 'aivos_residency_span_cache_total{result="hit"} 1.0' in text
    assert "aivos_residency_span_cache_entries 1.0" in text


def test_recognizers_are_fixed_for_the_cache() -> None:
    masker = default_masker()
    with pytest.raises(AttributeError):
        masker.recognizers = ()  # type: ignore[misc]


def test_bounds_entries_characters_and_text_length() -> None:
    recognizers = default_masker().recognizers
    texts = [f"passage {i}: mail a{i}@example.org" for i in range(6)]  # 30 characters each
    assert {len(t) for t in texts} == {30}

    by_chars = Masker(recognizers, span_cache=SpanCache(max_entries=5, max_chars=100))
    cache = by_chars.span_cache
    for t in texts:
        by_chars.mask(t, cache=True)
    assert [t in cache for t in texts] == [False, False, False, True, True, True]
    by_chars.mask(texts[3], cache=True)  # a hit: now the most recently used
    by_chars.mask("x" * 40, cache=True)  # 3 * 30 + 40 > 100: the least recently used goes
    assert [t in cache for t in texts[3:]] == [True, False, True]
    assert (cache.stats().entries, cache.stats().chars) == (3, 100)

    by_entries = Masker(recognizers, span_cache=SpanCache(max_entries=2))
    for t in texts:
        by_entries.mask(t, cache=True)
    assert [t in by_entries.span_cache for t in texts] == [False] * 4 + [True] * 2
    assert by_entries.span_cache.stats().chars == 60

    short = Masker(recognizers, span_cache=SpanCache(max_text_chars=29))
    assert short.mask(texts[0], cache=True).text == "passage 0: mail <EMAIL_1>"
    assert texts[0] not in short.span_cache  # too long to keep; masked all the same

    off = Masker(recognizers, span_cache=SpanCache(max_entries=0))
    assert off.mask(texts[0], cache=True).text == "passage 0: mail <EMAIL_1>"
    assert len(off.span_cache) == 0


def test_default_bounds_are_finite() -> None:
    stats = default_masker().span_cache.stats()
    assert (stats.max_entries, stats.max_chars, stats.max_text_chars) == (4096, 4_000_000, 16_384)


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_entries=-1"):
        SpanCache(max_entries=-1)


def test_threads_share_one_cache_and_get_the_same_results() -> None:
    masker = default_masker()
    texts = random.Random(3).sample(CORPUS, 40)
    want = [masker.mask(t).text for t in texts]
    got: list[list[str]] = [[] for _ in range(4)]

    def work(i: int) -> None:
        for _ in range(3):
            got[i] = [masker.mask(t, cache=True).text for t in texts]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [want] * 4
    stats = masker.span_cache.stats()
    assert stats.hits + stats.misses == 4 * 3 * len(texts)
    assert stats.entries == len(set(texts))


# -- pre-fill (`shared/residency/prefill.py`) ------------------------------------------------

_KB = [
    "Disputes: write to disputes@bank.example within 60 days.",
    "Fees: none under EUR 5,000; call +49 30 12345678.",
    "Branch manager Jane Smith, 12 High Street, London, answers on Saturdays.",
    "Transfers abroad: IBAN DE89 3704 0044 0532 0130 00 and the BIC of the bank.",
]


def _prefilled(masker: Masker, texts: list[str], **kw: float) -> SpanPrefill:
    prefill = SpanPrefill(**kw)
    prefill.start(masker, lambda: iter(texts))
    assert prefill.wait(timeout=60)
    return prefill


def test_prefill_puts_the_passages_in_and_an_escalation_is_served_from_it() -> None:
    """The escalator's key is the passage's own text: after a pre-fill, an escalation citing
    those passages searches none of them, and sends exactly what a gate without a cache sends."""
    gate = ExitGate(_policy())
    prefill = _prefilled(gate.masker, _KB)
    cache = gate.masker.span_cache
    assert prefill.stats() == PrefillStats("done", runs=1, seen=4, warmed=4)
    assert [t in cache for t in _KB] == [True] * 4
    assert cache.stats().prefilled == 4 and cache.stats().hits == 0

    kb = [Passage(text=t, source=f"kb/{i}", score=1.0) for i, t in enumerate(_KB)]
    prompt = "Jane Smith here, card 4111 1111 1111 1111, mail disputes@bank.example"
    served = Escalator(Uplink(None, "s1"), gate, max_tokens=16).prepare("r1", prompt, kb[1:])
    uncached = ExitGate(_policy(), masker=Masker(gate.masker.recognizers))
    plain = uncached.apply(
        DataClass.ESCALATION_PROMPT, {"prompt": prompt, "passages": [p.text for p in kb[1:]]}
    )
    assert served.request.prompt == plain.payload["prompt"]
    assert [p.text for p in served.request.passages] == plain.payload["passages"]
    assert served.pii_counts == plain.counts
    assert "<IBAN_1>" in served.request.passages[2].text
    assert (cache.stats().hits, cache.stats().misses) == (3, 0)  # all three passages hit


def test_prefill_of_a_new_policys_gate_fills_its_own_cache() -> None:
    """A policy change gives a new masker with an empty cache; pre-filling it (what the agent
    does after `apply_remote_config`) fills that one, with what its recognizers find."""
    custom = (CustomRecognizer(name="EMPLOYEE_ID", pattern="EMP-[0-9]{6}"),)
    passage = "Ask EMP-123456 about it."
    old = ExitGate(_policy())
    _prefilled(old.masker, [passage])
    new = old.with_policy(_policy(custom=custom))
    assert passage not in new.masker.span_cache
    _prefilled(new.masker, [passage])
    assert new.masker.span_cache.get(passage) == ((4, 14, "EMPLOYEE_ID"),)
    assert old.masker.span_cache.get(passage) == ()


def test_prefill_stays_within_the_cache_and_never_evicts() -> None:
    recognizers = default_masker().recognizers
    texts = [f"passage {i}: mail a{i}@example.org" for i in range(6)]  # 30 characters each
    masker = Masker(recognizers, span_cache=SpanCache(max_entries=4, max_text_chars=29 + 30))
    masker.mask("a request's passage, cached first", cache=True)
    too_long = "y" * 60
    prefill = _prefilled(masker, [texts[0], too_long, *texts[1:]])
    stats = prefill.stats()
    assert (stats.seen, stats.warmed, stats.skipped, stats.already) == (7, 3, 4, 0)
    cache = masker.span_cache
    assert "a request's passage, cached first" in cache  # not pushed out
    assert [t in cache for t in texts] == [True, True, True, False, False, False]  # in order
    assert too_long not in cache and cache.stats().prefilled == 3

    again = _prefilled(masker, texts[:3])  # a re-run searches nothing already there
    assert (again.stats().already, again.stats().warmed) == (3, 0)


def test_a_new_prefill_cancels_the_running_one() -> None:
    release = threading.Event()

    def blocked() -> Iterator[str]:
        yield _KB[0]
        release.wait(60)
        yield from _KB[1:]

    masker = default_masker()
    prefill = SpanPrefill()
    prefill.start(masker, blocked)
    prefill.start(masker, lambda: iter(_KB[2:]))
    assert prefill.wait(timeout=60)
    release.set()
    prefill.stop(timeout=60)
    assert prefill.stats() == PrefillStats("done", runs=2, seen=2, warmed=2)
    assert _KB[1] not in masker.span_cache  # the first run stopped before it
