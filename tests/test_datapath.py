"""The live loop on the mem backend: real threads on the machine's cores.

Runs are short (<= 0.5 s of generator time) and assertions are about
counts, never about how fast something ran; where a rate matters the
margins are wide enough for a noisy 2-core VM."""
from __future__ import annotations

import math
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from datapath import (BackendError, BudgetError, ConfigError, Flow, IsolaneError, NotFoundError,
                      Rule, TenantConfig)
from datapath._dp import lib
from datapath.probe import udp_frame

pytestmark = pytest.mark.unit

HZ = lib.dp_tsc_hz()


def plain_udp(dst="10.0.0.1", dport=7) -> bytes:
    """A UDP frame without an isolane probe header (spin uses spin_ns)."""
    return bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") /
                 IP(src="10.0.0.2", dst=dst) / UDP(sport=4242, dport=dport) / (b"\xaa" * 22))


def accounted(dp) -> tuple[int, int]:
    """(packets sent by the generator, packets whose fate is known)."""
    sent = sum(dp.flow_stats(i)[0] for i in range(len(dp.flows)))
    known = sum(dp.flow_stats(i)[1] for i in range(len(dp.flows)))
    g = dp.global_stats()
    known += g.malformed + g.unknown
    for t in dp.tenants:
        st = dp.tenant_stats(t, latency=False)
        known += st.completed + st.dropped  # XDP_PASS is counted as a no_slowpath drop
    return sent, known


def settle(dp, timeout_s: float = 3.0) -> None:
    """Waits (after the generator is done) until every packet sent is
    accounted for: completed or dropped somewhere."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sent, known = accounted(dp)
        if sent == known:
            return
        time.sleep(0.01)
    sent, known = accounted(dp)
    assert sent == known, f"{sent - known} packets unaccounted for"


def run(dp, flows, duration_s: float, during=None):
    dp.use_mem_backend(flows, duration_s=duration_s)
    with dp.running():
        if during:
            during()
        dp.wait_generator(poll_s=0.01)
        settle(dp)


# ---- configuration errors ----

def test_unknown_policy(dp_factory):
    with pytest.raises(ConfigError):
        dp_factory("round_robin")


def test_cycles_needs_accounting(dp_factory):
    with pytest.raises(ConfigError):
        dp_factory("cycles", accounting=False)
    dp_factory("fifo", accounting=False)  # fifo does not


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan])
def test_bad_share(share):
    with pytest.raises(BudgetError):
        TenantConfig(share=share)


@pytest.mark.parametrize("field", ["cap_us", "pkt_rate", "pkt_burst", "byte_rate", "byte_burst"])
@pytest.mark.parametrize("value", [-1.0, math.inf, math.nan])
def test_bad_budget_fields(field, value):
    with pytest.raises(BudgetError):
        TenantConfig(**{field: value})


@pytest.mark.parametrize("fields", [dict(queue_cap=100), dict(queue_cap=1), dict(handler="bpf"),
                                    dict(spin_ns=-1), dict(spin_ns=10**9)])
def test_bad_tenant_fields(fields):
    with pytest.raises(ConfigError):
        TenantConfig(**fields)


def test_budget_range_checked_in_c(dp_factory):
    dp = dp_factory("cycles")
    with pytest.raises(ConfigError):
        dp.add_tenant(1, cap_us=2e7)  # > 1e7 us: ERANGE from tenant_config_check
    assert 1 not in dp.tenants


def test_duplicate_tenant(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1)
    with pytest.raises(ConfigError):
        dp.add_tenant(1, handler="drop")
    assert dp.tenants[1].handler == "echo"


@pytest.mark.parametrize("tid", [-1, 256])
def test_tenant_id_range(dp_factory, tid):
    with pytest.raises(ConfigError):
        dp_factory("fifo").add_tenant(tid)


def test_unknown_tenant(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1)
    with pytest.raises(NotFoundError):
        dp.tenant_stats(2)
    with pytest.raises(NotFoundError):
        dp.tenant_stats(300)
    with pytest.raises(NotFoundError):
        dp.set_tenant(2, spin_ns=5)
    assert dp.tenant_stats(1).rx == 0


def test_set_tenant_may_not_resize_its_queue(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1, queue_cap=64)
    with pytest.raises(ConfigError):
        dp.set_tenant(1, queue_cap=128)
    assert dp.tenants[1].queue_cap == 64


def test_queue_slots_are_limited(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1, queue_cap=65536)
    with pytest.raises(ConfigError):
        dp.add_tenant(2, queue_cap=2)


def test_start_without_backend(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1)
    with pytest.raises(BackendError):
        dp.start()
    assert not dp.is_running


def test_unknown_flow(dp_factory):
    dp = dp_factory("fifo")
    dp.use_mem_backend([Flow(udp_frame(), rate_pps=1000)], duration_s=0.1)
    with pytest.raises(NotFoundError):
        dp.flow_stats(1)


@pytest.mark.parametrize("kwargs", [dict(frame=b"\0" * 10, rate_pps=1), dict(frame=udp_frame()),
                                    dict(frame=udp_frame(), rate_pps=1, arrival="burst"),
                                    dict(frame=udp_frame(), rate_pps=1, arrival="onoff")])
def test_bad_flows(kwargs):
    with pytest.raises(ConfigError):
        Flow(**kwargs)


def test_bad_mem_backend(dp_factory):
    dp = dp_factory("fifo")
    with pytest.raises(ConfigError):
        dp.use_mem_backend([Flow(udp_frame(), rate_pps=1000)], duration_s=0.1, ring_size=1000)
    with pytest.raises(ConfigError):
        dp.use_mem_backend([Flow(udp_frame(), rate_pps=1000)], duration_s=0)


def test_calls_refused_while_running(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1)
    dp.set_rules([Rule(1)])
    dp.use_mem_backend([Flow(udp_frame(), rate_pps=1000)], duration_s=0.1)
    with dp.running():
        assert dp.is_running
        with pytest.raises(BackendError):
            dp.start()
        with pytest.raises(IsolaneError):
            dp.process(udp_frame())
        with pytest.raises(IsolaneError):
            dp.use_mem_backend([Flow(udp_frame(), rate_pps=1000)], duration_s=0.1)
    assert not dp.is_running
    assert dp.process(udp_frame())[:2] == ("tx", 1)


# ---- live runs ----

@pytest.mark.parametrize("policy", ["fifo", "cycles"])
def test_echo_run_completes_every_packet(dp_factory, policy):
    dp = dp_factory(policy)
    dp.add_tenant(1, handler="echo", share=0.5, cap_us=50)
    dp.set_rules([Rule(1, ip_dst="10.0.0.1", proto="udp", dport=7)])
    run(dp, [Flow(udp_frame("10.0.0.1", dport=7), rate_pps=50_000)], 0.3)
    sent, nic_drops = dp.flow_stats(0)[:2]
    st = dp.tenant_stats(1)
    g = dp.global_stats()
    assert 0.7 * 15_000 <= sent <= 1.3 * 15_000
    assert nic_drops == 0
    assert st.dropped == 0 and st.drop_verdict == 0
    assert st.rx == st.completed == st.tx == sent
    assert st.queue_len == 0
    assert st.latency.count == st.completed
    assert math.isfinite(st.latency.percentile(100, lost=sent - st.completed))
    assert g.rx == sent and g.unknown == 0 and g.malformed == 0
    assert st.cycles > 0  # accounting charges every tenant packet
    assert 0 < g.busy_loops <= g.loops


def test_second_run_on_the_same_datapath(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1)
    dp.set_rules([Rule(1)])
    run(dp, [Flow(udp_frame(), rate_pps=20_000)], 0.1)
    first = dp.tenant_stats(1).completed
    assert first == dp.flow_stats(0)[0] > 0
    dp.reset_stats()
    run(dp, [Flow(udp_frame(), rate_pps=20_000)], 0.1)
    assert dp.tenant_stats(1).completed == dp.flow_stats(0)[0] > 0


def test_unknown_and_malformed_traffic_never_reach_a_tenant(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1)
    dp.add_tenant(2)
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(2, ip_dst="10.0.0.2")])
    bad = bytearray(udp_frame("10.0.0.1"))
    bad[14] = 0x44  # IHL 4
    flows = [Flow(udp_frame("10.0.0.1"), rate_pps=20_000),
             Flow(udp_frame("10.9.9.9"), rate_pps=20_000),
             Flow(bytes(bad), rate_pps=5_000)]
    run(dp, flows, 0.2)
    sent = [dp.flow_stats(i)[0] for i in range(3)]
    g = dp.global_stats()
    assert all(s > 0 for s in sent)
    assert g.unknown == sent[1]
    assert g.malformed == sent[2]
    assert dp.tenant_stats(1).rx == dp.tenant_stats(1).completed == sent[0]
    assert dp.tenant_stats(2).rx == 0


def test_queue_overflow_stays_with_the_flooding_tenant(dp_factory):
    dp = dp_factory("cycles")
    dp.add_tenant(1, handler="spin", queue_cap=64, share=0.5, cap_us=50)
    dp.add_tenant(2, handler="echo", share=0.5, cap_us=50)
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(2, ip_dst="10.0.0.2")])
    flows = [Flow(udp_frame("10.0.0.1", cost_ns=20_000), rate_pps=200_000),  # 4 cores' worth
             Flow(udp_frame("10.0.0.2"), rate_pps=10_000)]
    run(dp, flows, 0.3)
    a, b = dp.tenant_stats(1), dp.tenant_stats(2)
    sent_a, sent_b = dp.flow_stats(0)[0], dp.flow_stats(1)[0]
    assert a.drops["queue_full"] > 0.5 * sent_a  # it asked for 4 cores and has half of one
    assert a.dropped == a.drops["queue_full"]
    assert a.completed + a.dropped == a.rx
    assert b.dropped == 0
    assert dp.flow_stats(1)[1] == 0
    assert b.completed == b.rx == sent_b > 0


def test_set_tenant_while_running_changes_the_handler(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1, handler="echo")
    dp.set_rules([Rule(1)])
    seen = {}

    def during():
        time.sleep(0.1)
        seen["before"] = dp.tenant_stats(1, latency=False)
        dp.set_tenant(1, handler="drop")
        seen["after_set"] = dp.tenant_stats(1, latency=False)

    run(dp, [Flow(udp_frame(), rate_pps=50_000)], 0.3, during)
    before, at_set, end = seen["before"], seen["after_set"], dp.tenant_stats(1)
    assert before.tx > 0 and before.drop_verdict == 0
    assert end.tx == at_set.tx  # once set_tenant returned, nothing more was echoed
    assert end.drop_verdict > 0
    assert end.completed == end.tx + end.drop_verdict == dp.flow_stats(0)[0]
    assert dp.tenants[1].handler == "drop"


def test_set_tenant_while_running_changes_the_cost(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1, handler="spin", spin_ns=0)
    dp.set_rules([Rule(1)])
    seen = {}

    def during():
        time.sleep(0.1)
        seen["cheap"] = dp.tenant_stats(1, latency=False)
        dp.set_tenant(1, spin_ns=20_000)
        seen["set"] = dp.tenant_stats(1, latency=False)

    run(dp, [Flow(plain_udp(), rate_pps=10_000)], 0.3, during)
    cheap, at_set, end = seen["cheap"], seen["set"], dp.tenant_stats(1, latency=False)
    assert cheap.completed > 100 and end.completed - at_set.completed > 100
    per_pkt_before = cheap.cycles / cheap.completed
    per_pkt_after = (end.cycles - at_set.cycles) / (end.completed - at_set.completed)
    assert per_pkt_before < 5_000 * HZ / 1e9     # no spin: well under 5 us
    assert per_pkt_after >= 0.9 * 20_000 * HZ / 1e9  # the spin is charged in full


def test_probe_cost_overrides_spin_ns(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1, handler="spin", spin_ns=50_000)
    dp.set_rules([Rule(1)])
    run(dp, [Flow(udp_frame(cost_ns=0), rate_pps=10_000)], 0.1)
    st = dp.tenant_stats(1, latency=False)
    assert st.completed > 100
    assert st.cycles / st.completed < 10_000 * HZ / 1e9  # not 50 us each


def test_set_rules_while_running(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1)
    dp.add_tenant(2)
    dp.set_rules([Rule(1)])
    seen = {}

    def during():
        time.sleep(0.1)
        dp.set_rules([Rule(2)])
        seen["t1"] = dp.tenant_stats(1, latency=False).rx

    run(dp, [Flow(udp_frame(), rate_pps=50_000)], 0.3, during)
    one, two = dp.tenant_stats(1), dp.tenant_stats(2)
    assert seen["t1"] > 0
    assert one.rx == seen["t1"]  # nothing classified to 1 after the swap
    assert two.rx > 0
    assert one.rx + two.rx == dp.flow_stats(0)[0]
    assert dp.global_stats().unknown == 0


def test_add_tenant_while_running(dp_factory):
    dp = dp_factory("cycles")
    dp.add_tenant(1, share=0.5)
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(2, ip_dst="10.0.0.2")])

    def during():
        time.sleep(0.1)
        dp.add_tenant(2, share=0.5)

    flows = [Flow(udp_frame("10.0.0.1"), rate_pps=20_000),
             Flow(udp_frame("10.0.0.2"), rate_pps=20_000)]
    run(dp, flows, 0.3, during)
    two = dp.tenant_stats(2)
    assert dp.global_stats().unknown > 0  # before it existed
    assert two.completed > 0 and two.dropped == 0
    assert dp.global_stats().unknown + two.rx == dp.flow_stats(1)[0]


def test_reset_stats(dp_factory):
    dp = dp_factory("cycles")
    dp.add_tenant(1, share=0.5)
    dp.set_rules([Rule(1, ip_dst="10.0.0.1")])
    run(dp, [Flow(udp_frame("10.0.0.1"), rate_pps=20_000),
             Flow(udp_frame("10.0.0.9"), rate_pps=1_000)], 0.1)
    st, g = dp.tenant_stats(1), dp.global_stats()
    assert st.completed > 0 and st.latency.count > 0 and st.cycles > 0
    assert g.rx > 0 and g.unknown > 0 and g.loops > 0
    dp.reset_stats()
    st, g = dp.tenant_stats(1), dp.global_stats()
    assert (st.rx, st.tx, st.completed, st.dropped, st.cycles, st.lent_cycles, st.throttles) == \
        (0,) * 7
    assert st.latency.count == 0
    assert math.isnan(st.latency.percentile(50))
    assert (g.rx, g.unknown, g.malformed, g.loops, g.busy_loops, g.busy_cycles,
            g.total_cycles) == (0,) * 7


def test_close_twice_is_harmless(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1)
    dp.close()
    dp.close()  # and the fixture closes it a third time


USE_AFTER_CLOSE = """
from datapath import Datapath, IsolaneError
dp = Datapath("fifo")
dp.add_tenant(1)
dp.close()
raised = 0
for call in (lambda: dp.tenant_stats(1), lambda: dp.global_stats(), lambda: dp.add_tenant(2)):
    try:
        call()
    except IsolaneError:
        raised += 1
print("survived" if raised == 3 else f"only {raised} of 3 calls raised")
"""


def test_use_after_close_raises_instead_of_crashing():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", USE_AFTER_CLOSE], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "survived" in r.stdout, (r.returncode, r.stderr[-500:])


def test_pkt_rate_limits_the_live_loop_to_rate_plus_burst(dp_factory):
    # packets are charged after every slice: a run stage of 32 cheap
    # packets must not overdraw a one-packet bucket
    dp = dp_factory("pkt_rate")
    dp.add_tenant(1, handler="echo", pkt_rate=10, pkt_burst=1)
    dp.set_rules([Rule(1, ip_dst="10.0.0.1")])
    dp.use_mem_backend([Flow(udp_frame(), rate_pps=10_000)], duration_s=0.3)
    t0 = time.monotonic()
    with dp.running():
        dp.wait_generator(poll_s=0.01)
        st = dp.tenant_stats(1, latency=False)
        elapsed_s = time.monotonic() - t0
    assert 1 <= st.completed <= 1 + 10 * elapsed_s + 1
    assert st.drops["queue_full"] > 0


def test_credit_over_the_cap_is_forfeited_and_counted(dp_factory):
    dp = dp_factory("cycles")
    dp.add_tenant(1, handler="echo", share=0.5, cap_us=20)
    dp.set_rules([Rule(1, ip_dst="10.0.0.1")])
    run(dp, [Flow(udp_frame(), rate_pps=10_000)], duration_s=0.2)
    st = dp.tenant_stats(1, latency=False)
    # half a core for 0.2 s is far more than a few thousand echoes use
    assert st.forfeited > 0.5 * HZ * 0.1
    assert 0 < st.balance <= 20e-6 * HZ + 1


def test_probe_cost_is_capped(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1, handler="spin")
    dp.set_rules([Rule(1, ip_dst="10.0.0.1")])
    frame = bytearray(udp_frame(cost_ns=0))
    # a probe asking for 4.29 s: the handler must not hold the core that long
    frame[42 + 4:42 + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    t0 = time.monotonic()
    verdict, tenant, _ = dp.process(bytes(frame))
    assert verdict == "tx" and tenant == 1
    assert time.monotonic() - t0 < lib.DP_SPIN_MAX_NS / 1e9 + 1.0
