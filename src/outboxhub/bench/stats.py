"""Latency histograms: HdrHistogram (``hdrhistogram`` package) recording microseconds.

Values from 1 µs to 60 s at 3 significant digits: percentiles are exact to 0.1 %, whatever the count;
histograms of several clients merge without losing anything. A recorded value is first appended to a
buffer (8 bytes) and goes into the histogram when it is read, or once ``_BUFFERED`` values wait: the
histogram's pure-Python ``record_value`` costs ≈ 2 µs a value, which a measured pipelined case would pay
per publish on the client's CPU, shared with the hub on small machines (docs/benchmarks.md).
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Final

import msgspec
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

__all__ = ["LatencyHistogram", "LatencySummary"]

_LOWEST_US: Final = 1
_HIGHEST_US: Final = 60_000_000
_SIGNIFICANT_DIGITS: Final = 3
_BUFFERED: Final = 1 << 20
"""Most values waiting in the buffer (8 MiB) before they go into the histogram."""


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    """Percentiles of a latency distribution, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float


class LatencyHistogram:
    """Records latencies (nanoseconds in, so callers use ``time.perf_counter_ns()`` differences)."""

    __slots__ = ("_h", "_ns")

    def __init__(self) -> None:
        self._h = HdrHistogram(_LOWEST_US, _HIGHEST_US, _SIGNIFICANT_DIGITS)
        self._ns = array("q")

    def record_ns(self, ns: int) -> None:
        """Record one latency; values outside 1 µs–60 s are clamped into the range."""
        self._ns.append(ns)
        if len(self._ns) >= _BUFFERED:
            self._fold()

    def _fold(self) -> None:
        h = self._h
        for us, times in Counter([ns // 1000 for ns in self._ns]).items():
            h.record_value(min(max(us, _LOWEST_US), _HIGHEST_US), times)
        self._ns = array("q")

    def merge(self, other: LatencyHistogram) -> None:
        """Add every value of ``other`` to this histogram."""
        self._fold()
        other._fold()
        self._h.add(other._h)

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return int(self._h.get_total_count()) + len(self._ns)

    def summary(self) -> LatencySummary | None:
        """The percentiles, or None when nothing was recorded."""
        self._fold()
        if self.count == 0:
            return None
        h = self._h

        def ms(percentile: float) -> float:
            return float(h.get_value_at_percentile(percentile)) / 1000

        return LatencySummary(
            count=self.count,
            p50_ms=ms(50),
            p90_ms=ms(90),
            p99_ms=ms(99),
            p999_ms=ms(99.9),
            max_ms=float(h.get_max_value()) / 1000,
            mean_ms=float(h.get_mean_value()) / 1000,
        )
