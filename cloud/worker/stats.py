"""What a worker tells its pool supervisor: load and latency, published on ``aivos.poolstats``.

A worker serving a catalogue model publishes one `WorkerStats` every interval; the pool
supervisor (`cloud.models.pool`) sums them per model to decide on scaling, and exports the
same numbers as Prometheus gauges so KEDA/HPA can scale on them instead.
"""

from __future__ import annotations

import collections
import math
import time

import msgspec

__all__ = ["WorkerStats", "LatencyWindow", "encode_stats", "decode_stats", "percentile"]


class WorkerStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str
    worker: str
    in_flight: int  # accepted and not finished (running or waiting for a slot)
    waiting: int  # accepted, waiting for a generation slot: the worker's queue depth
    capacity: int  # in-flight places before the worker answers Saturated
    served: int  # counters since the worker started
    rejected: int
    p95_ms: float  # total time of recent requests (NaN encoded as 0 when none yet)
    sent_unix_ms: int = 0
    stopping: bool = False  # draining: no longer counted as capacity


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WorkerStats)


def encode_stats(stats: WorkerStats) -> bytes:
    return _encoder.encode(stats)


def decode_stats(data: bytes) -> WorkerStats:
    return _decoder.decode(data)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 100) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


class LatencyWindow:
    """The last `size` latencies (ms) observed within `max_age_s`."""

    def __init__(self, size: int = 200, max_age_s: float = 60.0) -> None:
        self.max_age_s = max_age_s
        self._items: collections.deque[tuple[float, float]] = collections.deque(maxlen=size)

    def add(self, ms: float, now: float | None = None) -> None:
        self._items.append((time.monotonic() if now is None else now, ms))

    def p(self, q: float, now: float | None = None) -> float:
        cutoff = (time.monotonic() if now is None else now) - self.max_age_s
        return percentile([ms for t, ms in self._items if t >= cutoff], q)
