"""A tiny Prometheus registry (counters, gauges, histograms) rendered in the text format.

Small on purpose: the agent needs a handful of series, label sets are few and fixed,
and the hot path must stay a dict lookup and an add.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["Registry", "Counter", "Gauge", "Histogram", "LATENCY_BUCKETS_S"]

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
Labels = tuple[tuple[str, str], ...]


def _key(labels: dict[str, str]) -> Labels:
    """The series key of a label set (sorted by name; no sort for none or one)."""
    if len(labels) < 2:
        return tuple(labels.items())
    return tuple(sorted(labels.items()))


def _fmt_labels(labels: Labels, extra: Iterable[tuple[str, str]] = ()) -> str:
    items = list(labels) + list(extra)
    if not items:
        return ""
    body = ",".join(f'{k}="{v}"' for k, v in items)
    return "{" + body + "}"


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._lock = threading.Lock()

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} {self.kind}",
        ] + self._samples()

    def _samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = _key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(_key(labels), 0.0)

    def _samples(self) -> list[str]:
        return [f"{self.name}{_fmt_labels(k)} {v}" for k, v in sorted(self._values.items())]


class Gauge(_Metric):
    """A gauge whose value is read at scrape time from a callback, or set directly."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text)
        self._read = read
        self._values: dict[Labels, float] = {}

    def set(self, value: float, **labels: str) -> None:
        self._values[_key(labels)] = value

    def _samples(self) -> list[str]:
        if self._read is not None:
            try:
                return [f"{self.name} {float(self._read())}"]
            except Exception:
                return []
        return [f"{self.name}{_fmt_labels(k)} {v}" for k, v in sorted(self._values.items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    ) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[Labels, list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, value: float, **labels: str) -> None:
        key = _key(labels)
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0.0] * (len(self.buckets) + 2)
            series[index] += 1
            series[-1] += value

    def _samples(self) -> list[str]:
        lines = []
        for key, series in sorted(self._series.items()):
            cumulative = 0.0
            for bound, count in zip(self.buckets, series, strict=False):
                cumulative += count
                lines.append(
                    f"{self.name}_bucket{_fmt_labels(key, [('le', repr(bound))])} {cumulative}"
                )
            total = cumulative + series[len(self.buckets)]
            lines.append(f"{self.name}_bucket{_fmt_labels(key, [('le', '+Inf')])} {total}")
            lines.append(f"{self.name}_sum{_fmt_labels(key)} {series[-1]}")
            lines.append(f"{self.name}_count{_fmt_labels(key)} {total}")
        return lines


_M = TypeVar("_M", bound=_Metric)


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def counter(self, name: str, help_text: str) -> Counter:
        return self._add(Counter(name, help_text))

    def gauge(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> Gauge:
        return self._add(Gauge(name, help_text, read))

    def histogram(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    ) -> Histogram:
        return self._add(Histogram(name, help_text, buckets))

    def _add(self, metric: _M) -> _M:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
