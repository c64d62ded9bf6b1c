"""The tenant slow path: passed packets out of the loop, frames sent back in.

In the fast path (mem backend): XDP_PASS reaches the tenant's ring, a full
ring drops and counts, frames sent through it go out through the backend
and are charged to the tenant, and a tenant out of budget waits. Through
SlowPathHub: the endpoint's owner and mode, a client running as the
tenant's uid receives passed packets (kind 1) and ringbuf records (kind 2)
and sends frames (kind 3), another uid cannot connect, and a tenant that
does not read loses only its own messages. On a veth pair (afxdp backend):
kv's handler passes a cache miss, tenants/kv/app.py running as the tenant
answers it, and the answer reaches the peer.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from control.slowpath import (KIND_PASSED, KIND_RINGBUF, SlowPathClient, SlowPathHub, pack,
                              unpack)
from datapath import Flow, Rule
from datapath.errors import ConfigError, NotFoundError
from datapath.probe import tcp_frame, udp_frame

REPO = Path(__file__).resolve().parent.parent
TENANT_UID, TENANT_GID, OTHER_UID = 40123, 40123, 40124
H_IP = "10.0.0.1"


def _wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.005)
    return pred()


def _passing_tenant(dp, tenant=1, ip=H_IP):
    """A tenant whose native handler (udp_echo) passes everything not UDP."""
    dp.add_tenant(tenant, handler="udp_echo", share=0.5, cap_us=100)
    return Rule(tenant, ip_dst=ip)


def _settle(dp):
    """After the generator: waits until the loop has taken every packet it
    sent (the RX ring is empty) and run them all (the queues are empty)."""
    dp.wait_generator(poll_s=0.01)
    arrived = sum(dp.flow_stats(i).sent - dp.flow_stats(i).dropped for i in range(len(dp.flows)))
    assert _wait(lambda: dp.global_stats().rx == arrived) and dp.drain(timeout_s=10)


def _tcp_flows(*dsts, rate_pps=2000.0):
    return [Flow(tcp_frame(dst, sport=1000 + i), rate_pps=rate_pps, arrival="uniform")
            for i, dst in enumerate(dsts)]


# ---------------------------------------------------------------- the fast path

def test_passed_packets_reach_the_ring_only_when_attached(dp_factory):
    dp = dp_factory("cycles")
    dp.set_rules([_passing_tenant(dp)])
    frame = tcp_frame(H_IP, sport=1000)
    for phase in ("before", "attached", "detached"):
        dp.reset_stats()
        dp.use_mem_backend(_tcp_flows(H_IP, rate_pps=1000.0), duration_s=0.2)
        with dp.running():
            _settle(dp)
        st = dp.tenant_stats(1, latency=False)
        assert st.passed == dp.flow_stats(0).sent > 0
        if phase != "attached":
            # no slow path: dropped and counted
            assert st.drops["no_slowpath"] == st.passed and st.slowpath_delivered == 0
            assert st.completed == 0
            if phase == "before":
                dp.attach_slowpath(1, depth=1024)
            continue
        got = dp.slowpath_read(1, max_frames=10_000)
        assert st.slowpath_delivered == len(got) == st.passed
        assert st.drops["no_slowpath"] == st.drops["slowpath_full"] == 0
        assert all(f == frame for f in got)  # the frame as the handler left it: unchanged
        assert st.completed == st.passed  # delivered packets complete
        dp.detach_slowpath(1)
    with pytest.raises(NotFoundError):
        dp.slowpath_read(1)


def test_a_full_ring_drops_and_counts(dp_factory):
    dp = dp_factory("fifo")
    dp.set_rules([_passing_tenant(dp)])
    dp.attach_slowpath(1, depth=4)
    dp.use_mem_backend([Flow(tcp_frame(H_IP), arrival="saturate")], duration_s=0.02)
    with dp.running():
        _settle(dp)
    st = dp.tenant_stats(1, latency=False)
    sent = dp.flow_stats(0).sent
    assert st.passed == sent > 4
    assert st.slowpath_delivered == 4 and st.drops["slowpath_full"] == sent - 4
    assert dp.slowpath_pending(1) == (4, 0)
    assert len(dp.slowpath_read(1)) == 4 and dp.slowpath_read(1) == []


def test_attach_and_send_errors(dp_factory):
    dp = dp_factory("fifo")
    dp.add_tenant(1, handler="drop")
    with pytest.raises(NotFoundError):
        dp.attach_slowpath(9)
    with pytest.raises(ConfigError):
        dp.attach_slowpath(1, depth=3)
    with pytest.raises(NotFoundError):
        dp.slowpath_send(1, udp_frame())
    dp.attach_slowpath(1, depth=2)
    with pytest.raises(ConfigError):
        dp.attach_slowpath(1)
    with pytest.raises(ConfigError):
        dp.slowpath_send(1, b"\0" * 13)  # shorter than Ethernet
    with pytest.raises(ConfigError):
        dp.slowpath_send(1, b"\0" * 1729)
    assert dp.slowpath_send(1, udp_frame()) and dp.slowpath_send(1, udp_frame())
    assert not dp.slowpath_send(1, udp_frame())  # the ring holds 2: the caller waits
    assert dp.slowpath_pending(1) == (0, 2)
    dp.detach_slowpath(1)
    with pytest.raises(NotFoundError):
        dp.detach_slowpath(1)


def _send_all(dp, tenant, frames, timeout=10.0):
    end = time.monotonic() + timeout
    for f in frames:
        while not dp.slowpath_send(tenant, f):
            assert time.monotonic() < end, "the loop stopped taking slow-path frames"
            time.sleep(0.0005)


def test_sent_frames_go_out_through_the_backend_charged_to_the_tenant(dp_factory):
    dp = dp_factory("cycles")
    dp.add_tenant(1, handler="drop", share=0.5, cap_us=100)
    dp.add_tenant(2, handler="drop", share=0.5, cap_us=100)
    dp.set_rules([Rule(2, ip_dst="10.0.0.2")])
    dp.attach_slowpath(1, depth=64)
    # the generator feeds tenant 2 only; tenant 1 receives nothing
    dp.use_mem_backend([Flow(udp_frame("10.0.0.2"), rate_pps=1000.0)], duration_s=1.0)
    n = 1000  # many more than the mem backend's spare frames: they come back
    with dp.running():
        _send_all(dp, 1, [udp_frame("10.9.9.9", sport=i) for i in range(n)])
        assert _wait(lambda: dp.tenant_stats(1, latency=False).slowpath_sent == n)
        assert dp.slowpath_pending(1) == (0, 0)
    st = dp.tenant_stats(1, latency=False)
    assert st.rx == 0 and st.slowpath_sent == n and st.dropped == 0
    assert st.cycles > 0  # the intervention point: its sends cost it time
    assert dp.tenant_stats(2, latency=False).rx > 0


def test_a_tenant_out_of_budget_waits_to_send(dp_factory):
    dp = dp_factory("pkt_rate")
    dp.add_tenant(1, handler="drop", pkt_rate=10.0, pkt_burst=5.0)
    dp.attach_slowpath(1, depth=64)
    dp.use_mem_backend([Flow(udp_frame("10.0.0.2"), rate_pps=100.0)], duration_s=1.0)
    t0 = time.monotonic()
    with dp.running():
        for i in range(50):
            assert dp.slowpath_send(1, udp_frame("10.9.9.9", sport=i))
        time.sleep(0.3)
    elapsed = time.monotonic() - t0
    st = dp.tenant_stats(1, latency=False)
    pending = dp.slowpath_pending(1)[1]
    # its credit (5, and 10 a second) lets frames out while it has any; a
    # burst may overdraw by one batch (32), the debt then waits for credit,
    # and so do the rest of its frames, in its own ring
    assert 5 <= st.slowpath_sent <= 5 + 10 * elapsed + 32 and st.slowpath_sent < 50
    assert pending == 50 - st.slowpath_sent and st.balance < 1  # not a packet of credit left


# ---------------------------------------------------------------- framing

def test_framing_is_the_contracts():
    m = pack(3, b"abc")
    assert m == struct.pack("<BxHI", 3, 0, 3) + b"abc"
    assert unpack(m) == (3, b"abc")
    with pytest.raises(ValueError):
        unpack(m[:-1])
    with pytest.raises(ValueError):
        unpack(b"\x01\0\0")


# ---------------------------------------------------------------- the hub

@pytest.fixture(scope="module")
def tenant_tree():
    """What a tenant's process runs, copied where any uid can read it (a
    fresh clone may sit in a 0700 home): control/slowpath_client.py and
    tenants/kv/app.py, in the repository's layout."""
    d = Path(tempfile.mkdtemp(prefix="sp-tree-", dir="/tmp"))
    (d / "control").mkdir()
    (d / "control" / "__init__.py").write_text("")
    shutil.copy(REPO / "control" / "slowpath_client.py", d / "control")
    (d / "tenants" / "kv").mkdir(parents=True)
    shutil.copy(REPO / "tenants" / "kv" / "app.py", d / "tenants" / "kv")
    for p in [d, *d.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def state_dir():
    """A state directory other uids may traverse (tmp_path's parents are 0700)."""
    d = tempfile.mkdtemp(prefix="sp-state-", dir="/tmp")
    os.chmod(d, 0o711)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _need_root():
    if os.geteuid() != 0:
        pytest.fail("needs root: endpoints owned by other uids, clients running as them")


CLIENT = r"""
import json, sys
from control.slowpath_client import SlowPathClient
path, want, reply = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
try:
    c = SlowPathClient(path)
except OSError as e:
    print(json.dumps({"error": e.errno}), flush=True)
    sys.exit(0)
print(json.dumps({"ready": True}), flush=True)
got = []
while len(got) < want:
    m = c.recv(timeout=10)
    if m is None:
        break
    got.append([m[0], m[1].hex()])
if reply:
    c.send_frame(reply)
print(json.dumps({"got": got}), flush=True)
"""


def _as_tenant(uid, gid, tree, *argv):
    """A process running as uid/gid (no supplementary groups) that sees only
    the tenant's copy of the client (tenant_tree)."""
    return subprocess.Popen(["/usr/bin/python3", *map(str, argv)], user=uid, group=gid,
                            extra_groups=[], cwd="/", env={"PYTHONPATH": str(tree)},
                            stdout=subprocess.PIPE, text=True)


def _client_as(uid, gid, tree, path, want=0, reply=b""):
    return _as_tenant(uid, gid, tree, "-c", CLIENT, path, want, reply.hex())


def _line(proc):
    line = proc.stdout.readline()
    assert line, f"client exited ({proc.wait(timeout=5)}) without a word"
    return json.loads(line)


@pytest.mark.integration
def test_endpoint_owner_mode_and_who_may_connect(dp_factory, state_dir, tenant_tree):
    _need_root()
    dp = dp_factory("fifo")
    dp.add_tenant(1, handler="drop")
    with SlowPathHub(dp, state_dir) as hub:
        path = hub.add_tenant(1, "alpha", uid=TENANT_UID, gid=TENANT_GID)
        assert path == state_dir / "slowpath" / "alpha.sock"
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (TENANT_UID, TENANT_GID, 0o660)
        assert os.stat(state_dir / "slowpath").st_mode & 0o777 == 0o711
        stranger = _client_as(OTHER_UID, OTHER_UID, tenant_tree, path)
        assert _line(stranger) == {"error": errno.EACCES}
        owner = _as_tenant(TENANT_UID, TENANT_GID, tenant_tree, "-c", NEVER_READ, path)
        assert _line(owner) == {"ready": True}
        assert _wait(lambda: hub.stats(1)["clients"] == 1)
        owner.kill()
        owner.wait()
        with pytest.raises(ConfigError):
            hub.add_tenant(1, "alpha")
        hub.remove_tenant(1)
        assert not path.exists()
        with pytest.raises(NotFoundError):
            dp.slowpath_read(1)


@pytest.mark.integration
def test_passed_packets_reach_the_tenants_client_and_its_frame_goes_out(dp_factory, state_dir,
                                                                       tenant_tree):
    _need_root()
    dp = dp_factory("cycles")
    dp.set_rules([_passing_tenant(dp)])
    frame = tcp_frame(H_IP, sport=1000)
    reply = udp_frame("10.0.0.2", 9, src=H_IP, size=80)
    dp.use_mem_backend(_tcp_flows(H_IP, rate_pps=2000.0), duration_s=0.25)
    with SlowPathHub(dp, state_dir) as hub:
        path = hub.add_tenant(1, "alpha", uid=TENANT_UID, gid=TENANT_GID)
        client = _client_as(TENANT_UID, TENANT_GID, tenant_tree, path, want=20, reply=reply)
        assert _line(client) == {"ready": True}
        assert _wait(lambda: hub.stats(1)["clients"] == 1)
        with dp.running():
            got = _line(client)["got"]
            assert _wait(lambda: dp.tenant_stats(1, latency=False).slowpath_sent == 1)
            dp.wait_generator(poll_s=0.01)
        client.wait(timeout=5)
        assert got == [[KIND_PASSED, frame.hex()]] * 20
        st, hs = dp.tenant_stats(1, latency=False), hub.stats(1)
        assert hs["sent"] == 1 and hs["rejected"] == 0 and hs["delivered"] >= 20
        # every passed packet is accounted for: delivered, or dropped (the
        # client left after 20; the ring overflowed while the pump lagged)

        def accounted():
            s = hub.stats(1)
            return s["delivered"] + s["dropped"] + s["ring_dropped"] == st.passed

        assert _wait(accounted), (hub.stats(1), st.passed)
        assert st.slowpath_sent == 1 and st.drops["tx_full"] == 0


def test_the_pump_survives_a_tenant_detached_behind_its_back(dp_factory, state_dir):
    dp = dp_factory("fifo")
    dp.add_tenant(1, handler="drop")
    dp.add_tenant(2, handler="drop")
    dp.use_mem_backend([Flow(udp_frame("10.0.0.9"), rate_pps=100.0)], duration_s=1.0)
    with SlowPathHub(dp, state_dir) as hub, dp.running():
        hub.add_tenant(1, "one")
        with SlowPathClient(hub.add_tenant(2, "two")) as client:
            dp.detach_slowpath(1)
            assert _wait(lambda: hub.stats(1)["errors"] > 0)
            client.send_frame(udp_frame("10.9.9.9"))  # the other tenant is still served
            assert _wait(lambda: dp.tenant_stats(2, latency=False).slowpath_sent == 1)
        hub.remove_tenant(1)
        assert hub.stats(2)["sent"] == 1


PASSLOG = """
#include <isolane.h>

BPF_RINGBUF_OUTPUT(events, 1);

/* logs every packet's length to the slow path, and passes the packet too */
int passlog(struct xdp_md *ctx)
{
	void *data = isolane_data(ctx);
	void *data_end = isolane_data_end(ctx);
	__u32 len = data_end - data;

	events.ringbuf_output(&len, sizeof(len), 0);
	return XDP_PASS;
}
"""


@pytest.mark.integration
def test_ringbuf_records_arrive_as_kind_2(dp_factory, state_dir, tmp_path):
    from ebpf import build
    from ebpf.engines import load_interp

    src = tmp_path / "passlog.c"
    src.write_text(PASSLOG)
    prog = build(src)
    loaded = load_interp(prog)
    dp = dp_factory("fifo")
    dp.add_tenant(1, handler="drop")
    dp.set_rules([Rule(1, ip_dst=H_IP)])
    dp.set_program(1, loaded.vm, bound_ns=int(prog.bound_cycles / 2.0))
    frame = udp_frame(H_IP, size=100)
    dp.use_mem_backend([Flow(frame, rate_pps=500.0, arrival="uniform")], duration_s=0.1)
    with SlowPathHub(dp, state_dir) as hub:
        path = hub.add_tenant(1, "logger", ringbuf_maps=[loaded.maps["events"]])
        with SlowPathClient(path) as client:
            assert _wait(lambda: hub.stats(1)["clients"] == 1)
            with dp.running():
                _settle(dp)
                n = dp.flow_stats(0).sent
                got = [client.recv(timeout=2) for _ in range(2 * n)]
    assert n >= 40
    kinds = [m[0] for m in got]
    assert kinds.count(KIND_PASSED) == kinds.count(KIND_RINGBUF) == n
    assert {m[1] for m in got if m[0] == KIND_RINGBUF} == {struct.pack("<I", len(frame))}
    assert {m[1] for m in got if m[0] == KIND_PASSED} == {frame}


READ_ALL = r"""
import json, sys
from control.slowpath_client import SlowPathClient
c = SlowPathClient(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
n = 0
while c.recv(timeout=3) is not None:
    n += 1
print(json.dumps({"got": n}), flush=True)
"""

NEVER_READ = r"""
import json, sys, time
from control.slowpath_client import SlowPathClient
c = SlowPathClient(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
time.sleep(60)
"""


@pytest.mark.integration
def test_a_tenant_that_does_not_read_loses_only_its_own_messages(dp_factory, state_dir,
                                                                tenant_tree):
    _need_root()
    dp = dp_factory("fifo")
    dp.set_rules([_passing_tenant(dp, 1, "10.0.0.1"), _passing_tenant(dp, 2, "10.0.0.2")])
    dp.use_mem_backend(_tcp_flows("10.0.0.1", "10.0.0.2", rate_pps=2000.0), duration_s=0.5)
    procs = []
    try:
        with SlowPathHub(dp, state_dir, depth=1024) as hub:
            # the lazy tenant's socket holds a few dozen messages, the busy
            # one's a few thousand (slack for a reader on a loaded machine)
            for tenant, name, script, sndbuf in ((1, "lazy", NEVER_READ, 16384),
                                                 (2, "busy", READ_ALL, 4 << 20)):
                path = hub.add_tenant(tenant, name, uid=TENANT_UID + tenant,
                                      gid=TENANT_GID + tenant, sndbuf=sndbuf)
                procs.append(_as_tenant(TENANT_UID + tenant, TENANT_GID + tenant, tenant_tree,
                                        "-c", script, path))
                assert _line(procs[-1]) == {"ready": True}
            assert _wait(lambda: hub.stats(1)["clients"] == hub.stats(2)["clients"] == 1)
            with dp.running():
                _settle(dp)
                got = _line(procs[1])["got"]  # once it has heard nothing for 3 s
            st1, st2 = dp.tenant_stats(1, latency=False), dp.tenant_stats(2, latency=False)

            def accounted():
                s = hub.stats(1)
                return s["delivered"] + s["dropped"] + s["ring_dropped"] == st1.passed

            assert _wait(accounted)  # ... every message of the lazy tenant counted
            lazy, busy = hub.stats(1), hub.stats(2)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert st2.passed > 500 and got == st2.passed  # every one of its messages
    assert busy["delivered"] == got and busy["dropped"] == busy["ring_dropped"] == 0
    assert lazy["dropped"] > 0  # its socket filled: its own loss
    assert lazy["delivered"] < st1.passed


# ---------------------------------------------------------------- afxdp, veth

KV = REPO / "tenants" / "kv"
G_IP_V, H_IP_V = "10.98.0.2", "10.98.0.1"


@pytest.mark.integration
def test_kv_miss_answered_by_the_tenant_app_over_afxdp(dp_factory, state_dir, tenant_tree):
    _need_root()
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from scapy.layers.inet import IP, UDP

    from ebpf import build
    from ebpf.engines import load_interp
    from ebpf.steer import Steer
    from vethpair import VethPair

    from ebpf.fixtures import load_table

    msg = load_table(KV).msg  # kv's wire format, as its fixtures write it

    prog = build(KV)
    loaded = load_interp(prog)
    net = VethPair(f"sp-{os.getpid()}", H_IP_V, G_IP_V, host_if="sph", peer_if="spp",
                   expect_timeout=3.0)
    steer = app = None
    try:
        dp = dp_factory("cycles")
        dp.add_tenant(1, handler="drop", share=0.5, cap_us=200)
        dp.set_rules([Rule(1, ip_dst=H_IP_V, proto="udp", dport=11211)])
        dp.set_program(1, loaded.vm, bound_ns=int(prog.bound_cycles / 2.0))
        dp.use_afxdp_backend(net.if_host, queue=0, n_frames=1024, ring_size=256,
                             netns=net.ns_host)
        steer = Steer(net.if_host, netns=net.ns_host, mode="skb")
        steer.steer_all()
        steer.bind_xsk(0, dp.afxdp_fd)
        store = state_dir / "kv-store.json"
        store.write_text(json.dumps({"gamma": "from-the-app"}))
        os.chmod(store, 0o644)
        with SlowPathHub(dp, state_dir) as hub, dp.running():
            path = hub.add_tenant(1, "kv", uid=TENANT_UID, gid=TENANT_GID)
            app = _as_tenant(TENANT_UID, TENANT_GID, tenant_tree,
                             tenant_tree / "tenants" / "kv" / "app.py", "--endpoint", path,
                             "--store", store, "--limit", 2)
            assert app.stdout.readline().startswith("kv app: serving misses from 1 keys")
            assert _wait(lambda: hub.stats(1)["clients"] == 1)
            net.drain()

            def answer_to(sport, payload):
                return lambda p: (UDP in p and p[UDP].sport == 11211 and p[UDP].dport == sport
                                  and p[IP].src == H_IP_V and p[IP].dst == G_IP_V
                                  and bytes(p[UDP].payload) == payload)

            # a hit is answered in the fast path ...
            net.send(net.udp(5001, 11211, msg(b"S", b"alpha", b"fast")))
            assert net.expect(answer_to(5001, msg(b"S", b"alpha"))) is not None
            net.send(net.udp(5002, 11211, msg(b"G", b"alpha")))
            assert net.expect(answer_to(5002, msg(b"G", b"alpha", b"fast"))) is not None
            # ... a miss by the tenant's application, from its own store
            net.send(net.udp(5003, 11211, msg(b"G", b"gamma")))
            hit = net.expect(answer_to(5003, msg(b"G", b"gamma", b"from-the-app")))
            assert hit is not None, "the app's answer did not reach the peer"
            net.send(net.udp(5004, 11211, msg(b"G", b"nope")))
            assert net.expect(answer_to(5004, msg(b"G", b"nope", status=1))) is not None
            assert app.wait(timeout=5) == 0

            def counted():
                st = dp.tenant_stats(1, latency=False)
                return (st.passed, st.slowpath_delivered, st.slowpath_sent, st.tx,
                        hub.stats(1)["sent"])

            assert _wait(lambda: counted() == (2, 2, 2, 2, 2)), counted()
            # the IPv4 checksum the app computed is the one scapy computes
            fresh = hit[IP].copy()
            del fresh.chksum
            assert hit[IP].chksum == IP(bytes(fresh)).chksum
    finally:
        if app is not None and app.poll() is None:
            app.kill()
        if steer is not None:
            steer.detach()
        net.close()
