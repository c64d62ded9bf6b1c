"""Budget arithmetic of the signed token bucket, through the real policy
code on a virtual clock (datapath.sim): what a tenant may run, when."""
from __future__ import annotations

import numpy as np
import pytest

from datapath import ConfigError, TenantConfig
from datapath._dp import lib
from datapath.sim import IDLE, service, simulate

pytestmark = pytest.mark.unit

HZ = lib.dp_tsc_hz()
REFILL = 1000


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


@pytest.mark.parametrize("share,cap_us,cost", [(0.3, 10, 1000), (0.5, 2, 5000), (0.05, 20, 300),
                                                (0.9, 5, 20000), (1.0, 1, 700)])
def test_lone_tenant_gets_its_share(share, cap_us, cost):
    h = 40_000_000
    tr = simulate("cycles", [TenantConfig(share=share, cap_us=cap_us)], [cost], [(0, h)], h,
                  refill_cycles=REFILL)
    got = service(tr, 0, 0, h)
    want = share * h + cap_cycles(cap_us)  # starts with a full bucket
    assert abs(got - want) <= cost + 2 * share * (REFILL + cost) + 1
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
    # ... and not much more: the cap plus what it earned meanwhile, plus one overrun
    assert burst_end <= cap + cost + share * (burst_end + REFILL)


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
    assert burst <= cap + cost + share * (burst + REFILL)
    # kept credit (ten caps) would have run for more than ten caps
    assert burst < 3 * cap


@pytest.mark.parametrize("share,cap_us,factor", [(0.3, 10, 20), (0.1, 5, 50), (0.5, 2, 8)])
def test_debt_is_paid_back_never_forgiven(share, cap_us, factor):
    cap = cap_cycles(cap_us)
    cost = int(factor * cap)
    h = int(12 * cost / share)
    tr = simulate("cycles", [TenantConfig(share=share, cap_us=cap_us)], [cost], [(0, h)], h,
                  refill_cycles=REFILL)
    starts = rows_of(tr, 0)["start"].astype(np.int64)
    assert len(starts) >= 8
    # the first packet spends the full bucket, then waits its debt off
    assert starts[1] - starts[0] == pytest.approx((cost - cap) / share, abs=2 * REFILL)
    # afterwards every packet costs cost / share of wall time
    gaps = np.diff(starts[1:])
    assert np.all(np.abs(gaps - cost / share) <= 2 * REFILL), gaps
    assert service(tr, 0, 0, h) <= share * h + cap + cost


@pytest.mark.parametrize("rate,burst,cost", [(1e5, 10, 100), (2e5, 1, 2000), (5e4, 100, 500)])
def test_pkt_rate(rate, burst, cost):
    h = 100_000_000  # ~ 40 ms at 2.6 GHz
    tr = simulate("pkt_rate", [TenantConfig(pkt_rate=rate, pkt_burst=burst)], [cost], [(0, h)],
                  h, refill_cycles=REFILL)
    n = len(rows_of(tr, 0))
    assert abs(n - (burst + rate * h / HZ)) <= 2
    # it does not matter what a packet costs in cycles
    tr2 = simulate("pkt_rate", [TenantConfig(pkt_rate=rate, pkt_burst=burst)], [cost // 2],
                   [(0, h)], h, refill_cycles=REFILL)
    assert abs(len(rows_of(tr2, 0)) - n) <= 1


def test_pkt_rate_burst_is_served_back_to_back():
    tr = simulate("pkt_rate", [TenantConfig(pkt_rate=1e3, pkt_burst=50)], [100], [(0, 10**7)],
                  10**7, refill_cycles=REFILL)
    rows = rows_of(tr, 0)
    assert np.all(rows["start"][:50] == np.arange(50) * 100)
    assert len(rows) <= 50 + 1e3 * 10**7 / HZ + 1


@pytest.mark.parametrize("rate,burst", [(64e5, 640), (1e6, 64), (32e6, 6400)])
def test_byte_rate(rate, burst):
    h = 100_000_000
    tr = simulate("byte_rate", [TenantConfig(byte_rate=rate, byte_burst=burst)], [100], [(0, h)],
                  h, refill_cycles=REFILL)
    sent = 64 * len(rows_of(tr, 0))  # the sim's packets are 64 bytes
    assert abs(sent - (burst + rate * h / HZ)) <= 2 * 64


def test_shares_split_the_core():
    h = 50_000_000
    tr = simulate("cycles", [TenantConfig(share=0.5, cap_us=10), TenantConfig(share=0.25, cap_us=10)],
                  [1000, 1000], [(0, h), (0, h)], h, refill_cycles=REFILL)
    a, b = service(tr, 0, 0, h), service(tr, 1, 0, h)
    slack = cap_cycles(10) + 2000 + REFILL
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
    assert abs(charged - (share * h + cap_cycles(cap_us))) <= 1000 + 2 * share * 2000 + 1
    assert tr["lent"].sum() > 0


def test_work_conserving_never_lends_to_the_loss_of_a_funded_tenant():
    h = 20_000_000
    tr = simulate("cycles", [TenantConfig(share=0.2, cap_us=5), TenantConfig(share=0.8, cap_us=5)],
                  [1000, 1000], [(0, h), (0, h)], h, refill_cycles=REFILL, work_conserving=True)
    # tenant 1 could use 80% and tenant 0 20%: nothing is idle, so nothing is lent
    lent = tr[tr["lent"] == 1]
    assert int((lent["end"] - lent["start"]).sum()) <= 0.02 * h
    assert service(tr, 1, 0, h) >= 0.8 * h - cap_cycles(5) - 3000


def test_bad_simulation_arguments():
    with pytest.raises(ConfigError):
        simulate("cycles", [TenantConfig()], [100], [(0, 10)], 10, refill_cycles=0)
    with pytest.raises(ConfigError):
        simulate("lottery", [TenantConfig()], [100], [(0, 10)], 10)
