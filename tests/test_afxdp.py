"""The afxdp backend on a real veth pair: steered UDP in, udp_echo's reply out.

Two namespaces of our own (isax-<pid>-p: the generator, isax-<pid>-h: the
isolane host) joined by a veth pair, 10.97.0.2/24 (xg, generator) and
10.97.0.1/24 (xh, where Steer attaches in skb mode and the datapath's
AF_XDP socket sits on queue 0, copy mode). Frames are sent and received
on xg with an AF_PACKET socket made inside the generator namespace.
"""
from __future__ import annotations

import errno
import os
import time

import pytest

pytestmark = pytest.mark.integration

from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402

from datapath import Datapath, Rule, TenantConfig  # noqa: E402
from datapath._dp import ffi, lib  # noqa: E402
from datapath.errors import BackendError, ConfigError  # noqa: E402
from ebpf import steer as steer_mod  # noqa: E402
from ebpf.steer import Steer, attached_programs  # noqa: E402
from vethpair import VethPair  # noqa: E402

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
            st = dp.tenant_stats(TENANT, latency=False)
            assert st.rx == 20 and st.tx == 20
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
        eth = bytes(Ether(src=net.mac_peer, dst=net.mac_host))[:12] + b"\x08\x00"
        ip = IP(src=G_IP, dst=H_IP)
        frames = [
            eth + b"\x45\x00\x00\x1c" + b"\x00" * 6,                   # IPv4 cut at 10 bytes
            eth + bytes(IP(src=G_IP, dst=H_IP, len=200) / UDP(dport=7)),  # total length past the frame
            eth + bytes(IP(src=G_IP, dst=H_IP, version=6)),            # version 6, IPv4 ethertype
            eth + bytes(ip / UDP(dport=7, len=200)),                   # UDP length past IPv4's
            eth + bytes(ip / TCP(dport=80, dataofs=3)),                # TCP offset < 5
        ]
        with dp.running():
            for f in frames:
                net.send(f)
            assert _wait(lambda: dp.global_stats().malformed == len(frames)), dp.global_stats()
            # and it keeps serving
            net.send(net.udp(4242, 7, b"still here"))
            assert net.expect(_is_echo(net, 4242, 7, b"still here")) is not None
            assert dp.tenant_stats(TENANT, latency=False).tx == 1
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
        with pytest.raises(BackendError, match="queue"):
            dp.use_afxdp_backend(net.if_host, queue=7, netns=net.ns_host)
        with pytest.raises(BackendError, match="no afxdp backend"):
            dp.afxdp_fd
    finally:
        dp.close()
    assert _progs(net) == []
