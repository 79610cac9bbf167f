"""Latency histograms: log-linear buckets, exact merging, percentiles, the latency summary.

Latency goes into buckets, `BUCKETS_PER_OCTAVE` per power of two, so any percentile is within
~1.1% of the exact value, memory is bounded, and histograms merge by adding bucket counts:
several processes aggregate exactly. `latency_summary` is the one place that turns a histogram
into the numbers people read (min, mean, p50, p95, p99, max): the dashboard and
``srpc metrics --json`` both show it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import mul
from typing import Any

#: Histogram resolution: buckets per power of two. Each bucket spans a factor 2**(1/32) (2.2%),
#: and the geometric middle of a bucket is within 1.09% of any value in it.
BUCKETS_PER_OCTAVE = 32
#: Bucket 0 starts at 2**-30 s (about 1 ns); smaller values are counted in bucket 0.
_LOWEST_OCTAVE = -30
#: The last bucket ends at 2**12 s (68 minutes); larger values are counted in it.
_HIGHEST_OCTAVE = 12
_INDEX_OFFSET = -_LOWEST_OCTAVE * BUCKETS_PER_OCTAVE
MAX_BUCKET = (_HIGHEST_OCTAVE - _LOWEST_OCTAVE) * BUCKETS_PER_OCTAVE - 1
_MIN_SECONDS = 2.0**_LOWEST_OCTAVE
_MAX_SECONDS = 2.0**_HIGHEST_OCTAVE

#: The latency summary's numbers, in the order they are shown.
LATENCY_FIELDS = ("min", "mean", "p50", "p95", "p99", "max")
#: The percentiles of the summary, as fractions.
_SUMMARY_PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def bucket_of(seconds: float) -> int:
    """The histogram bucket counting a duration of `seconds`."""
    clamped = min(max(seconds, _MIN_SECONDS), _MAX_SECONDS)
    return min(math.floor(math.log2(clamped) * BUCKETS_PER_OCTAVE) + _INDEX_OFFSET, MAX_BUCKET)


def bucket_bounds(index: int) -> tuple[float, float]:
    """The durations ``[low, high)`` that bucket `index` counts."""
    low = 2.0 ** ((index - _INDEX_OFFSET) / BUCKETS_PER_OCTAVE)
    return low, low * 2.0 ** (1 / BUCKETS_PER_OCTAVE)


def bucket_value(index: int) -> float:
    """The value that stands for bucket `index`: its geometric middle (least relative error)."""
    return 2.0 ** ((index - _INDEX_OFFSET + 0.5) / BUCKETS_PER_OCTAVE)


class Histogram:
    """Durations in log-linear buckets plus their exact count, sum, min and max.

    Memory is bounded by the bucket range (at most `MAX_BUCKET` + 1 counters, in practice a
    few dozen: latencies cluster). Not thread-safe on its own: `Collector` guards it.
    """

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def record(self, seconds: float) -> None:
        """Count one duration."""
        index = bucket_of(seconds)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def record_many(self, samples: Sequence[float]) -> None:
        """Count many durations at once (how `Collector` folds in a batch).

        The bucket indexes are computed with `map` over C functions rather than a Python loop
        (about 0.2 µs a sample instead of 1 µs): this runs in the server process.
        """
        if not samples:
            return
        try:
            scaled = map(mul, map(math.log2, samples), repeat(float(BUCKETS_PER_OCTAVE)))
            raw_counts = Counter(map(math.floor, scaled))
        except (ValueError, OverflowError):  # a zero or infinite duration: take the slow road
            raw_counts = Counter(bucket_of(seconds) - _INDEX_OFFSET for seconds in samples)
        for raw, count in raw_counts.items():
            index = min(max(raw + _INDEX_OFFSET, 0), MAX_BUCKET)
            self.counts[index] = self.counts.get(index, 0) + count
        self.count += len(samples)
        self.total += sum(samples)
        self.min = min(self.min, min(samples))
        self.max = max(self.max, max(samples))

    def merge(self, other: Histogram) -> None:
        """Add `other`'s durations to this histogram (exact: bucket counts add up)."""
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> Histogram:
        """An independent copy."""
        twin = Histogram()
        twin.merge(self)
        return twin

    @property
    def mean(self) -> float | None:
        """The exact mean, or None when empty."""
        return self.total / self.count if self.count else None

    def percentile(self, fraction: float) -> float | None:
        """The nearest-rank percentile (`fraction` from 0 to 1), or None when empty.

        That is the smallest recorded value with at least `fraction` of all values <= it. The
        lowest and highest ranks are the exact min and max; others are the geometric middle of
        the part of their bucket inside [min, max], within 1.09% of the true value.
        """
        if not self.count:
            return None
        # The small epsilon keeps float noise (0.95 * 100 = 95.00000000000001) off the rank.
        rank = max(1, math.ceil(fraction * self.count - 1e-9))
        if rank == 1 or rank >= self.count:
            return self.min if rank == 1 else self.max
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                break
        low, high = bucket_bounds(index)
        low = min(max(low, self.min), self.max)
        high = max(min(high, self.max), self.min)
        return math.sqrt(low * high)

    def to_json(self) -> dict[str, Any]:
        """The buckets as ``{"start": first index, "counts": [count per bucket from there]}``."""
        if not self.counts:
            return {"start": 0, "counts": []}
        start, end = min(self.counts), max(self.counts)
        return {"start": start, "counts": [self.counts.get(i, 0) for i in range(start, end + 1)]}

    @classmethod
    def from_json(
        cls, buckets: Mapping[str, Any], total: float, low: float, high: float
    ) -> Histogram:
        """Rebuild a histogram from `to_json` output and the exact sum, min and max."""
        histogram = cls()
        start = as_int(buckets.get("start", 0))
        for offset, count in enumerate(buckets.get("counts", [])):
            if as_int(count) > 0:
                histogram.counts[start + offset] = int(count)
        histogram.count = sum(histogram.counts.values())
        if histogram.count:
            histogram.total, histogram.min, histogram.max = float(total), float(low), float(high)
        return histogram


def latency_summary(latency: Histogram) -> dict[str, float | None]:
    """The `LATENCY_FIELDS` of `latency`, in seconds; each None when it holds no duration.

    min, mean and max are exact; the percentiles are nearest-rank (`Histogram.percentile`).
    """
    if not latency.count:
        return dict.fromkeys(LATENCY_FIELDS)
    summary: dict[str, float | None] = {"min": latency.min, "mean": latency.mean}
    for name, fraction in _SUMMARY_PERCENTILES.items():
        summary[name] = latency.percentile(fraction)
    summary["max"] = latency.max
    return summary


def as_int(value: Any) -> int:
    """`value` if it is an int (not a bool); else ValueError. For parsing log records."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


__all__ = [
    "BUCKETS_PER_OCTAVE",
    "LATENCY_FIELDS",
    "MAX_BUCKET",
    "Histogram",
    "as_int",
    "bucket_bounds",
    "bucket_of",
    "bucket_value",
    "latency_summary",
]
