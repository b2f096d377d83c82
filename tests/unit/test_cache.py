"""The edge result cache: normalised keys, LRU bound, scope invalidation, hit-rate metrics."""

from __future__ import annotations

from pathlib import Path

from aivos.edge.cache import ResultCache, file_stamp, normalise
from aivos.shared.metrics import Registry


def test_normalise_folds_case_width_and_spacing() -> None:
    assert normalise("  What are  your\tOPENING hours?\n") == "what are your opening hours?"
    assert normalise("ｃａｒｄ fees") == "card fees"  # NFKC folds full-width letters


def test_same_question_same_key_other_bundle_other_key() -> None:
    cache: ResultCache[str] = ResultCache(8)
    assert cache.key("Card fees?", "v1") == cache.key("card   FEES?", "v1")
    assert cache.key("card fees?", "v1") != cache.key("card fees?", "v2")


def test_long_texts_and_a_zero_size_cache_are_not_cached() -> None:
    assert ResultCache[str](8, max_text_chars=10).key("x" * 11, "v1") is None
    off: ResultCache[str] = ResultCache(0)
    assert off.key("hi", "v1") is None
    assert not off.enabled


def test_least_recently_used_entry_is_evicted() -> None:
    cache: ResultCache[str] = ResultCache(2)
    a, b, c = (cache.key(t, "v") for t in ("a", "b", "c"))
    assert a and b and c
    cache.put(a, "A")
    cache.put(b, "B")
    assert cache.get(a) == "A"  # a is now the most recently used
    cache.put(c, "C")
    assert cache.get(b) is None
    assert (cache.get(a), cache.get(c), len(cache), cache.evictions) == ("A", "C", 2, 1)


def test_a_scope_change_drops_every_entry() -> None:
    cache: ResultCache[str] = ResultCache(4)
    cache.check_scope(("v1", None, 0))
    key = cache.key("card fees", "v1")
    assert key
    cache.put(key, "result")
    cache.check_scope(("v1", None, 0))
    assert cache.get(key) == "result"
    cache.check_scope(("v2", None, 0))  # a model swap
    assert cache.get(key) is None
    assert cache.invalidations == 1


def test_hit_rate_and_metrics() -> None:
    registry = Registry()
    cache: ResultCache[str] = ResultCache(4, registry=registry)
    key = cache.key("q", "v")
    assert key
    assert cache.get(key) is None
    cache.put(key, "r")
    assert cache.get(key) == "r"
    assert cache.get(key) == "r"
    assert (cache.hits, cache.misses) == (2, 1)
    assert abs(cache.hit_rate - 2 / 3) < 1e-9
    text = registry.render()
    assert "aivos_edge_cache_hits_total 2" in text
    assert "aivos_edge_cache_misses_total 1" in text
    assert "aivos_edge_cache_entries 1" in text


def test_file_stamp_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    assert file_stamp(path) is None
    path.write_text("{}")
    first = file_stamp(path)
    path.write_text('{"generation": 2}')
    assert first is not None and file_stamp(path) != first
