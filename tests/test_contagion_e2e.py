"""End to end: an aggressor tenant that asks for twice the core must not
wreck a light victim's tail latency under time protection ("cycles"), as it
does with no isolation ("fifo").

Latencies run from each packet's *intended* send time (open-loop Poisson),
and every packet sent but never completed counts as infinitely late."""
from __future__ import annotations

import math

import pytest

from datapath import Flow, Rule
from datapath.probe import udp_frame

pytestmark = pytest.mark.unit

DURATION_S = 0.5


def victim_p99_us(dp_factory, policy: str) -> tuple[float, object]:
    dp = dp_factory(policy)
    # a deep victim queue: a host stall of the VM (tens of ms) must not
    # overflow it; the aggressor's default queue still overflows
    dp.add_tenant(1, handler="spin", share=0.5, cap_us=50, queue_cap=8192)
    # the aggressor's queue is deep too (still far below its 1 s backlog):
    # under fifo the victim then waits behind ~40 ms of aggressor work
    dp.add_tenant(2, handler="spin", share=0.5, cap_us=50, queue_cap=4096)
    dp.set_rules([Rule(1, ip_dst="10.0.0.1", proto="udp", dport=7),
                  Rule(2, ip_dst="10.0.0.2", proto="udp", dport=7)])
    flows = [Flow(udp_frame("10.0.0.1", dport=7, cost_ns=1_000), rate_pps=50_000),    # 5% of a core
             Flow(udp_frame("10.0.0.2", dport=7, cost_ns=10_000), rate_pps=200_000)]  # 200%
    dp.use_mem_backend(flows, duration_s=DURATION_S)
    with dp.running():
        dp.wait_generator(poll_s=0.02)
        dp.drain(timeout_s=2.0)
        victim = dp.tenant_stats(1)
        aggressor = dp.tenant_stats(2, latency=False)
        sent = dp.flow_stats(0)[0]
    assert sent > 0.7 * 50_000 * DURATION_S
    # the aggressor really overloaded the core: its queue overflowed
    assert aggressor.drops["queue_full"] > 0
    return victim.latency.percentile(99, lost=sent - victim.completed), victim


def test_cycles_protects_the_victims_tail(dp_factory):
    fifo_p99, _ = victim_p99_us(dp_factory, "fifo")
    # The host takes this VM's core away for milliseconds at a time; one
    # such stall lands in a 0.5 s run's p99.  Up to three tries: a broken
    # policy fails all three (its tail is fifo's), a stall rarely hits three.
    tries = []
    for _ in range(3):
        cycles_p99, victim = victim_p99_us(dp_factory, "cycles")
        # under time protection the victim loses nothing and stays fast
        assert victim.dropped == 0
        assert math.isfinite(cycles_p99)
        tries.append(cycles_p99)
        if cycles_p99 * 5 <= fifo_p99:
            return
    pytest.fail(f"cycles victim p99 {tries} us, fifo {fifo_p99:.0f} us: not 5x apart")
