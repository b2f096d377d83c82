"""A bounded LRU cache of model results for repeated queries.

What is cached is what one batch-worker trip produces for a text (the intent prediction and
the passages retrieved with its embedding), so a repeated question skips the ONNX call and
the index search; routing, the answer and the audit row are still made per request.

* Key: the normalised text (NFKC, case-folded, runs of whitespace collapsed: the intent
  model's tokenizer is uncased and ignores spacing) and the bundle version that produced it.
* Scope: everything a cached result depends on besides its key (the bundle version, the
  knowledge index's saved state, the feedback generation). `check_scope` drops every entry
  when the scope changes: a model swap, a document added or removed, a new feedback vote.
* Bounded: at most `max_entries` entries, the least recently used evicted first; texts
  longer than `max_text_chars` are not cached.
* Counted: `aivos_edge_cache_{hits,misses,evictions,invalidations}_total` and the
  `aivos_edge_cache_entries` gauge; `hit_rate` for reports.

The cache lives on the event loop (no locks): `get` and `put` are dict operations.
"""

from __future__ import annotations

import os
import unicodedata
from collections import OrderedDict
from pathlib import Path
from typing import Generic, TypeVar

from aivos.shared.metrics import Registry

__all__ = ["ResultCache", "normalise", "file_stamp"]

T = TypeVar("T")
_Key = tuple[str, str]


def normalise(text: str) -> str:
    """The cache's notion of "the same question"."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of a file, None when it does not exist: a cheap "has it changed"."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class ResultCache(Generic[T]):
    def __init__(
        self, max_entries: int, *, max_text_chars: int = 512, registry: Registry | None = None
    ) -> None:
        self.max_entries = max_entries
        self.max_text_chars = max_text_chars
        self._entries: OrderedDict[_Key, T] = OrderedDict()
        self._scope: object = None
        self.hits = self.misses = self.evictions = self.invalidations = 0
        self._counters = None
        if registry is not None:
            self._counters = (
                registry.counter("aivos_edge_cache_hits_total", "Result cache hits."),
                registry.counter("aivos_edge_cache_misses_total", "Result cache misses."),
                registry.counter(
                    "aivos_edge_cache_evictions_total", "Entries evicted by the LRU bound."
                ),
                registry.counter(
                    "aivos_edge_cache_invalidations_total",
                    "Times the whole cache was dropped (model swap, knowledge or feedback change).",
                ),
            )
            registry.gauge(
                "aivos_edge_cache_entries", "Entries in the result cache.", read=self.__len__
            )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0

    def key(self, text: str, version: str) -> _Key | None:
        """The key for `text` under bundle `version`; None when the text is not cached."""
        if not self.enabled or len(text) > self.max_text_chars:
            return None
        return (normalise(text), version)

    def check_scope(self, scope: object) -> None:
        """Drop everything when what cached results depend on has changed."""
        if scope != self._scope:
            if self._entries:
                self.invalidations += 1
                if self._counters:
                    self._counters[3].inc()
            self._entries.clear()
            self._scope = scope

    def get(self, key: _Key) -> T | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            if self._counters:
                self._counters[1].inc()
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        if self._counters:
            self._counters[0].inc()
        return value

    def put(self, key: _Key, value: T) -> None:
        if not self.enabled:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1
            if self._counters:
                self._counters[2].inc()

    def clear(self) -> None:
        self._entries.clear()
