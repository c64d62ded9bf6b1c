"""Latency percentiles from the fast path's log-linear histograms.

The C side counts completion latencies in TSC cycles into DP_HIST_BUCKETS
buckets (see datapath/src/hist.h). Percentiles here are nearest-rank over
*every packet sent*: a packet that never completed counts as infinitely
late, so losing packets can never make a tail look better.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ._dp import ffi, lib


@functools.cache
def bucket_midpoints_cycles() -> np.ndarray:
    """The value each bucket stands for: the middle of its range."""
    n = lib.DP_HIST_BUCKETS
    lower = np.array([lib.dp_hist_lower(i) for i in range(n)], dtype=np.float64)
    upper = np.append(lower[1:], lower[-1] * (1 + 2.0**-7))
    return (lower + upper) / 2


class LatencyHistogram:
    """Bucket counts of completion latency, with percentiles in microseconds."""

    def __init__(self, counts: np.ndarray, tsc_hz: float):
        self.counts = counts
        self.tsc_hz = tsc_hz

    @classmethod
    def empty(cls, tsc_hz: float) -> "LatencyHistogram":
        return cls(np.zeros(lib.DP_HIST_BUCKETS, dtype=np.uint64), tsc_hz)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def __add__(self, other: "LatencyHistogram") -> "LatencyHistogram":
        return LatencyHistogram(self.counts + other.counts, self.tsc_hz)

    def percentile(self, q: float, lost: int = 0) -> float:
        """The q-th percentile in us over count + lost samples (lost = inf)."""
        total = self.count + lost
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * total))
        if rank > self.count:
            return math.inf
        idx = int(np.searchsorted(np.cumsum(self.counts), rank))
        return float(bucket_midpoints_cycles()[idx]) / self.tsc_hz * 1e6

    def mean_us(self) -> float:
        if not self.count:
            return math.nan
        total = float(np.dot(self.counts.astype(np.float64), bucket_midpoints_cycles()))
        return total / self.count / self.tsc_hz * 1e6


def record_cycles(values) -> LatencyHistogram:
    """A histogram of the given cycle counts, bucketed by the C code itself."""
    counts = np.zeros(lib.DP_HIST_BUCKETS, dtype=np.uint64)
    for v in values:
        counts[lib.dp_hist_index(int(v))] += 1
    return LatencyHistogram(counts, lib.dp_tsc_hz())


__all__ = ["LatencyHistogram", "bucket_midpoints_cycles", "record_cycles", "ffi"]
