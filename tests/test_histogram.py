"""The log-linear latency histogram: bucket layout (C) and percentiles (Python)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datapath._dp import lib
from datapath.histogram import LatencyHistogram, bucket_midpoints_cycles, record_cycles

pytestmark = pytest.mark.unit

N = lib.DP_HIST_BUCKETS
HZ = lib.dp_tsc_hz()


@pytest.fixture(scope="module")
def bounds():
    lower = np.array([lib.dp_hist_lower(i) for i in range(N)], dtype=np.uint64)
    upper = np.array([lib.dp_hist_upper(i) for i in range(N)], dtype=np.uint64)
    return lower, upper


def test_buckets_are_contiguous_and_monotone(bounds):
    lower, upper = bounds
    assert lower[0] == 0
    assert np.all(lower < upper)
    assert np.all(upper[:-1] == lower[1:])  # no gap, no overlap
    assert upper[-1] == 2**64 - 1           # the last bucket is open-ended
    # both ends of every bucket map back to it
    for i in range(N):
        assert lib.dp_hist_index(int(lower[i])) == i
        if i + 1 < N:
            assert lib.dp_hist_index(int(upper[i]) - 1) == i


def test_layout_256_linear_then_128_per_octave(bounds):
    lower, _ = bounds
    assert list(lower[:257]) == list(range(257))
    for e in range(8, 45):
        first = 256 + (e - 8) * 128
        assert lower[first] == 2**e
    # 2^44 is inside the covered range, 2^45 and beyond saturate
    assert lib.dp_hist_index(2**44) < N - 1
    assert lib.dp_hist_index(2**45) == N - 1
    assert lib.dp_hist_index(2**64 - 1) == N - 1


def test_relative_width_at_most_1_128_above_256(bounds):
    lower, upper = bounds
    lo = lower[256:-1].astype(np.float64)
    width = (upper[256:-1] - lower[256:-1]).astype(np.float64)
    assert np.all(width / lo <= 1 / 128)
    # below 256 every value has its own bucket
    assert np.all(upper[:256] - lower[:256] == 1)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.integers(0, 2**44),
                 st.integers(0, 44).flatmap(lambda e: st.integers(2**e - 2, 2**e + 2))
                 .filter(lambda v: 0 <= v <= 2**44)))
def test_every_value_lands_in_its_bucket(v):
    i = lib.dp_hist_index(v)
    assert 0 <= i < N
    assert lib.dp_hist_lower(i) <= v < lib.dp_hist_upper(i)


def _samples(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Latencies in ns between 100 ns and 100 ms."""
    if kind == "lognormal":
        ns = rng.lognormal(mean=math.log(20_000), sigma=1.5, size=n)
    elif kind == "uniform":
        ns = rng.uniform(100, 100e6, size=n)
    elif kind == "bimodal":
        ns = np.concatenate([rng.normal(2_000, 300, size=n - n // 20),
                             rng.normal(5e6, 1e6, size=n // 20)])
    elif kind == "loguniform":
        ns = np.exp(rng.uniform(math.log(100), math.log(100e6), size=n))
    else:
        raise ValueError(kind)
    return np.clip(ns, 100, 100e6)


# 10007 is prime: q * n / 100 is never an integer for these q, so the
# nearest rank cannot differ between the two implementations by rounding
@pytest.mark.parametrize("kind", ["lognormal", "uniform", "bimodal", "loguniform"])
@pytest.mark.parametrize("seed", [1, 2])
def test_percentiles_match_numpy_inverted_cdf(kind, seed):
    rng = np.random.default_rng(seed)
    cycles = np.floor(_samples(kind, 10007, rng) * HZ / 1e9).astype(np.uint64)
    hist = record_cycles(cycles)
    assert hist.count == len(cycles)
    for q in (50, 90, 99, 99.9):
        want_us = float(np.percentile(cycles, q, method="inverted_cdf")) / HZ * 1e6
        got_us = hist.percentile(q)
        assert got_us == pytest.approx(want_us, rel=0.01), (kind, q)


def test_percentile_counts_lost_samples_as_infinite():
    cycles = np.arange(1, 1001) * 1000  # 1000 distinct samples
    hist = record_cycles(cycles)
    # 1020 samples in all, 20 of them lost (infinitely late)
    assert math.isinf(hist.percentile(99, lost=20))      # rank 1010 > 1000
    assert math.isinf(hist.percentile(98.1, lost=20))    # rank 1001
    assert math.isfinite(hist.percentile(98, lost=20))   # rank 1000: the largest
    assert math.isfinite(hist.percentile(97, lost=20))   # rank 990
    # rank 990 is the 990th sample, 990000 cycles
    assert hist.percentile(97, lost=20) == pytest.approx(990_000 / HZ * 1e6, rel=0.005)
    assert hist.percentile(98, lost=20) == pytest.approx(1_000_000 / HZ * 1e6, rel=0.005)
    # losing samples can only make a percentile worse
    for q in (50, 90, 95, 97):
        assert hist.percentile(q, lost=20) >= hist.percentile(q)


def test_empty_histogram_is_nan_and_all_lost_is_inf():
    hist = LatencyHistogram.empty(HZ)
    assert hist.count == 0
    assert math.isnan(hist.percentile(50))
    assert math.isnan(hist.percentile(99.9))
    assert math.isnan(hist.mean_us())
    assert math.isinf(hist.percentile(50, lost=3))


def test_midpoints_lie_inside_their_buckets(bounds):
    lower, upper = bounds
    mid = bucket_midpoints_cycles()
    assert np.all(mid[:-1] >= lower[:-1]) and np.all(mid[:-1] < upper[:-1])
    assert mid[-1] > lower[-1]


def test_sum_of_histograms_adds_counts():
    a = record_cycles([10, 20, 30])
    b = record_cycles([10, 5000])
    c = a + b
    assert c.count == 5
    assert c.counts[lib.dp_hist_index(10)] == 2
    assert c.percentile(100) == pytest.approx(b.percentile(100))
