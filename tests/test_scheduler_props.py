"""Properties of the scheduling policies, checked with hypothesis on the
real C policy code driven by a virtual clock (datapath.sim).

Turns (datapath/src/policy.h): a turn (one trace row) of tenant i is one or
more slices of slice_pkts(cost_i, quantum) packets back to back; the policy
checks the budget before every slice and charges the slice exactly after
it, and the turn goes on while it has run less than the quantum. So a slice
(slice_cycles <= max(quantum, cost)) is the most a tenant overdraws, and a
turn lasts at most turn_cycles (< quantum + one slice). Refills happen only
between turns.

(a) Time protection, upper bound. Under strict "cycles", in ANY window
    [a, b) a tenant with share s and cap C runs at most
        s * (b - a + refill) + C + one of its slices.
    Why: its balance B never exceeds C (refill clamps credit + balance at
    the cap); it starts a slice only with B > 0 and is charged the whole
    slice after it, so B > -slice afterwards; credit reaches it only at
    refills, each covering time up to the refill, and at a turn start (the
    worst a: service is contiguous within a turn) the last refill is less
    than `refill` old. Work-conserving mode lends idle time uncharged, so
    there the bound holds for the charged rows.
(b) Work conservation: "cycles" with work_conserving=True, and fifo, never
    leave the core idle while a tenant is backlogged.
(c) Bounded wait (instead of a long-run lower bound, which needs more
    care than a test should hide): under strict "cycles" with everyone
    backlogged, between two turns of tenant i there is at most
        slice_i / s_i + refill + max_{j!=i} turn_j + sum_{j!=i} turn_j.
    Why: if i ends a turn funded, it rotates to the back of the active
    ring and each other tenant runs at most one turn first (a tenant found
    broke is skipped at no cost; one that turns funded at a refill joins
    behind i). If i ends broke, its debt is under one slice, paid off by
    the credit of slice_i / s_i cycles; the refill that hands it over
    comes at most `refill` later, delayed by at most the turn of another
    tenant running when it falls due; then i rejoins the ring (behind at
    most every other tenant's turn). Credit is rounded down in fixed point
    (under 2^-16 per refill), which 1 / s_i more cycles cover.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datapath import TenantConfig
from datapath._dp import lib
from datapath.sim import IDLE, service, simulate

pytestmark = pytest.mark.unit

HZ = lib.dp_tsc_hz()
PROPS = settings(max_examples=60, deadline=None)
SIM_BACKLOG = 64  # packets the sim keeps queued (datapath/src/sim.c): caps a slice


def slice_cycles(cost: int, quantum: int) -> int:
    """One slice: the packets one budget check lets through, <= max(quantum, cost)."""
    return min(max(1, quantum // cost), SIM_BACKLOG) * cost


def turn_cycles(cost: int, quantum: int) -> int:
    """The longest turn: slices until it has run >= quantum (< quantum + a slice)."""
    sl = slice_cycles(cost, quantum)
    return max(1, -(-quantum // sl)) * sl


@st.composite
def workloads(draw, min_n=2, max_n=4, min_share=0.0):
    n = draw(st.integers(min_n, max_n))
    weights = draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n))
    total = draw(st.floats(0.1, 1.0))
    shares = [max(min_share, total * w / sum(weights)) for w in weights]
    scale = sum(shares)
    if scale > 1.0:
        shares = [s / scale for s in shares]
    caps_us = draw(st.lists(st.floats(0.2, 30.0), min_size=n, max_size=n))
    costs = draw(st.lists(st.integers(100, 20_000), min_size=n, max_size=n))
    quantum = draw(st.integers(500, 50_000))
    refill = draw(st.integers(200, 20_000))
    return shares, caps_us, costs, quantum, refill


def cumulative_service(trace, tenant, lent=None):
    """(t, S(t)) at every row boundary: S is the tenant's service up to t."""
    mine = trace["tenant"] == tenant
    if lent is not None:
        mine &= trace["lent"] == lent
    dur = np.where(mine, (trace["end"] - trace["start"]).astype(np.float64), 0.0)
    t = np.concatenate([[0.0], trace["end"].astype(np.float64)])
    return t, np.concatenate([[0.0], np.cumsum(dur)])


def max_excess(t, s_t, share):
    """max over a <= b of S(b) - S(a) - share * (b - a); S is piecewise
    linear between boundaries, so the extremes sit at boundaries."""
    f = s_t - share * t
    return float(np.max(f - np.minimum.accumulate(f)))


def assert_contiguous(trace, horizon):
    assert trace["start"][0] == 0
    assert np.all(trace["start"][1:] == trace["end"][:-1])
    assert trace["end"][-1] >= horizon


@PROPS
@given(workloads(), st.integers(1_000_000, 4_000_000))
def test_strict_cycles_no_window_exceeds_share_plus_cap(w, horizon):
    shares, caps_us, costs, quantum, refill = w
    n = len(shares)
    tenants = [TenantConfig(share=s, cap_us=c) for s, c in zip(shares, caps_us)]
    tr = simulate("cycles", tenants, costs, [(0, horizon)] * n, horizon,
                  quantum_cycles=quantum, refill_cycles=refill)
    assert_contiguous(tr, horizon)
    assert not tr["lent"].any()
    for i in range(n):
        rows = tr[tr["tenant"] == i]
        assert np.all(rows["end"] - rows["start"] == rows["pkts"].astype(np.uint64) * costs[i])
        assert np.all(rows["end"] - rows["start"] <= turn_cycles(costs[i], quantum))
        cap = caps_us[i] * HZ / 1e6
        excess = max_excess(*cumulative_service(tr, i), shares[i])
        assert excess <= shares[i] * refill + cap + slice_cycles(costs[i], quantum) + 1e-6, \
            (i, excess)
    # shares sum to <= 1 and strict mode lends nothing: the rest is idle or
    # burst, never more than the whole core
    assert sum(service(tr, i, 0, horizon) for i in range(n)) <= horizon


@PROPS
@given(workloads(), st.integers(1_000_000, 3_000_000))
def test_work_conserving_charged_service_obeys_the_same_bound(w, horizon):
    shares, caps_us, costs, quantum, refill = w
    n = len(shares)
    tenants = [TenantConfig(share=s, cap_us=c) for s, c in zip(shares, caps_us)]
    tr = simulate("cycles", tenants, costs, [(0, horizon)] * n, horizon,
                  quantum_cycles=quantum, refill_cycles=refill, work_conserving=True)
    assert_contiguous(tr, horizon)
    assert not (tr["tenant"] == IDLE).any()
    for i in range(n):
        cap = caps_us[i] * HZ / 1e6
        excess = max_excess(*cumulative_service(tr, i, lent=0), shares[i])
        assert excess <= shares[i] * refill + cap + slice_cycles(costs[i], quantum) + 1e-6, \
            (i, excess)


@st.composite
def backlogs(draw, n, horizon):
    out = []
    for _ in range(n):
        a = draw(st.integers(0, horizon))
        b = draw(st.integers(a, horizon))
        out.append((a, b))
    return out


def assert_never_idle_with_backlog(tr, backlog, horizon):
    assert_contiguous(tr, horizon)
    idle = tr[tr["tenant"] == IDLE]
    for a, b in backlog:
        overlap = (idle["start"] < b) & (idle["end"] > a)
        assert not overlap.any(), (a, b, idle[overlap][:3])


@PROPS
@given(st.data(), workloads(min_n=1), st.sampled_from(["cycles", "pkt_rate", "byte_rate"]))
def test_work_conserving_never_idles_with_backlog(data, w, policy):
    shares, caps_us, costs, quantum, refill = w
    n, horizon = len(shares), 1_000_000
    backlog = data.draw(backlogs(n, horizon))
    tenants = [TenantConfig(share=s, cap_us=c, pkt_rate=1e5, pkt_burst=2, byte_rate=1e6,
                            byte_burst=128) for s, c in zip(shares, caps_us)]
    tr = simulate(policy, tenants, costs, backlog, horizon, quantum_cycles=quantum,
                  refill_cycles=refill, work_conserving=True)
    assert_never_idle_with_backlog(tr, backlog, horizon)


@PROPS
@given(st.data(), workloads(min_n=1))
def test_fifo_never_idles_with_backlog(data, w):
    shares, caps_us, costs, quantum, refill = w
    n, horizon = len(shares), 1_000_000
    backlog = data.draw(backlogs(n, horizon))
    tenants = [TenantConfig(share=s, cap_us=c) for s, c in zip(shares, caps_us)]
    tr = simulate("fifo", tenants, costs, backlog, horizon, quantum_cycles=quantum,
                  refill_cycles=refill)
    assert_never_idle_with_backlog(tr, backlog, horizon)
    assert not tr["lent"].any()
    # and it serves only tenants that had work
    for i, (a, b) in enumerate(backlog):
        rows = tr[tr["tenant"] == i]
        if a == b:
            assert len(rows) == 0
        else:
            assert np.all(rows["start"] >= a)


@PROPS
@given(workloads(min_share=0.05), st.integers(2_000_000, 4_000_000))
def test_strict_cycles_bounded_wait(w, horizon):
    shares, caps_us, costs, quantum, refill = w
    n = len(shares)
    tenants = [TenantConfig(share=s, cap_us=c) for s, c in zip(shares, caps_us)]
    tr = simulate("cycles", tenants, costs, [(0, horizon)] * n, horizon,
                  quantum_cycles=quantum, refill_cycles=refill)
    turns = [turn_cycles(c, quantum) for c in costs]
    for i in range(n):
        others = [turns[j] for j in range(n) if j != i]
        bound = (slice_cycles(costs[i], quantum) + 1) / shares[i] + refill + max(others) + \
            sum(others)
        rows = tr[tr["tenant"] == i]
        ends = np.concatenate([[0], rows["end"].astype(np.int64)])
        starts = np.concatenate([rows["start"].astype(np.int64), [int(tr["end"][-1])]])
        gaps = starts - ends
        assert gaps.max() <= bound, (i, gaps.max(), bound)
