"""Budget arithmetic of the signed token bucket, through the real policy
code on a virtual clock (datapath.sim): what a tenant may run, when.

The scheduler works in turns (datapath/src/policy.h): a turn is one or more
*slices* of min(max(1, quantum // cost), SIM_BACKLOG) packets run back to
back; the budget is checked before every slice and charged exactly after
it, and the turn goes on while it has run less than quantum_cycles. So a
tenant overdraws by at most one slice (slice_cycles), which is debt repaid
later, and one trace row (a turn) lasts at most turn_cycles. With a quantum
no larger than the cost, a slice and a turn are one packet, as before."""
from __future__ import annotations

import numpy as np
import pytest

from datapath import ConfigError, TenantConfig
from datapath._dp import lib
from datapath.sim import IDLE, service, simulate

pytestmark = pytest.mark.unit

HZ = lib.dp_tsc_hz()
REFILL = 1000
QUANTUM = 5000  # simulate()'s default quantum_cycles
SIM_BACKLOG = 64  # packets the sim keeps queued (datapath/src/sim.c): caps a slice


def slice_pkts(cost: int, quantum: int = QUANTUM) -> int:
    """Packets of one slice: what the budget check before it lets through."""
    return min(max(1, quantum // cost), SIM_BACKLOG)


def slice_cycles(cost: int, quantum: int = QUANTUM) -> int:
    """The most a tenant overdraws its budget by: one slice (<= max(quantum, cost))."""
    return slice_pkts(cost, quantum) * cost


def turn_cycles(cost: int, quantum: int = QUANTUM) -> int:
    """The longest turn of a backlogged tenant: slices until >= quantum (< quantum + a slice)."""
    sl = slice_cycles(cost, quantum)
    return max(1, -(-quantum // sl)) * sl


def cap_cycles(cap_us: float) -> float:
    return cap_us * HZ / 1e6


def rows_of(trace, tenant):
    return trace[trace["tenant"] == tenant]


def first_idle_after(trace, t: int) -> int:
    idle = trace[(trace["tenant"] == IDLE) & (trace["start"] >= t)]
    return int(idle["start"][0])


def test_trace_is_contiguous_from_zero_to_horizon():
    h = 2_000_000
    tr = simulate("cycles", [TenantConfig(share=0.3, cap_us=5), TenantConfig(share=0.2, cap_us=5)],
                  [700, 3000], [(0, h), (100_000, h)], h, refill_cycles=REFILL)
    assert tr["start"][0] == 0
    assert np.all(tr["start"][1:] == tr["end"][:-1])
    assert tr["end"][-1] >= h > tr["start"][-1]
    assert np.all(tr["end"] > tr["start"])


@pytest.mark.parametrize("quantum", [1, 700, 5000, 50_000])
def test_turns_are_whole_slices_of_whole_packets(quantum):
    h, costs = 2_000_000, [700, 3000, 100]
    tr = simulate("cycles", [TenantConfig(share=0.3, cap_us=5), TenantConfig(share=0.2, cap_us=5),
                             TenantConfig(share=0.1, cap_us=2)],
                  costs, [(0, h), (100_000, h), (0, h)], h, quantum_cycles=quantum,
                  refill_cycles=REFILL)
    assert np.all(tr["pkts"][tr["tenant"] == IDLE] == 0)
    for i, cost in enumerate(costs):
        rows = rows_of(tr, i)
        assert len(rows) > 0
        assert np.all(rows["pkts"] >= 1)
        assert np.all(rows["end"] - rows["start"] == rows["pkts"].astype(np.uint64) * cost)
        assert np.all(rows["end"] - rows["start"] <= turn_cycles(cost, quantum))
        if quantum <= cost:  # a quantum no larger than a packet: one packet a turn
            assert np.all(rows["pkts"] == 1)


@pytest.mark.parametrize("share,cap_us,cost", [(0.3, 10, 1000), (0.5, 2, 5000), (0.05, 20, 300),
                                                (0.9, 5, 20000), (1.0, 1, 700)])
def test_lone_tenant_gets_its_share(share, cap_us, cost):
    h = 40_000_000
    tr = simulate("cycles", [TenantConfig(share=share, cap_us=cap_us)], [cost], [(0, h)], h,
                  refill_cycles=REFILL)
    got = service(tr, 0, 0, h)
    want = share * h + cap_cycles(cap_us)  # starts with a full bucket
    # above: at most one overdrawn slice; below: as before turns (a refill's lag)
    assert got - want <= slice_cycles(cost) + 2 * share * (REFILL + slice_cycles(cost)) + 1
    assert want - got <= cost + 2 * share * (REFILL + cost) + 1
    # and the rest is idle: strict mode lends nothing
    assert not tr["lent"].any()
    assert service(tr, IDLE, 0, h) == pytest.approx(h - got, abs=1)


@pytest.mark.parametrize("share,cap_us,cost", [(0.3, 10, 1000), (0.1, 50, 4000), (0.5, 3, 333)])
def test_starts_with_a_full_bucket(share, cap_us, cost):
    h = 5_000_000
    cap = cap_cycles(cap_us)
    tr = simulate("cycles", [TenantConfig(share=share, cap_us=cap_us)], [cost], [(0, h)], h,
                  refill_cycles=REFILL)
    burst_end = first_idle_after(tr, 0)
    # the first cap's worth of cycles is served back to back from t = 0 ...
    assert burst_end >= cap
    assert service(tr, 0, 0, burst_end) == burst_end
    # ... and not much more: the cap plus what it earned meanwhile, plus one
    # overdrawn slice (funded before it, charged all of it after)
    assert burst_end <= cap + slice_cycles(cost) + share * (burst_end + REFILL)


@pytest.mark.parametrize("share,cap_us,cost", [(0.1, 20, 1000), (0.25, 10, 3000), (0.5, 5, 200)])
def test_credit_beyond_the_cap_is_dropped(share, cap_us, cost):
    cap = cap_cycles(cap_us)
    t0 = int(10 * cap / share)  # idle for ten times what refills the cap
    h = t0 + int(5 * cap / share)
    tr = simulate("cycles", [TenantConfig(share=share, cap_us=cap_us)], [cost], [(t0, h)], h,
                  refill_cycles=REFILL)
    assert service(tr, 0, 0, t0) == 0
    burst_end = first_idle_after(tr, t0)
    burst = burst_end - t0
    assert service(tr, 0, t0, burst_end) == burst
    assert burst >= cap
    assert burst <= cap + slice_cycles(cost) + share * (burst + REFILL)
    # kept credit (ten caps) would have run for more than ten caps
    assert burst < 3 * cap


@pytest.mark.parametrize("share,cap_us,factor", [(0.3, 10, 20), (0.1, 5, 50), (0.5, 2, 8)])
def test_debt_is_paid_back_never_forgiven(share, cap_us, factor):
    cap = cap_cycles(cap_us)
    cost = int(factor * cap)
    h = int(12 * cost / share)
    tr = simulate("cycles", [TenantConfig(share=share, cap_us=cap_us)], [cost], [(0, h)], h,
                  refill_cycles=REFILL)
    rows = rows_of(tr, 0)
    starts = rows["start"].astype(np.int64)
    assert len(starts) >= 8
    # a packet costs more than the quantum, so every turn is one packet
    assert slice_pkts(cost) == 1 and np.all(rows["pkts"] == 1)
    # the first packet spends the full bucket, then waits its debt off
    assert starts[1] - starts[0] == pytest.approx((cost - cap) / share, abs=2 * REFILL)
    # afterwards every packet costs cost / share of wall time
    gaps = np.diff(starts[1:])
    assert np.all(np.abs(gaps - cost / share) <= 2 * REFILL), gaps
    assert service(tr, 0, 0, h) <= share * h + cap + slice_cycles(cost)


@pytest.mark.parametrize("quantum", [1, QUANTUM])  # 1: one packet a turn, as before turns
@pytest.mark.parametrize("rate,burst,cost", [(1e5, 10, 100), (2e5, 1, 2000), (5e4, 100, 500)])
def test_pkt_rate(rate, burst, cost, quantum):
    h = 100_000_000  # ~ 40 ms at 2.6 GHz
    tr = simulate("pkt_rate", [TenantConfig(pkt_rate=rate, pkt_burst=burst)], [cost], [(0, h)],
                  h, quantum_cycles=quantum, refill_cycles=REFILL)
    n = int(rows_of(tr, 0)["pkts"].sum())
    # tokens are checked before a slice and spent for all of its packets: the
    # overdraft is under one slice, the shortfall (refill lag) under a packet
    k = slice_pkts(cost, quantum)
    assert -2 <= n - (burst + rate * h / HZ) <= k + 1
    # what a packet costs in cycles matters only through the slice it overdraws
    tr2 = simulate("pkt_rate", [TenantConfig(pkt_rate=rate, pkt_burst=burst)], [cost // 2],
                   [(0, h)], h, quantum_cycles=quantum, refill_cycles=REFILL)
    assert abs(int(rows_of(tr2, 0)["pkts"].sum()) - n) <= max(k, slice_pkts(cost // 2, quantum))


def packet_starts(rows, cost):
    """Start of every packet of the rows (a turn runs its packets back to back)."""
    return np.concatenate([r["start"] + np.arange(r["pkts"], dtype=np.uint64) * cost
                           for r in rows])


# quantum 1: one packet a turn, as before turns; 1000 and 5000: slices of 10
# and 50 packets, which 45 does not divide (the last slice overdraws)
@pytest.mark.parametrize("burst,quantum", [(50, 1), (50, 1000), (50, QUANTUM), (45, 1000)])
def test_pkt_rate_burst_is_served_back_to_back(burst, quantum):
    h, rate, cost = 10**7, 1e3, 100
    tr = simulate("pkt_rate", [TenantConfig(pkt_rate=rate, pkt_burst=burst)], [cost], [(0, h)],
                  h, quantum_cycles=quantum, refill_cycles=REFILL)
    rows = rows_of(tr, 0)
    assert np.all(packet_starts(rows, cost)[:burst] == np.arange(burst) * cost)
    assert rows["pkts"].sum() <= burst + rate * h / HZ + slice_pkts(cost, quantum)


@pytest.mark.parametrize("quantum", [1, QUANTUM])  # 1: one packet a turn, as before turns
@pytest.mark.parametrize("rate,burst", [(64e5, 640), (1e6, 64), (32e6, 6400)])
def test_byte_rate(rate, burst, quantum):
    h = 100_000_000
    tr = simulate("byte_rate", [TenantConfig(byte_rate=rate, byte_burst=burst)], [100], [(0, h)],
                  h, quantum_cycles=quantum, refill_cycles=REFILL)
    sent = 64 * int(rows_of(tr, 0)["pkts"].sum())  # the sim's packets are 64 bytes
    # the overdraft is under one slice of 64-byte packets
    assert -2 * 64 <= sent - (burst + rate * h / HZ) <= (slice_pkts(100, quantum) + 1) * 64


@pytest.mark.parametrize("quantum", [1000, QUANTUM])  # 1000: one packet a turn
def test_shares_split_the_core(quantum):
    h, cost = 50_000_000, 1000
    tr = simulate("cycles", [TenantConfig(share=0.5, cap_us=10), TenantConfig(share=0.25, cap_us=10)],
                  [cost, cost], [(0, h), (0, h)], h, quantum_cycles=quantum, refill_cycles=REFILL)
    a, b = service(tr, 0, 0, h), service(tr, 1, 0, h)
    # the cap, a refill's lag, the tenant's own overdrawn slice and one turn
    # of the other tenant (with one-packet turns: two packets, as before)
    slack = cap_cycles(10) + slice_cycles(cost, quantum) + turn_cycles(cost, quantum) + REFILL
    assert abs(a - 0.5 * h) <= slack
    assert abs(b - 0.25 * h) <= slack
    assert abs(service(tr, IDLE, 0, h) - 0.25 * h) <= 2 * slack


def test_work_conserving_lends_idle_time_uncharged():
    h = 20_000_000
    share, cap_us = 0.3, 10
    tr = simulate("cycles", [TenantConfig(share=share, cap_us=cap_us)], [1000], [(0, h)], h,
                  refill_cycles=REFILL, work_conserving=True)
    assert service(tr, IDLE, 0, h) == 0
    own = tr[(tr["tenant"] == 0) & (tr["lent"] == 0)]
    charged = int((own["end"] - own["start"]).sum())
    # one overdrawn slice; a lent turn may delay a refill by up to a turn
    sl, turn = slice_cycles(1000), turn_cycles(1000)
    assert abs(charged - (share * h + cap_cycles(cap_us))) <= sl + 2 * share * (REFILL + turn) + 1
    assert tr["lent"].sum() > 0


@pytest.mark.parametrize("quantum", [1000, QUANTUM])  # 1000: one packet a turn
def test_work_conserving_never_lends_to_the_loss_of_a_funded_tenant(quantum):
    h, cost = 20_000_000, 1000
    tr = simulate("cycles", [TenantConfig(share=0.2, cap_us=5), TenantConfig(share=0.8, cap_us=5)],
                  [cost, cost], [(0, h), (0, h)], h, quantum_cycles=quantum, refill_cycles=REFILL,
                  work_conserving=True)
    # tenant 1 could use 80% and tenant 0 20%: nothing is idle, so nothing is lent
    lent = tr[tr["lent"] == 1]
    assert int((lent["end"] - lent["start"]).sum()) <= 0.02 * h
    # short of its share by at most tenant 0's cap and overdrawn slice, a
    # refill's lag and one turn of tenant 0 (one-packet turns: as before)
    slack = slice_cycles(cost, quantum) + turn_cycles(cost, quantum) + REFILL
    assert service(tr, 1, 0, h) >= 0.8 * h - cap_cycles(5) - slack


def test_bad_simulation_arguments():
    with pytest.raises(ConfigError):
        simulate("cycles", [TenantConfig()], [100], [(0, 10)], 10, refill_cycles=0)
    with pytest.raises(ConfigError):
        simulate("lottery", [TenantConfig()], [100], [(0, 10)], 10)


@pytest.mark.parametrize("policy", ["fifo", "cycles", "pkt_rate"])
def test_small_queues_do_not_stall_the_simulator(policy):
    # the simulator keeps 64 packets queued, unless the queue holds fewer
    tr = simulate(policy, [TenantConfig(queue_cap=32, share=0.5, cap_us=10, pkt_rate=1e6)],
                  [1000], [(0, 10**6)], 10**6, refill_cycles=REFILL)
    assert int(tr["pkts"].sum()) > 0
