"""Fill a masker's span cache with the knowledge base's passages before any request needs them.

The first escalation that cites a passage pays for searching it (a prompt plus three cold
passages costs about three times a warm call: `benchmarks/pii_cost.py --span-cache`).
`SpanPrefill` searches the passages ahead of time, in one background thread, so that start-up,
readiness and requests never wait on it:

- a little at a time: after `chunk_s` of searching (1 ms; one passage takes about that) it
  sleeps `pause_s` (5 ms), which hands the GIL to the event loop and the request threads. A
  search holds the GIL throughout, so a request that asks for it meanwhile waits for that
  search, at most `sys.getswitchinterval()` (5 ms), after which Python makes the thread let
  go. Measured (`benchmarks/span_prefill.py`, 375 passages in 3.4 s): the event loop's 1 ms
  timer late by 4.2 ms at p99 during a pre-fill vs 1.6 ms without one, `Escalator.prepare`
  p50 1.0 ms either way; with a 2 ms pause the timer's p99 was 15 ms;
- only into free room (`SpanCache.offer`): it never evicts what requests put in, and a text
  over the cache's limits (`max_text_chars`, or no room left) is skipped and counted, so a
  knowledge base larger than the cache is warmed in the order the texts come, up to the
  cache's bounds;
- keyed exactly as the escalator keys them: the texts must be the passages' own `text`, the
  strings `Escalator.prepare` sends under `passages` (`KnowledgeIndex.passage_texts`).

A new run (the knowledge base changed, a new policy built a new masker) cancels the running
one; texts already in the cache are not searched again, so a re-run after a document was
added costs only its new passages.

    prefill = SpanPrefill()
    prefill.start(gate.masker, index.passage_texts)   # returns at once
    prefill.stats()                                   # PrefillStats(state="running", ...)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Literal

import msgspec

from aivos.shared.residency.masker import Masker

__all__ = ["PrefillStats", "SpanPrefill", "prefill_spans"]

log = logging.getLogger(__name__)

State = Literal["idle", "running", "done", "cancelled", "failed"]

# search this long, then pause this long (see the module's docstring)
CHUNK_S, PAUSE_S = 0.001, 0.005


class PrefillStats(msgspec.Struct, frozen=True):
    """Where the latest pre-fill stands. `warmed`: texts searched and put in the cache;
    `already`: found in it (a request or an earlier run put them there); `skipped`: not
    kept (too long for the cache, or no room left without evicting)."""

    state: State = "idle"
    runs: int = 0
    seen: int = 0
    warmed: int = 0
    already: int = 0
    skipped: int = 0


class _Progress:
    """Counts of one run, written by its thread only, read by `SpanPrefill.stats`."""

    def __init__(self) -> None:
        self.state: State = "running"
        self.seen = self.warmed = self.already = self.skipped = 0


def prefill_spans(
    masker: Masker,
    texts: Iterable[str],
    *,
    cancelled: Callable[[], bool] = lambda: False,
    chunk_s: float = CHUNK_S,
    pause_s: float = PAUSE_S,
    progress: _Progress | None = None,
) -> _Progress:
    """Search each text not yet in `masker`'s span cache and offer what was found to it,
    pausing `pause_s` after every `chunk_s` of work; stops early when `cancelled()`."""
    progress = _Progress() if progress is None else progress
    cache = masker.span_cache
    deadline = time.perf_counter() + chunk_s
    for text in texts:
        if cancelled():
            progress.state = "cancelled"
            return progress
        progress.seen += 1
        if text in cache:
            progress.already += 1
        elif not cache.keeps(text):
            progress.skipped += 1
        elif cache.offer(text, masker.find(text)):
            progress.warmed += 1
        else:  # a request took the last room (or put the text in) meanwhile
            progress.skipped += text not in cache
            progress.already += text in cache
        if time.perf_counter() >= deadline:
            time.sleep(pause_s)  # releases the GIL: requests go first
            deadline = time.perf_counter() + chunk_s
    progress.state = "done"
    return progress


class SpanPrefill:
    """Runs `prefill_spans` in a background thread, one run at a time (see the module)."""

    def __init__(self, *, chunk_s: float = CHUNK_S, pause_s: float = PAUSE_S) -> None:
        self.chunk_s, self.pause_s = chunk_s, pause_s
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []  # the current run's last; cancelled ones
        self._cancel = threading.Event()
        self._progress: _Progress | None = None
        self._runs = 0

    def start(self, masker: Masker, texts: Callable[[], Iterable[str]]) -> None:
        """Cancel the running pre-fill, if any, and pre-fill `masker`'s cache with `texts()`
        (called, and iterated, in the background thread). Returns at once."""
        with self._lock:
            self._cancel.set()  # the old run stops at its next text; it need not be joined
            cancel, progress = threading.Event(), _Progress()
            self._cancel, self._progress = cancel, progress
            self._runs += 1
            thread = threading.Thread(
                target=self._run,
                args=(masker, texts, cancel, progress),
                name="span-prefill",
                daemon=True,  # never holds the process open; `stop` ends it first
            )
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _run(
        self,
        masker: Masker,
        texts: Callable[[], Iterable[str]],
        cancel: threading.Event,
        progress: _Progress,
    ) -> None:
        started = time.perf_counter()
        try:
            prefill_spans(
                masker,
                texts(),
                cancelled=cancel.is_set,
                chunk_s=self.chunk_s,
                pause_s=self.pause_s,
                progress=progress,
            )
        except Exception as exc:  # the source went away (a closed index): requests still work
            progress.state = "cancelled" if cancel.is_set() else "failed"
            if progress.state == "failed":
                log.warning("span cache pre-fill failed after %d texts: %s", progress.seen, exc)
            return
        log.info(
            "span cache pre-fill %s: %d texts searched, %d already cached, %d skipped, %.1f s",
            progress.state,
            progress.warmed,
            progress.already,
            progress.skipped,
            time.perf_counter() - started,
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the current run to end; True when it has."""
        with self._lock:
            threads = self._threads[-1:]
        for thread in threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in threads)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Cancel every run and wait for their threads (before closing what they read)."""
        with self._lock:
            self._cancel.set()
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def stats(self) -> PrefillStats:
        p = self._progress
        if p is None:
            return PrefillStats()
        return PrefillStats(p.state, self._runs, p.seen, p.warmed, p.already, p.skipped)
