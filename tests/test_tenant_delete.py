"""Deleting a tenant from a live datapath (dp_tenant_del, Datapath.del_tenant)
and the idle mem backend (no flows), on the real loop and mem backend.

What a delete must do: the other tenants keep every packet, the deleted
tenant's queued packets go back to the frame pool (checked by counting the
pool's frames with the loop stopped: `Datapath.mem_pool()`), its queue
slots return to the budget, its id can be added again, and the classifier
never hands a packet to a deleted id (the datapath refuses the delete while
a rule names the tenant)."""
from __future__ import annotations

import errno
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datapath import ConfigError, Flow, NotFoundError, Rule
from datapath._dp import lib
from datapath.probe import udp_frame

pytestmark = pytest.mark.unit

SLOTS = lib.DP_QUEUE_SLOTS


def ip(tid: int) -> str:
    return f"10.0.0.{tid}"


def wait(pred, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while not pred() and time.monotonic() < end:
        time.sleep(0.005)
    return pred()


def settle(dp) -> None:
    """After the generator: the loop took every packet that reached the RX
    ring and ran them all (the queues are empty)."""
    dp.wait_generator(poll_s=0.01)
    arrived = sum(dp.flow_stats(i).sent - dp.flow_stats(i).dropped for i in range(len(dp.flows)))
    assert wait(lambda: dp.global_stats().rx == arrived), "the loop stopped taking packets"
    assert dp.drain(timeout_s=10), "a tenant's queue is stuck (lost by the scheduler?)"


def no_leak(dp) -> None:
    pool = dp.mem_pool()
    assert pool["leaked"] == 0, pool
    assert pool["in_rx"] == 0 and pool["spare_free"] == pool["spares"], pool


# ---------------------------------------------------------------- the API

def test_delete_unknown_tenant(dp_factory):
    dp = dp_factory("fifo")
    with pytest.raises(NotFoundError):
        dp.del_tenant(3)
    assert lib.dp_tenant_del(dp._dp, 3) == -errno.ENOENT
    assert lib.dp_tenant_del(dp._dp, lib.DP_MAX_TENANTS) == -errno.ENOENT


def test_delete_refused_while_a_rule_names_it(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1, handler="echo")
    dp.add_tenant(2, handler="echo")
    dp.set_rules([Rule(1, ip_dst=ip(1)), Rule(2, ip_dst=ip(2))])
    with pytest.raises(ConfigError, match="withdraw") as e:
        dp.del_tenant(1)
    assert e.value.errno == errno.EBUSY
    assert lib.dp_tenant_del(dp._dp, 1) == -errno.EBUSY  # the C side enforces it itself
    assert dp.process(udp_frame(ip(1)))[:2] == ("tx", 1)  # still there, still served
    dp.set_rules([Rule(2, ip_dst=ip(2))])
    dp.del_tenant(1)
    assert 1 not in dp.tenants
    assert dp.process(udp_frame(ip(1)))[:2] == ("unknown", None)
    assert dp.process(udp_frame(ip(2)))[:2] == ("tx", 2)
    with pytest.raises(NotFoundError):
        dp.tenant_stats(1)


def test_withdraw_rules_in_the_same_call(dp_factory):
    dp = dp_factory("cycles")
    dp.add_tenant(1, share=0.5, cap_us=50)
    dp.add_tenant(2, share=0.5, cap_us=50)
    dp.set_rules([Rule(1, ip_dst=ip(1)), Rule(1, ip_dst=ip(3)), Rule(2, ip_dst=ip(2))])
    dp.del_tenant(1, withdraw_rules=True)
    assert dp.rules == [Rule(2, ip_dst=ip(2))]
    assert dp.process(udp_frame(ip(3)))[:2] == ("unknown", None)


def test_queue_slots_return_and_the_id_is_reusable(dp_factory):
    dp = dp_factory("cycles")
    dp.add_tenant(1, queue_cap=SLOTS // 2, share=0.5, cap_us=50)
    dp.add_tenant(2, queue_cap=SLOTS // 2, share=0.5, cap_us=50)
    with pytest.raises(ConfigError) as e:
        dp.add_tenant(3, queue_cap=2)
    assert e.value.errno == errno.ENOSPC
    dp.del_tenant(1)
    dp.add_tenant(3, queue_cap=SLOTS // 2, share=0.5, cap_us=50)  # its slots came back
    dp.del_tenant(3)
    dp.del_tenant(2)
    dp.add_tenant(2, queue_cap=SLOTS, handler="drop", share=0.5, cap_us=50)  # all of them
    dp.set_rules([Rule(2)])
    assert dp.process(udp_frame())[:2] == ("drop", 2)  # the new tenant 2, not the old one


# ---------------------------------------------------------------- live

@pytest.mark.parametrize("policy", ["fifo", "cycles"])
def test_delete_while_traffic_flows(dp_factory, policy):
    """Tenant 2 floods a slow handler (its queue stays full) and is deleted
    mid-run; tenants 1 and 3 lose nothing, tenant 2's backlog goes back to
    the frame pool, and its id, re-added without rules, receives nothing."""
    dp = dp_factory(policy)
    dp.add_tenant(1, handler="echo", share=0.3, cap_us=100)
    dp.add_tenant(2, handler="spin", queue_cap=256, share=0.2, cap_us=50)
    dp.add_tenant(3, handler="echo", share=0.3, cap_us=100)
    dp.set_rules([Rule(t, ip_dst=ip(t)) for t in (1, 2, 3)])
    flows = [Flow(udp_frame(ip(1)), rate_pps=5_000, arrival="uniform"),
             Flow(udp_frame(ip(2), cost_ns=20_000), rate_pps=100_000),
             Flow(udp_frame(ip(3)), rate_pps=5_000, arrival="uniform")]
    dp.use_mem_backend(flows, duration_s=0.6)
    with dp.running():
        assert wait(lambda: dp.tenant_stats(2, latency=False).queue_len > 64)
        before = dp.tenant_stats(2, latency=False)
        dp.del_tenant(2, withdraw_rules=True)
        assert 2 not in dp.tenants
        unknown_at_delete = dp.global_stats().unknown
        time.sleep(0.05)
        assert dp.global_stats().unknown > unknown_at_delete  # its traffic: nobody's now
        dp.add_tenant(2, handler="echo", queue_cap=256, share=0.2, cap_us=50)  # same id, no rules
        settle(dp)
        assert dp.tenant_stats(2).rx == 0  # the classifier never gave it the old rule's packets
    assert before.queue_len > 0
    for i, t in ((0, 1), (2, 3)):
        sent, lost, _ = dp.flow_stats(i)
        s = dp.tenant_stats(t)
        assert lost == 0 and s.dropped == 0
        assert s.rx == s.completed == s.tx == sent > 0
    no_leak(dp)


def test_delete_with_a_slow_path_attached(dp_factory):
    dp = dp_factory("cycles")
    dp.add_tenant(1, handler="udp_echo", share=0.5, cap_us=100)  # passes what is not UDP
    dp.set_rules([Rule(1, ip_dst=ip(1))])
    dp.attach_slowpath(1, depth=64)
    dp.use_mem_backend([], duration_s=1)
    with dp.running():
        assert all(dp.slowpath_send(1, udp_frame(ip(9))) for _ in range(10))
        assert wait(lambda: dp.tenant_stats(1, latency=False).slowpath_sent == 10)
        for _ in range(5):
            dp.slowpath_send(1, udp_frame(ip(9)))
        dp.del_tenant(1, withdraw_rules=True)  # its slow path goes with it
        with pytest.raises(NotFoundError):
            dp.slowpath_send(1, udp_frame(ip(9)))
        with pytest.raises(NotFoundError):
            dp.slowpath_read(1)
        dp.add_tenant(1, handler="udp_echo", share=0.5, cap_us=100)
        dp.attach_slowpath(1, depth=64)  # a new one for the new tenant
        assert dp.slowpath_send(1, udp_frame(ip(9)))
        assert wait(lambda: dp.tenant_stats(1, latency=False).slowpath_sent == 1)
    no_leak(dp)


def test_stats_readers_race_deletes(dp_factory):
    """A reader thread polls a tenant's counters and histogram while the
    tenant is deleted and re-added again and again: each read is either the
    tenant's counters or NotFoundError, never freed memory (run this file
    under AddressSanitizer, `make test-asan`, to see it checked)."""
    import threading

    dp = dp_factory("cycles")
    dp.add_tenant(1, share=0.5, cap_us=50)
    dp.set_rules([Rule(1, ip_dst=ip(1))])
    dp.use_mem_backend([Flow(udp_frame(ip(1)), rate_pps=20_000)], duration_s=5)
    stop, reads, missing = threading.Event(), [0], [0]

    def reader():
        while not stop.is_set():
            try:
                assert dp.tenant_stats(2).queue_len <= 64
                reads[0] += 1
            except NotFoundError:
                missing[0] += 1

    with dp.running():
        th = threading.Thread(target=reader)
        th.start()
        try:
            for _ in range(300):
                dp.add_tenant(2, queue_cap=64, share=0.2, cap_us=50)
                dp.del_tenant(2)
        finally:
            stop.set()
            th.join()
    assert reads[0] + missing[0] > 0 and dp.tenant_stats(1).rx > 0


# ---------------------------------------------------------------- random sequences

IDS = (1, 2, 3, 4)
QCAPS = (256, SLOTS // 4, SLOTS // 2)

ops = st.lists(st.tuples(st.sampled_from(("add", "del", "rules")), st.sampled_from(IDS),
                         st.sampled_from(QCAPS)), min_size=1, max_size=25)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(policy=st.sampled_from(("fifo", "cycles", "pkt_rate")), seq=ops)
def test_random_add_del_sequences_while_running(dp_factory, policy, seq):
    """Against a model of what the datapath holds: every add and delete
    answers as the model says (ENOSPC exactly when the slots are used up),
    and afterwards no surviving tenant's queue is stuck, every packet a
    survivor received completed, and no frame leaked."""
    dp = dp_factory(policy, work_conserving=policy != "fifo")
    budget = dict(share=0.2, cap_us=50, pkt_rate=20_000, pkt_burst=32)
    flows = [Flow(udp_frame(ip(t)), rate_pps=20_000) for t in IDS]
    dp.use_mem_backend(flows, duration_s=0.25 + 0.01 * len(seq), n_frames=1 << 14)
    held: dict[int, int] = {}  # the model: tenant -> queue_cap
    routed: set[int] = set()
    with dp.running():
        for op, tid, qcap in seq:
            if op == "add":
                if tid in held:
                    with pytest.raises(ConfigError):
                        dp.add_tenant(tid, queue_cap=qcap, **budget)
                elif sum(held.values()) + qcap > SLOTS:
                    with pytest.raises(ConfigError) as e:
                        dp.add_tenant(tid, queue_cap=qcap, **budget)
                    assert e.value.errno == errno.ENOSPC
                else:
                    dp.add_tenant(tid, queue_cap=qcap, **budget)
                    held[tid] = qcap
            elif op == "del":
                if tid in held:
                    dp.del_tenant(tid, withdraw_rules=True)
                    del held[tid]
                    routed.discard(tid)
                else:
                    with pytest.raises(NotFoundError):
                        dp.del_tenant(tid)
            elif tid in held:  # route its traffic to it
                routed.add(tid)
                dp.set_rules([Rule(t, ip_dst=ip(t)) for t in sorted(routed)])
            time.sleep(0.005)
        settle(dp)
        for t in held:
            s = dp.tenant_stats(t, latency=False)
            assert s.rx == s.completed + s.dropped and s.queue_len == 0
            if t not in routed:  # no rule named it since it was (re-)added
                assert s.rx == 0, f"tenant {t} got packets of a rule of an earlier tenant {t}"
    no_leak(dp)
    assert set(dp.tenants) == set(held)


# ---------------------------------------------------------------- idle mem backend

def test_mem_backend_without_flows_runs_the_loop(dp_factory):
    dp = dp_factory("cycles")
    dp.add_tenant(1, handler="drop", share=0.5, cap_us=100)
    dp.attach_slowpath(1)
    dp.use_mem_backend([], duration_s=1e-6)
    with dp.running():
        assert dp.generator_done  # there is no generator
        loops = dp.global_stats().loops
        assert wait(lambda: dp.global_stats().loops > loops + 1000)
        assert dp.slowpath_send(1, udp_frame())  # served by the idle loop
        assert wait(lambda: dp.tenant_stats(1, latency=False).slowpath_sent == 1)
    assert dp.global_stats().rx == 0
    no_leak(dp)


@pytest.mark.parametrize("duration", [math.inf, -math.inf, math.nan, 0, -1, 1e10, "1"])
def test_mem_backend_duration_must_be_finite(dp_factory, duration):
    dp = dp_factory("fifo")
    with pytest.raises(ConfigError, match="duration_s"):
        dp.use_mem_backend([], duration_s=duration)
    with pytest.raises(ConfigError, match="duration_s"):
        dp.use_mem_backend([Flow(udp_frame(), rate_pps=1)], duration_s=duration)


def test_c_refuses_an_infinite_duration_too(dp_factory):
    from datapath._dp import ffi
    dp = dp_factory("fifo")
    cfg = ffi.new("struct dp_mem_config *", {"ring_size": 64, "n_frames": 256, "core": -1,
                                             "duration_s": math.inf})
    flows = ffi.new("struct dp_mem_flow[]", 1)
    assert lib.dp_backend_mem(dp._dp, cfg, flows, 0) == -errno.EINVAL
    cfg.duration_s = 1.0
    assert lib.dp_backend_mem(dp._dp, cfg, flows, 0) == 0
