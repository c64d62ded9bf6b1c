"""bench/loadgen.py over a real veth pair, against isolane's afxdp datapath.

A testbed of our own (control.testbed with prefix lg-<pid>-: namespaces
lg-<pid>-gen and lg-<pid>-host, veth lg-<pid>-gen0 <-> lg-<pid>-host0,
10.96.0.1 <-> 10.96.0.2) made once for the module. The generator's C thread
enters the gen namespace and sends through AF_XDP on its veth end; the
datapath's AF_XDP socket sits on the host end behind the steering program.
Rates are low and drains generous: these tests check what comes back and
how it is counted, never how fast. A run that must get every packet back is
tried up to three times: on a shared 2-core machine the host can keep a
loop thread off its core for longer than any drain (seen here: 0.3 s), and
those packets are honestly lost.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402

from control.testbed import Testbed, TestbedConfig  # noqa: E402
from datapath import Datapath, Rule, TenantConfig  # noqa: E402
from datapath.errors import BackendError  # noqa: E402
from ebpf.steer import Steer, attached_programs  # noqa: E402

TAG = f"lg-{os.getpid() % 10000}-"
TESTBED_TOML = f"""\
prefix = "{TAG}"
subnet = "10.96.0.0/16"
state_file = "/run/isolane/{TAG}testbed.json"
"""
TRIES = 3
ECHO_PORT, SPIN_PORT, DEAD_PORT = 7, 9, 11
ECHO, SPIN = 1, 2


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("test_loadgen needs root (netns, veth, XDP, AF_XDP)")
    path = tmp_path_factory.mktemp("lg") / "testbed.toml"
    path.write_text(TESTBED_TOML)
    config = TestbedConfig.load(path)
    tb = Testbed(config)
    tb.up()
    try:
        yield config, path
    finally:
        tb.down()


@pytest.fixture
def echo_host(bed):
    """The datapath on the host end: udp_echo on port 7, spin (the cost each
    probe asks for) on port 9. Port 11 matches no steering rule: the kernel
    gets it and has no listener, so nothing answers."""
    config, _ = bed
    host = config.pair_specs()[0].host
    dp = Datapath(policy="fifo")
    steer = None
    try:
        dp.add_tenant(ECHO, TenantConfig(handler="udp_echo", queue_cap=1024))
        dp.add_tenant(SPIN, TenantConfig(handler="spin", queue_cap=1024))
        dp.set_rules([Rule(ECHO, ip_dst=host.ip, proto="udp", dport=ECHO_PORT),
                      Rule(SPIN, ip_dst=host.ip, proto="udp", dport=SPIN_PORT)])
        dp.use_afxdp_backend(host.ifname, 0, n_frames=4096, ring_size=1024, mode="skb",
                             netns=host.netns)
        steer = Steer(host.ifname, netns=host.netns, mode="skb")
        for port in (ECHO_PORT, SPIN_PORT):
            steer.add_rule(daddr=host.ip, proto="udp", dport=port)
        steer.bind_xsk(0, dp.afxdp_fd)
        with dp.running():
            yield dp, steer
    finally:
        dp.close()
        if steer is not None:
            steer.detach()


def _wire(bed):
    return loadgen.Wire.testbed(bed[0])


def _no_loss_run(flows, duration, wire, dp=None):
    """loadgen.run until nothing is lost (at most TRIES times); the last
    result, and the datapath's per-tenant tx during that run."""
    for _ in range(TRIES):
        before = {t: dp.tenant_stats(t, latency=False) for t in (ECHO, SPIN)} if dp else {}
        res = loadgen.run(flows, duration, wire, drain_s=0.5)
        after = {t: dp.tenant_stats(t, latency=False) for t in (ECHO, SPIN)} if dp else {}
        if all(f.lost == 0 for f in res.flows.values()):
            break
    return res, before, after


def test_every_packet_back_at_a_low_rate(bed, echo_host):
    dp, steer = echo_host
    wire = _wire(bed)
    spin_ns = 20_000
    flows = [loadgen.LoadFlow("victim", wire.dst_ip, ECHO_PORT, 3000),
             loadgen.LoadFlow("aggressor", wire.dst_ip, SPIN_PORT, 400, cost_ns=spin_ns,
                              arrival="onoff", on_us=20_000, off_us=20_000, size=128),
             loadgen.LoadFlow("steady", wire.dst_ip, ECHO_PORT, 1000, arrival="uniform")]
    res, before, after = _no_loss_run(flows, 0.6, wire, dp)

    assert res.stats["unmatched"] == 0 and res.stats["flows_full"] == []
    for name, expect in (("victim", 1800), ("aggressor", 120), ("steady", 600)):
        f = res.flows[name]
        assert 0.6 * expect < f.sent < 1.4 * expect, (name, f.sent)
        assert f.completed == f.sent and f.lost == 0 and f.duplicates == 0, name
        assert np.isfinite(f.latency_ns).all()
        # sane: positive, below the drain, ordered percentiles
        assert f.latency_ns.min() > 0 and f.latency_ns.max() < 0.6e9
        p = f.percentiles_us
        assert 0 < p["p50_us"] <= p["p99_us"] <= p["p999_us"] < 1e6
        # the windows and the HdrHistogram hold every packet
        assert sum(w["sent"] for w in f.series) == f.sent
        assert all(w["lost"] == 0 for w in f.series)
        assert f.hdr.get_total_count() == f.sent
        assert f.hdr.get_value_at_percentile(50) == pytest.approx(p["p50_us"] * 1e3, rel=0.01)
    # intended send times: increasing per flow, and uniform arrivals 1 ms apart
    steady = res.flows["steady"].t_sent_s
    assert np.all(np.diff(steady) > 0)
    assert np.median(np.diff(steady)) == pytest.approx(1e-3, rel=0.01)
    # on/off: nothing intended during the off periods (20 ms on, 20 ms off)
    phase = res.flows["aggressor"].t_sent_s % 0.040
    assert (phase < 0.020 + 1e-4).all()

    # the datapath echoed each packet once, and the spin tenant burned the
    # cost each aggressor probe asked for
    assert after[ECHO].tx - before[ECHO].tx == res.flows["victim"].sent + res.flows["steady"].sent
    assert after[SPIN].tx - before[SPIN].tx == res.flows["aggressor"].sent
    spun = after[SPIN].cycles - before[SPIN].cycles
    assert spun >= res.flows["aggressor"].sent * spin_ns * 1e-9 * dp.tsc_hz


def test_unanswered_packets_are_lost_and_infinitely_late(bed, echo_host):
    wire = _wire(bed)
    flows = [loadgen.LoadFlow("answered", wire.dst_ip, ECHO_PORT, 2000),
             loadgen.LoadFlow("dead", wire.dst_ip, DEAD_PORT, 2000)]
    res = loadgen.run(flows, 0.4, wire, drain_s=0.3)
    for _ in range(TRIES - 1):  # the dead flow's loss is the point; the other's is not
        if res.flows["answered"].lost == 0:
            break
        res = loadgen.run(flows, 0.4, wire, drain_s=0.3)
    ok, dead = res.flows["answered"], res.flows["dead"]
    assert ok.sent > 400 and ok.lost == 0
    assert dead.sent > 400 and dead.completed == 0 and dead.lost == dead.sent
    assert math.isinf(dead.p50_us) and np.isinf(dead.latency_ns).all()
    assert all(w["lost"] == w["sent"] for w in dead.series)
    # lost packets sit at the HdrHistogram's ceiling, not outside it
    assert dead.hdr.get_total_count() == dead.sent
    assert dead.hdr.get_value_at_percentile(1) >= loadgen.HDR_CEILING_NS * 0.99
    r = dead.tenant_result()
    assert r["dropped"] == r["sent"] == dead.sent and r["completed"] == 0


def test_a_tail_among_the_lost_is_infinite():
    """Nearest rank over everything sent: 2% lost puts p99 at infinity."""
    lat = np.array([1.0] * 98 + [np.inf] * 2)
    assert loadgen._percentile(np.sort(lat), 98.0) == 1.0
    assert math.isinf(loadgen._percentile(np.sort(lat), 99.0))
    t_sent = np.array([10, 20, 30], dtype=np.uint64)
    t_recv = np.array([15, 0, 70], dtype=np.uint64)
    got = loadgen._latency_ns(t_sent, t_recv, 2.0)
    assert got[0] == 10.0 and math.isinf(got[1]) and got[2] == 80.0


def _contagion_tenant_keys() -> set[str]:
    """The per-tenant keys bench/contagion.py writes, from a real (tiny) run."""
    import contagion

    from datapath import Flow
    from datapath.probe import udp_frame

    dp = Datapath(policy="fifo")
    try:
        dp.add_tenant(1, TenantConfig(handler="echo"))
        dp.set_rules([Rule(1)])
        dp.use_mem_backend([Flow(udp_frame(), rate_pps=1000)], duration_s=0.02)
        with dp.running():
            dp.wait_generator(poll_s=0.01)
        return set(contagion.tenant_result(dp, 1, 0))
    finally:
        dp.close()


def test_cli_json_in_contagions_schema_and_hdr(bed, echo_host, tmp_path):
    _, toml = bed
    out, hdr = tmp_path / "lg.json", tmp_path / "lg.hdr"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "loadgen.py"), "--testbed-config", str(toml),
         "--duration", "0.3", "--flow", "name=victim,dport=7,rate=3000",
         "--flow", "name=aggressor,dport=9,rate=500,cost_ns=1000,size=256",
         "--json", str(out), "--hdr", str(hdr)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "victim" in proc.stdout and "p99" in proc.stdout
    data = json.loads(out.read_text())
    keys = _contagion_tenant_keys()
    import contagion

    for name in ("victim", "aggressor"):
        t = data["tenants"][name]
        assert keys <= set(t), keys - set(t)
        assert t["sent"] > 0 and t["completed"] > 0
        assert t["dropped"] == t["sent"] - t["completed"] and t["flow"]["name"] == name
    run = data["runs"][0]
    assert set(run["victim"]) == keys and run["adversary"]
    assert run["victim"]["sent"] == data["tenants"]["victim"]["sent"]
    # contagion's own summary takes these runs as they are
    med = contagion.median_run([run, run])
    assert med["victim"]["p99_us"] == run["victim"]["p99_us"]
    text = hdr.read_text()
    assert "# flow victim" in text and "# flow aggressor" in text and "Percentile" in text


def test_errors_say_what_to_do(bed):
    wire = _wire(bed)
    flow = [loadgen.LoadFlow("x", wire.dst_ip, 7, 1000)]
    with pytest.raises(BackendError, match="no interface nosuch0"):
        loadgen.run(flow, 0.1, dataclasses.replace(wire, ifname="nosuch0"))
    with pytest.raises(BackendError, match="isolane testbed up"):
        loadgen.run(flow, 0.1, dataclasses.replace(wire, netns=TAG + "nosuch"))
    with pytest.raises(loadgen.ConfigError, match="unknown arrival"):
        loadgen.LoadFlow("x", wire.dst_ip, 7, 1000, arrival="bursty")
    # a failed start leaves nothing attached on the generator's interface
    assert attached_programs(wire.ifname, wire.netns) == []


def test_help_explains():
    proc = subprocess.run([sys.executable, str(BENCH / "loadgen.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in ("intended", "FLOW", "arrival", "cost_ns", "--io", "--json", "lost"):
        assert word in proc.stdout, word


def test_afxdp_rate_quick_table(bed, tmp_path):
    _, toml = bed
    out = tmp_path / "rate.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "afxdp_rate.py"), "--quick", "--reps", "1",
         "--duration", "0.3", "--testbed-config", str(toml), "--json", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for word in ("bare", "isolane", "echo", "taken", "ratio", "undisturbed"):
        assert word in proc.stdout, word
    data = json.loads(out.read_text())
    assert len(data["rounds"]) == 4
    assert data["bare_mpps"] > 0 and data["isolane_mpps"] > 0
    # one repetition: the paired ratio is that repetition's two rounds
    sat = {r["kind"]: r["echo_mpps"] for r in data["rounds"] if r["phase"] == "saturation"}
    assert data["ratio"] == pytest.approx(sat["isolane"] / sat["bare"])
    assert {r["kind"] for r in data["rounds"]} == {"bare", "isolane"}
    # every round says how much of it the loop and the generator had their cores
    assert all(0 <= r["loop_taken"] <= 1 and 0 <= r["gen_taken"] <= 1 for r in data["rounds"])
    # the steering program went with it
    host = TestbedConfig.load(toml).pair_specs()[0].host
    assert attached_programs(host.ifname, host.netns) == []


def test_a_killed_generator_leaves_nothing_in_the_way(bed):
    """SIGKILL mid-run leaves the generator's XDP program on its interface;
    the next run removes it (it is ours by name), runs, and detaches."""
    _, toml = bed
    wire = _wire(bed)
    code = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); import loadgen; "
            "from control.testbed import TestbedConfig; "
            f"w = loadgen.Wire.testbed(TestbedConfig.load({str(toml)!r})); "
            "loadgen.run([loadgen.LoadFlow('a', w.dst_ip, 7, 1000)], 30.0, w)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not attached_programs(wire.ifname, wire.netns) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert [p["name"] for p in attached_programs(wire.ifname, wire.netns)] == ["lg_redirect"]
    res = loadgen.run([loadgen.LoadFlow("a", wire.dst_ip, 7, 1000)], 0.2, wire, drain_s=0.1)
    assert res.flows["a"].sent > 100
    assert attached_programs(wire.ifname, wire.netns) == []
