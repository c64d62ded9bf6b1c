"""The afxdp backend on a real veth pair: steered UDP in, udp_echo's reply out.

Two namespaces of our own (isax-<pid>-p: the generator, isax-<pid>-h: the
isolane host) joined by a veth pair, 10.97.0.2/24 (xg, generator) and
10.97.0.1/24 (xh, where Steer attaches in skb mode and the datapath's
AF_XDP socket sits on queue 0, copy mode). Frames are sent and received
on xg with an AF_PACKET socket made inside the generator namespace.

The tests named mq- use a pair with two queues on each end (mqh/mqg): one
socket per queue on one UMEM, native XDP (the only mode in which veth
reports the receive queue), frames sent on a chosen transmit queue of the
peer (VethPair.send(queue=)), and the errors of several queues and modes.
"""
from __future__ import annotations

import errno
import os
import time

import pytest

pytestmark = pytest.mark.integration

from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import ARP, Dot1Q, Ether  # noqa: E402

from datapath import Datapath, Rule, TenantConfig  # noqa: E402
from datapath._dp import ffi, lib  # noqa: E402
from datapath.errors import BackendError, ConfigError  # noqa: E402
from ebpf import steer as steer_mod  # noqa: E402
from ebpf.steer import Steer, attached_programs  # noqa: E402
from vethpair import VethPair, two_queue_pair  # noqa: E402

H_IP, G_IP = "10.97.0.1", "10.97.0.2"
TENANT = 1


@pytest.fixture
def net(request):
    if os.geteuid() != 0:
        pytest.fail("test_afxdp needs root (netns, veth, XDP, AF_XDP)")
    n = VethPair(f"isax-{os.getpid()}", H_IP, G_IP, host_if="xh", peer_if="xg",
                 expect_timeout=2.0)
    request.addfinalizer(n.close)
    return n


def _progs(net):
    return attached_programs(net.if_host, net.ns_host)


def _datapath() -> Datapath:
    dp = Datapath(policy="fifo")
    dp.add_tenant(TENANT, TenantConfig(handler="udp_echo", queue_cap=1024))
    dp.set_rules([Rule(tenant=TENANT)])  # catch-all
    return dp


def _afxdp_stats(dp):
    st = ffi.new("struct dp_afxdp_stats *")
    assert lib.dp_afxdp_stats(dp._dp, st) == 0
    return {k: getattr(st, k) for k in dir(st)}


def _is_echo(net, sport, dport, payload):
    def match(p):
        return (UDP in p and p[UDP].sport == dport and p[UDP].dport == sport
                and p[IP].src == H_IP and p[IP].dst == G_IP
                and p[Ether].src == net.mac_host and p[Ether].dst == net.mac_peer
                and bytes(p[UDP].payload) == payload)
    return match


def _wait(pred, timeout=2.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.01)
    return pred()


def test_udp_echo_through_afxdp(net):
    dp = _datapath()
    steer = None
    try:
        dp.use_afxdp_backend(net.if_host, queue=0, n_frames=1024, ring_size=256, netns=net.ns_host)
        fd = dp.afxdp_fd
        assert fd >= 0
        assert _progs(net) == [], "libxdp loaded its own program"
        steer = Steer(net.if_host, netns=net.ns_host, mode="skb")
        steer.steer_all()
        steer.bind_xsk(0, fd)
        assert [(p["name"], p["mode"]) for p in _progs(net)] == [("isolane_steer", "skb")]
        net.drain()
        with dp.running():
            # UDP echoed by the tenant: MACs, IPs and ports swapped
            for i in range(20):
                payload = b"isolane afxdp %d" % i
                net.send(net.udp(4000 + i, 7, payload))
                reply = net.expect(_is_echo(net, 4000 + i, 7, payload))
                assert reply is not None, f"no echo for datagram {i}"
            # the loop counts a reply after sendto returns: the echo may be
            # here first
            assert _wait(lambda: dp.tenant_stats(TENANT, latency=False).tx == 20)
            assert dp.tenant_stats(TENANT, latency=False).rx == 20
            assert steer.stats()["redirected"] == 20

            # ARP still reaches the kernel, which answers it
            net.send(Ether(src=net.mac_peer, dst="ff:ff:ff:ff:ff:ff")
                     / ARP(op=1, hwsrc=net.mac_peer, psrc=G_IP, pdst=H_IP))
            arp = net.expect(lambda p: ARP in p and p[ARP].op == 2 and p[ARP].psrc == H_IP)
            assert arp is not None and arp[ARP].hwsrc == net.mac_host

            # malformed frames: the steering program hands them to the kernel
            # (Steer.stats()["malformed"]); the datapath never sees them
            before = steer.stats()["malformed"]
            eth = bytes(Ether(src=net.mac_peer, dst=net.mac_host))[:12] + b"\x08\x00"
            net.send(eth + bytes(IP(src=G_IP, dst=H_IP, len=200) / UDP(dport=7)))
            assert _wait(lambda: steer.stats()["malformed"] == before + 1)
            assert dp.global_stats().malformed == 0

            # a burst: every datagram comes back (no frame leaks through the loop)
            n = 600
            for i in range(n):
                net.send(net.udp(5000, 9, b"burst %05d" % i))
            got = set()
            end = time.monotonic() + 5
            while len(got) < n and time.monotonic() < end:
                p = net.expect(lambda p: UDP in p and p[UDP].sport == 9 and p[UDP].dport == 5000,
                               timeout=0.5)
                if p is not None:
                    got.add(bytes(p[UDP].payload))
            assert len(got) == n
            xs = _afxdp_stats(dp)
            assert xs["rx"] >= 620 and xs["tx"] >= 620 and xs["tx_invalid"] == 0
    finally:
        dp.close()
        if steer is not None:
            steer.detach()
    assert _progs(net) == []


# A test-only XDP program that hands *every* frame to the socket: the
# steering program keeps malformed frames from the datapath, so this is the
# way to show the datapath's own checks.
REDIRECT_ALL = b"""
BPF_XSKMAP(xsks_all, 4);
int redirect_all(struct xdp_md *ctx) { return xsks_all.redirect_map(ctx->rx_queue_index, XDP_PASS); }
"""


def _malformed_frames(net) -> list[bytes]:
    """Frames whose headers are cut short or whose lengths lie: every one
    must be counted as malformed by the datapath (classify.c's parse)."""
    eth = bytes(net.eth())[:12]
    ipv4, vlan = eth + b"\x08\x00", eth + b"\x81\x00"
    ip = IP(src=G_IP, dst=H_IP)
    udp = bytes(net.eth() / ip / UDP(sport=1234, dport=7) / b"payload")
    tcp_vlan = bytes(net.eth() / Dot1Q(vlan=5) / ip / TCP(sport=1234, dport=80))
    table = [
        ipv4,                                                   # Ethernet, no IPv4 header
        vlan + b"\x00",                                         # VLAN tag cut
        vlan + b"\x00\x05",                                     # VLAN tag, no inner ethertype
        ipv4 + b"\x45\x00\x00\x1c" + b"\x00" * 6,                  # IPv4 cut at 10 bytes
        ipv4 + bytes(IP(src=G_IP, dst=H_IP, len=200) / UDP(dport=7)),  # total length > frame
        ipv4 + bytes(ip / UDP(dport=7))[:2] + b"\x00\x14" + bytes(ip / UDP(dport=7))[4:],
                                                                # total length 20 < IP + UDP
        ipv4 + bytes(IP(src=G_IP, dst=H_IP, version=6)),        # version 6, IPv4 ethertype
        ipv4 + b"\x44" + bytes(ip / UDP(dport=7))[1:],          # IHL 4 (< 5)
        ipv4 + bytes(IP(src=G_IP, dst=H_IP, len=20, ihl=6) / (b"\0" * 4)),  # IHL > total length
        ipv4 + bytes(IP(src=G_IP, dst=H_IP, ihl=15, proto=17) / (b"\0" * 8))[:28],  # IHL past frame
        ipv4 + bytes(ip / UDP(dport=7, len=200)),               # UDP length > IPv4 payload
        ipv4 + bytes(ip / UDP(dport=7, len=4)),                 # UDP length < 8
        ipv4 + bytes(IP(src=G_IP, dst=H_IP, proto=17) / b"\0\x07\0\x07"),  # UDP header cut
        ipv4 + bytes(ip / TCP(dport=80, dataofs=3)),            # TCP offset < 5
        ipv4 + bytes(ip / TCP(dport=80, dataofs=15)),           # TCP offset > IPv4 payload
        ipv4 + bytes(IP(src=G_IP, dst=H_IP, proto=6) / (b"\0" * 12)),  # TCP header cut
    ]
    # and cut at every byte: UDP after every header boundary, TCP behind a
    # VLAN tag (every header claims a length the cut frame no longer has)
    table += [udp[:n] for n in range(15, len(udp))]
    table += [tcp_vlan[:n] for n in range(19, len(tcp_vlan))]
    return table


def test_malformed_frames_dropped_and_counted(net):
    from bcc import BPF

    dp = _datapath()
    bpf = BPF(text=REDIRECT_ALL)
    attached = False
    try:
        dp.use_afxdp_backend(net.if_host, n_frames=512, ring_size=128, netns=net.ns_host)
        fn = bpf.load_func(b"redirect_all", BPF.XDP)
        with steer_mod._in_netns(net.ns_host):
            BPF.attach_xdp(net.if_host.encode(), fn, steer_mod.XDP_FLAGS_SKB_MODE)
            attached = True
        xsks = bpf[b"xsks_all"]
        xsks[xsks.Key(0)] = xsks.Leaf(dp.afxdp_fd)
        net.drain()
        frames = _malformed_frames(net)
        with dp.running():
            for f in frames:
                net.send(f)
            assert _wait(lambda: dp.global_stats().malformed == len(frames)), dp.global_stats()
            # and it keeps serving
            net.send(net.udp(4242, 7, b"still here"))
            assert net.expect(_is_echo(net, 4242, 7, b"still here")) is not None
            assert _wait(lambda: dp.tenant_stats(TENANT, latency=False).tx == 1)
            assert dp.global_stats().malformed == len(frames)
    finally:
        dp.close()
        if attached:
            with steer_mod._in_netns(net.ns_host):
                BPF.remove_xdp(net.if_host.encode(), steer_mod.XDP_FLAGS_SKB_MODE)
        bpf.cleanup()
    assert _progs(net) == []


def test_restart_and_rebind(net):
    """stop/start keeps the socket; a second backend on the same queue is
    refused while the first lives, and accepted once it is closed."""
    dp = _datapath()
    with Steer(net.if_host, netns=net.ns_host) as steer:
        steer.steer_all()
        dp.use_afxdp_backend(net.if_host, n_frames=256, ring_size=64, netns=net.ns_host)
        steer.bind_xsk(0, dp.afxdp_fd)
        for round_ in range(3):
            with dp.running():
                payload = b"round %d" % round_
                net.send(net.udp(4100, 7, payload))
                assert net.expect(_is_echo(net, 4100, 7, payload)) is not None
        other = _datapath()
        try:
            with pytest.raises(BackendError, match="already has an AF_XDP socket") as exc:
                other.use_afxdp_backend(net.if_host, n_frames=256, ring_size=64, netns=net.ns_host)
            assert exc.value.errno == errno.EBUSY
            dp.close()
            other.use_afxdp_backend(net.if_host, n_frames=256, ring_size=64, netns=net.ns_host)
            steer.bind_xsk(0, other.afxdp_fd)
            with other.running():
                net.send(net.udp(4101, 7, b"second"))
                assert net.expect(_is_echo(net, 4101, 7, b"second")) is not None
        finally:
            other.close()
    assert _progs(net) == []


def test_errors_say_what_to_do(net):
    dp = _datapath()
    try:
        with pytest.raises(BackendError, match="no interface nosuch0") as exc:
            dp.use_afxdp_backend("nosuch0", netns=net.ns_host)
        assert exc.value.errno == errno.ENODEV
        # xh lives in the host namespace, not in ours
        with pytest.raises(BackendError, match="network namespace"):
            dp.use_afxdp_backend(net.if_host)
        with pytest.raises(ConfigError, match="powers of two"):
            dp.use_afxdp_backend(net.if_host, n_frames=1000, netns=net.ns_host)
        with pytest.raises(BackendError, match=r"has 1 receive queue \(0..0\): there is no "
                           r"queue 7") as exc:
            dp.use_afxdp_backend(net.if_host, queue=7, netns=net.ns_host)
        assert exc.value.errno == errno.ERANGE
        with pytest.raises(BackendError, match="no afxdp backend"):
            dp.afxdp_fd
    finally:
        dp.close()
    assert _progs(net) == []


# ---- several queues, modes, errors (netns/veth prefix mq-) ----

MQ_H_IP, MQ_G_IP = "10.97.1.1", "10.97.1.2"


@pytest.fixture
def mqnet(request):
    return two_queue_pair(request, f"mq-{os.getpid()}", MQ_H_IP, MQ_G_IP, host_if="mqh",
                          peer_if="mqg")


def _mq_udp(net, sport, payload):
    return bytes(net.eth() / IP(src=net.ip_peer, dst=net.ip_host)
                 / UDP(sport=sport, dport=7) / payload)


def _collect(net, sports, n, timeout=5.0):
    """The payloads echoed to any of `sports`, until n came or the timeout."""
    got = set()
    end = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        p = net.expect(lambda p: UDP in p and p[UDP].sport == 7 and p[UDP].dport in sports
                       and p[IP].src == net.ip_host, timeout=0.5)
        if p is not None:
            got.add((p[UDP].dport, bytes(p[UDP].payload)))
    return got


def test_two_queues_one_socket_each_echo_from_both(mqnet):
    """Sockets on queues 0 and 1 share one UMEM; traffic sent on the peer's
    transmit queue q lands on the host's receive queue q (native XDP on
    veth), is steered to socket q and echoed back out of socket q."""
    net = mqnet
    dp = _datapath()
    steer = None
    per_queue = {0: 30, 1: 20}
    try:
        dp.use_afxdp_backend(net.if_host, queues=[0, 1], mode="native", ring_size=256,
                             netns=net.ns_host)
        fds = dp.afxdp_fds()
        assert sorted(fds) == [0, 1] and len(set(fds.values())) == 2
        assert dp.afxdp_fd == fds[0]
        assert dp.afxdp_xdp_mode == "native"
        steer = Steer(net.if_host, netns=net.ns_host, mode=dp.afxdp_xdp_mode)
        assert steer.mode == "native"
        steer.steer_all()
        steer.bind_xsks(fds)
        before = dp.afxdp_stats()
        assert [s["mode"] for s in before.values()] == ["native copy"] * 2
        assert all(s["xdp_attached"] == "native" for s in before.values())
        assert all(s["fill_ring"] == 256 and s["filled"] == 256 for s in before.values())
        net.drain()
        with dp.running():
            sent = set()
            for q, n in per_queue.items():
                for i in range(n):
                    payload = b"queue %d datagram %02d" % (q, i)
                    net.send(_mq_udp(net, 6000 + q, payload), queue=q)
                    sent.add((6000 + q, payload))
            assert _collect(net, {6000, 6001}, len(sent)) == sent
            total = sum(per_queue.values())
            assert _wait(lambda: dp.tenant_stats(TENANT, latency=False).tx == total)
            assert _wait(lambda: all(s["completed"] == per_queue[q]
                                     for q, s in dp.afxdp_stats().items()))
            st = dp.afxdp_stats()
        # the steering program saw each queue's frames on that queue
        # (seen also counts what the peer's kernel sends: ICMP port
        # unreachable for the echoes, ARP)
        qst = steer.queue_stats()
        assert {q: s["redirected"] for q, s in qst.items()} == per_queue, qst
        for q, n in per_queue.items():
            s = st[q]
            assert (s["rx"], s["tx"], s["completed"]) == (n, n, n), (q, s)
            # every frame taken off the fill ring came back to it
            assert s["filled"] - s["fill_ring"] >= n
            assert s["comp_ring"] == 0
            for k in ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
                      "rx_fill_ring_empty_descs"):
                assert s[k] == 0, (q, k, s)
    finally:
        dp.close()
        if steer is not None:
            steer.detach()
    assert attached_programs(net.if_host, net.ns_host) == []


@pytest.mark.parametrize("need_wakeup", [True, False], ids=["need_wakeup", "always_kick"])
def test_mixed_bursts_leave_on_their_own_sockets(mqnet, need_wakeup):
    """100 frames wait in each RX ring while the loop is stopped; RX bursts
    of 32 then alternate between the sockets (round robin) until 4 are left
    on each, which one burst takes from both: that burst's replies are split
    between the two TX rings, each going out where it came in."""
    net = mqnet
    dp = Datapath(policy="fifo", rx_batch=32)
    dp.add_tenant(TENANT, TenantConfig(handler="udp_echo", queue_cap=1024))
    dp.set_rules([Rule(tenant=TENANT)])
    n = 100
    try:
        dp.use_afxdp_backend(net.if_host, queues=[0, 1], mode="native", ring_size=256,
                             need_wakeup=need_wakeup, netns=net.ns_host)
        with Steer(net.if_host, netns=net.ns_host, mode=dp.afxdp_xdp_mode) as steer:
            steer.steer_all()
            steer.bind_xsks(dp.afxdp_fds())
            net.drain()
            sent = set()
            for i in range(n):
                for q in (0, 1):
                    payload = b"mixed %d %03d" % (q, i)
                    net.send(_mq_udp(net, 6200 + q, payload), queue=q)
                    sent.add((6200 + q, payload))
            assert _wait(lambda: {q: s["redirected"] for q, s in steer.queue_stats().items()}
                         == {0: n, 1: n})
            with dp.running():
                assert _collect(net, {6200, 6201}, len(sent)) == sent
                assert _wait(lambda: all(s["completed"] == n for s in dp.afxdp_stats().values()))
            st = dp.afxdp_stats()
            assert {q: (s["rx"], s["tx"]) for q, s in st.items()} == {0: (n, n), 1: (n, n)}
            assert all(s["rx_ring_full"] == 0 and s["tx_invalid_descs"] == 0
                       for s in st.values())
    finally:
        dp.close()
    assert attached_programs(net.if_host, net.ns_host) == []


def test_modes_on_veth(mqnet):
    """veth has native XDP but no AF_XDP zero-copy."""
    net = mqnet
    dp = _datapath()
    try:
        with pytest.raises(BackendError, match="has no AF_XDP zero-copy") as exc:
            dp.use_afxdp_backend(net.if_host, zerocopy=True, netns=net.ns_host)
        assert exc.value.errno == errno.EOPNOTSUPP
        with pytest.raises(BackendError, match="zero-copy needs native XDP"):
            dp.use_afxdp_backend(net.if_host, mode="skb", zerocopy=True, netns=net.ns_host)
        with pytest.raises(ConfigError, match="mode must be"):
            dp.use_afxdp_backend(net.if_host, mode="driver", netns=net.ns_host)
        # auto: native (veth has it), copy (no zero-copy); skb when asked
        dp.use_afxdp_backend(net.if_host, ring_size=64, netns=net.ns_host)
        assert dp.afxdp_stats()[0]["mode"] == "native copy"
        dp.close()  # its socket holds queue 0 until then
        dp = _datapath()
        dp.use_afxdp_backend(net.if_host, ring_size=64, mode="skb", zerocopy=False,
                             netns=net.ns_host)
        assert dp.afxdp_stats()[0]["mode"] == "skb copy"
        assert dp.afxdp_stats()[0]["xdp_attached"] == "none"
        # the skb path works too (on veth every frame arrives on queue 0 there)
        with Steer(net.if_host, netns=net.ns_host, mode=dp.afxdp_xdp_mode) as steer:
            steer.steer_all()
            steer.bind_xsks(dp.afxdp_fds())
            assert dp.afxdp_stats()[0]["xdp_attached"] == "skb"
            net.drain()
            with dp.running():
                net.send(_mq_udp(net, 6100, b"skb mode"))
                assert _collect(net, {6100}, 1) == {(6100, b"skb mode")}
    finally:
        dp.close()
    assert attached_programs(net.if_host, net.ns_host) == []


def test_multi_queue_errors(mqnet):
    net = mqnet
    dp, other = _datapath(), _datapath()
    try:
        with pytest.raises(BackendError, match=r"has 2 receive queues \(0..1\): there is no "
                           r"queue 2") as exc:
            dp.use_afxdp_backend(net.if_host, queues=[0, 2], netns=net.ns_host)
        assert exc.value.errno == errno.ERANGE
        with pytest.raises(ConfigError, match="distinct"):
            dp.use_afxdp_backend(net.if_host, queues=[1, 1], netns=net.ns_host)
        with pytest.raises(ConfigError, match="2 \\* ring_size \\* sockets"):
            dp.use_afxdp_backend(net.if_host, queues=[0, 1], n_frames=256, ring_size=128,
                                 netns=net.ns_host)
        # queue 1 taken by another datapath: EBUSY names it, queue 0 stays free
        other.use_afxdp_backend(net.if_host, 1, ring_size=64, netns=net.ns_host)
        with pytest.raises(BackendError, match="queue 1 of mqh already has an AF_XDP socket") as exc:
            dp.use_afxdp_backend(net.if_host, queues=[0, 1], ring_size=64, netns=net.ns_host)
        assert exc.value.errno == errno.EBUSY
        dp.use_afxdp_backend(net.if_host, 0, ring_size=64, netns=net.ns_host)
        assert list(dp.afxdp_fds()) == [0] and list(other.afxdp_fds()) == [1]
        # pinning the maps for another process needs bpffs
        with pytest.raises(steer_mod.BpffsMissingError, match="mount -t bpf"):
            Steer(net.if_host, netns=net.ns_host, pin_dir="/tmp/mq-not-bpffs")
    finally:
        dp.close()
        other.close()
    assert attached_programs(net.if_host, net.ns_host) == []


# run as root without CAP_IPC_LOCK and CAP_SYS_RESOURCE, with a 64 KiB
# locked-memory limit: the UMEM cannot be locked
MEMLOCK_CHILD = r"""
import ctypes, errno, resource, sys
sys.path[:0] = [{root!r}]
from datapath import Datapath
from datapath.errors import BackendError

class Hdr(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
libc = ctypes.CDLL(None, use_errno=True)
hdr, data = Hdr(0x20080522, 0), (Data * 2)()
assert libc.capget(ctypes.byref(hdr), data) == 0
for bit in (14, 24):  # CAP_IPC_LOCK, CAP_SYS_RESOURCE
    data[0].effective &= ~(1 << bit)
    data[0].permitted &= ~(1 << bit)
assert libc.capset(ctypes.byref(hdr), data) == 0
resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))
dp = Datapath()
try:
    dp.use_afxdp_backend({ifname!r}, netns={netns!r})
except BackendError as exc:
    print(exc.errno, exc)
else:
    print("no error")
"""


def test_memlock_error_says_what_to_do(mqnet):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = MEMLOCK_CHILD.format(root=root, ifname=mqnet.if_host, netns=mqnet.ns_host)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    assert out.startswith(f"{errno.ENOBUFS} "), out
    assert "RLIMIT_MEMLOCK" in out and "ulimit -l unlimited" in out
