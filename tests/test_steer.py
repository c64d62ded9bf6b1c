"""ebpf.steer: the XDP steering program on a real veth pair.

Two network namespaces of our own (islst-<pid>-h, islst-<pid>-p) joined by a
veth pair, 10.98.0.1/24 (vA, where Steer attaches) and 10.98.0.2/24 (vB).
Frames are sent from vB with an AF_PACKET socket (tests/vethpair.py);
scapy builds them. The kernel's answers (ARP reply, echo reply, port
unreachable, RST) come back on the same socket.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

if os.geteuid() != 0:
    pytest.skip("needs root: netns, veth, XDP", allow_module_level=True)

from scapy.layers.inet import ICMP, IP, TCP, UDP, UDPerror  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402

from datapath.errors import BackendError  # noqa: E402
from ebpf import steer as steer_mod  # noqa: E402
from ebpf.steer import (ForeignProgramError, NoSuchInterfaceError, NotPrivilegedError,  # noqa: E402
                        Steer, attached_programs)
from vethpair import VethPair  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
A_IP, B_IP = "10.98.0.1", "10.98.0.2"


@pytest.fixture(scope="module")
def net():
    n = VethPair(f"islst-{os.getpid()}", A_IP, B_IP, host_if="vA", peer_if="vB")
    yield n
    n.close()


@pytest.fixture
def steer(net):
    made = []

    def make(**kw):
        kw.setdefault("netns", net.ns_host)
        s = Steer(net.if_host, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.detach()
    assert _progs(net) == []


def _progs(net):
    return attached_programs(net.if_host, net.ns_host)


def _wait_stat(s, name, at_least, timeout=1.0):
    end = time.monotonic() + timeout
    while s.stats()[name] < at_least and time.monotonic() < end:
        time.sleep(0.01)
    return s.stats()[name]


def _delta(before, after):
    return {k: after[k] - before[k] for k in after}


# -- attach / detach ----------------------------------------------------------

def test_attach_and_detach_leave_nothing(net):
    s = Steer(net.if_host, netns=net.ns_host)
    progs = _progs(net)
    assert [(p["name"], p["id"], p["mode"]) for p in progs] == [("isolane_steer", s.prog_id, "skb")]
    assert s.mode == "skb" and s.attached and s.xsks_map_fd >= 0
    s.detach()
    assert _progs(net) == [] and not s.attached
    s.detach()  # idempotent
    with pytest.raises(steer_mod.SteerError, match="detached"):
        s.stats()


def test_native_mode_on_veth_and_context_manager(net):
    with Steer(net.if_host, netns=net.ns_host, mode="native") as s:
        assert [(p["mode"], p["id"]) for p in _progs(net)] == [("native", s.prog_id)]
    assert _progs(net) == []


def test_dropped_object_detaches(net):
    s = Steer(net.if_host, netns=net.ns_host)
    del s
    import gc
    gc.collect()
    assert _progs(net) == []


def test_crash_leftover_is_removed_on_start(net, steer):
    child = ("import os; from ebpf.steer import Steer; "
             f"s = Steer({net.if_host!r}, netns={net.ns_host!r}, mode='native'); os._exit(0)")
    subprocess.run([sys.executable, "-c", child], cwd=REPO, check=True, capture_output=True, timeout=60)
    left = _progs(net)
    assert [(p["name"], p["mode"]) for p in left] == [("isolane_steer", "native")]
    s = steer()  # skb mode: native and skb cannot both be attached, so the leftover must go first
    assert [p["id"] for p in s.removed_stale] == [left[0]["id"]]
    assert [(p["id"], p["mode"]) for p in _progs(net)] == [(s.prog_id, "skb")]


def test_foreign_program_is_not_removed_silently(net, steer):
    from bcc import BPF

    other = BPF(text=b"int foreign_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
    fn = other.load_func(b"foreign_xdp", BPF.XDP)
    with steer_mod._in_netns(net.ns_host):
        BPF.attach_xdp(net.if_host.encode(), fn, steer_mod.XDP_FLAGS_SKB_MODE)
    try:
        with pytest.raises(ForeignProgramError, match="foreign_xdp.*xdpgeneric off"):
            steer()
        assert [p["name"] for p in _progs(net)] == ["foreign_xdp"]
        s = steer(replace_foreign=True)
        assert [p["id"] for p in _progs(net)] == [s.prog_id]
    finally:
        with steer_mod._in_netns(net.ns_host):
            if any(p["name"] == "foreign_xdp" for p in _progs(net)):
                BPF.remove_xdp(net.if_host.encode(), steer_mod.XDP_FLAGS_SKB_MODE)
        other.cleanup()


def test_detach_leaves_a_successor_alone(net, steer):
    first = steer()
    second = steer()  # takes the slot over (same program name: isolane's own)
    first.detach()
    assert [p["id"] for p in _progs(net)] == [second.prog_id]


def test_errors_say_what_to_do(net):
    with pytest.raises(NoSuchInterfaceError, match="no interface 'islst-none'") as exc:
        Steer("islst-none", netns=net.ns_host)
    assert isinstance(exc.value, BackendError)
    with pytest.raises(NoSuchInterfaceError, match="ip netns add"):
        Steer(net.if_host, netns=f"islst-{os.getpid()}-missing")
    with pytest.raises(steer_mod.BpffsMissingError, match="mount -t bpf"):
        Steer(net.if_host, netns=net.ns_host, pin_dir="/tmp/islst-not-bpffs")
    with pytest.raises(steer_mod.ConfigError):
        Steer(net.if_host, netns=net.ns_host, mode="turbo")
    # root without capabilities (bounding set cleared for the child)
    child = f"from ebpf.steer import Steer; Steer({net.if_host!r}, netns={net.ns_host!r})"
    proc = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", child],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and NotPrivilegedError.__name__ in proc.stderr and "root" in proc.stderr
    assert _progs(net) == []


def test_pin_dir(net, steer):
    pin = Path(f"/sys/fs/bpf/islst-{os.getpid()}")
    s = steer(pin_dir=pin)
    assert sorted(os.listdir(pin)) == ["steer_rules", "steer_stats", "xsks"]
    s.detach()
    assert not pin.exists()


# -- traffic --------------------------------------------------------------------

def test_arp_passed_and_answered(net, steer):
    s = steer()
    net.drain()
    before = s.stats()
    net.send(Ether(src=net.mac_peer, dst="ff:ff:ff:ff:ff:ff")
             / ARP(op=1, hwsrc=net.mac_peer, psrc=B_IP, pdst=A_IP))
    reply = net.expect(lambda p: ARP in p and p[ARP].op == 2 and p[ARP].psrc == A_IP)
    assert reply is not None and reply[ARP].hwsrc == net.mac_host
    d = _delta(before, s.stats())
    assert d["passed_arp"] >= 1 and d["redirected"] == d["malformed"] == 0


def test_ping_passed_and_answered(net, steer):
    s = steer(mode="native")
    s.steer_all()  # ICMP is never steered, even with the catch-all rule
    net.drain()
    before = s.stats()
    for seq in range(3):
        net.send(net.eth() / IP(src=B_IP, dst=A_IP) / ICMP(type=8, id=0x1234, seq=seq) / b"isolane")
        reply = net.expect(lambda p: ICMP in p and p[ICMP].type == 0 and p[ICMP].seq == seq)
        assert reply is not None, f"no echo reply to seq {seq}"
    d = _delta(before, s.stats())
    assert d["passed_icmp"] == 3 and d["redirected"] == d["fallback"] == 0


@pytest.mark.parametrize("mode", ["skb", "native"])
def test_steered_udp_falls_back_to_kernel_without_socket(net, steer, mode):
    s = steer(mode=mode)
    s.add_rule(A_IP, "udp", 5000)
    net.drain()
    before = s.stats()
    net.send(net.eth() / IP(src=B_IP, dst=A_IP) / UDP(sport=4000, dport=5000) / b"steer me")
    unreach = net.expect(lambda p: ICMP in p and p[ICMP].type == 3 and p[ICMP].code == 3)
    assert unreach is not None, "kernel did not see the fallen-back datagram"
    # a port without a rule is passed_other, and the kernel sees it too
    net.send(net.eth() / IP(src=B_IP, dst=A_IP) / UDP(sport=4000, dport=5001) / b"not me")
    assert net.expect(lambda p: ICMP in p and p[ICMP].type == 3 and UDPerror in p and p[UDPerror].dport == 5001)
    d = _delta(before, s.stats())
    assert d["fallback"] == 1 and d["redirected"] == 0 and d["passed_other"] >= 1 and d["malformed"] == 0


def test_rules_wildcards_and_tcp(net, steer):
    s = steer()
    s.add_rule(proto="tcp", dport=8080, tag=7)
    s.add_rule(daddr=A_IP, tag=9)  # UDP and TCP, any port, to A
    assert sorted(((r["daddr"], r["proto"], r["dport"], r["tag"]) for r in s.rules()), key=repr) == sorted(
        [(None, "tcp", 8080, 7), (A_IP, None, None, 9)], key=repr)
    net.drain()
    before = s.stats()
    net.send(net.eth() / IP(src=B_IP, dst=A_IP) / TCP(sport=4000, dport=8080, flags="S"))
    assert net.expect(lambda p: TCP in p and p[TCP].flags.R), "kernel did not reset the SYN"
    net.send(net.eth() / IP(src=B_IP, dst="10.98.0.77") / TCP(sport=4000, dport=8080, flags="S"))
    net.send(net.eth() / IP(src=B_IP, dst="10.98.0.77") / TCP(sport=4000, dport=8081, flags="S"))
    net.send(net.eth() / IP(src=B_IP, dst=A_IP) / UDP(sport=1, dport=9))
    assert _wait_stat(s, "fallback", before["fallback"] + 3) - before["fallback"] == 3
    s.remove_rule(daddr=A_IP)
    with pytest.raises(steer_mod.NotFoundError):
        s.remove_rule(daddr=A_IP)
    with pytest.raises(steer_mod.ConfigError):
        s.add_rule(proto="icmp")
    with pytest.raises(steer_mod.ConfigError):
        s.add_rule(daddr="::1")
    net.send(net.eth() / IP(src=B_IP, dst=A_IP) / UDP(sport=1, dport=9))
    time.sleep(0.05)
    d = _delta(before, s.stats())
    assert d["fallback"] == 3 and d["passed_other"] >= 2 and d["malformed"] == 0


def test_malformed_frames_counted(net, steer):
    s = steer()
    s.steer_all()
    before = s.stats()
    eth = bytes(net.eth())[:12] + b"\x08\x00"  # IPv4 ethertype
    good_ip = IP(src=B_IP, dst=A_IP, proto=17, ihl=5)
    frames = [
        eth + b"\x45\x00\x00\x1c" + b"\x00" * 6,  # IPv4 header cut at 10 bytes
        eth + bytes(IP(src=B_IP, dst=A_IP, len=200) / UDP(dport=5000)),  # total length past the frame
        eth + bytes(IP(src=B_IP, dst=A_IP, version=6)),  # version 6 under the IPv4 ethertype
        eth + bytes(good_ip / UDP(dport=5000))[:24],  # UDP header cut at 4 bytes
        eth + bytes(IP(src=B_IP, dst=A_IP) / UDP(dport=5000, len=200)),  # UDP length past IPv4's
        eth + bytes(IP(src=B_IP, dst=A_IP) / TCP(dport=80, dataofs=3)),  # TCP offset < 5
    ]
    for f in frames:
        net.send(f)
    assert _wait_stat(s, "malformed", before["malformed"] + len(frames)) - before["malformed"] == len(frames)
    d = _delta(before, s.stats())
    assert d["redirected"] == d["fallback"] == 0
    # fragments and IPv6 are passed untouched
    net.send(net.eth() / IP(src=B_IP, dst=A_IP, flags="MF") / UDP(dport=5000) / (b"x" * 16))
    net.send(Ether(src=net.mac_peer, dst=net.mac_host, type=0x86DD) / (b"\x60" + b"\x00" * 39))
    assert _wait_stat(s, "passed_other", before["passed_other"] + 2) - before["passed_other"] >= 2
    assert s.stats()["fallback"] == before["fallback"]


# -- a real AF_XDP socket ---------------------------------------------------------

AF_XDP, SOL_XDP = 44, 283
XDP_MMAP_OFFSETS, XDP_RX_RING, XDP_UMEM_REG, XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING = 1, 2, 4, 5, 6
XDP_COPY = 1 << 1
XDP_UMEM_PGOFF_FILL_RING = 0x100000000
FRAME, NFRAMES, RING = 2048, 64, 32

_libc = ctypes.CDLL(None, use_errno=True)


class Xsk:
    """The least AF_XDP socket that receives: UMEM, fill ring, RX ring, copy mode."""

    def __init__(self, ns: str, ifname: str, queue: int = 0):
        with steer_mod._in_netns(ns):
            self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
            ifindex = socket.if_nametoindex(ifname)
        fd = self.sock.fileno()
        self.umem = mmap.mmap(-1, FRAME * NFRAMES)
        self._umem_buf = ctypes.c_char.from_buffer(self.umem)
        reg = struct.pack("QQIIII", ctypes.addressof(self._umem_buf), FRAME * NFRAMES, FRAME, 0, 0, 0)
        self.sock.setsockopt(SOL_XDP, XDP_UMEM_REG, reg)
        for opt in (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING):
            self.sock.setsockopt(SOL_XDP, opt, RING)
        off = struct.unpack("16Q", self.sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128))
        self.rx_off, self.fr_off = off[0:4], off[8:12]  # producer, consumer, desc, flags
        self.rx = mmap.mmap(fd, self.rx_off[2] + RING * 16, offset=0)
        self.fr = mmap.mmap(fd, self.fr_off[2] + RING * 8, offset=XDP_UMEM_PGOFF_FILL_RING)
        for i in range(RING):  # give the kernel RING frames to fill
            struct.pack_into("Q", self.fr, self.fr_off[2] + i * 8, i * FRAME)
        struct.pack_into("I", self.fr, self.fr_off[0], RING)
        addr = struct.pack("HHIII", AF_XDP, XDP_COPY, ifindex, queue, 0)
        if _libc.bind(fd, addr, len(addr)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"bind AF_XDP: {os.strerror(err)}")
        self.consumer = 0

    def receive(self, timeout: float = 1.0) -> list[bytes]:
        end = time.monotonic() + timeout
        out = []
        while time.monotonic() < end and not out:
            prod = struct.unpack_from("I", self.rx, self.rx_off[0])[0]
            while self.consumer != prod:
                i = self.consumer % RING
                addr, length, _ = struct.unpack_from("QII", self.rx, self.rx_off[2] + i * 16)
                out.append(bytes(self.umem[addr:addr + length]))
                self.consumer += 1
            struct.pack_into("I", self.rx, self.rx_off[1], self.consumer)
            if not out:
                time.sleep(0.01)
        return out

    def close(self):
        self.rx.close()
        self.fr.close()
        del self._umem_buf
        self.sock.close()
        self.umem.close()


@pytest.mark.parametrize("mode", ["skb", "native"])
def test_steered_udp_reaches_af_xdp_socket(net, steer, mode):
    s = steer(mode=mode)
    s.add_rule(A_IP, "udp", 5000)
    xsk = Xsk(net.ns_host, net.if_host, 0)
    try:
        s.bind_xsk(0, xsk.sock.fileno())
        net.drain()
        before = s.stats()
        net.send(net.eth() / IP(src=B_IP, dst=A_IP) / UDP(sport=4000, dport=5000) / b"to the socket")
        got = xsk.receive()
        assert len(got) == 1 and Ether(got[0])[UDP].load == b"to the socket"
        assert net.expect(lambda p: ICMP in p and p[ICMP].type == 3, timeout=0.2) is None, \
            "the kernel saw a redirected datagram"
        # unbinding the queue sends steered traffic back to the kernel
        s.unbind_xsk(0)
        net.send(net.eth() / IP(src=B_IP, dst=A_IP) / UDP(sport=4000, dport=5000) / b"kernel")
        assert net.expect(lambda p: ICMP in p and p[ICMP].type == 3 and p[ICMP].code == 3)
        d = _delta(before, s.stats())
        assert d["redirected"] == 1 and d["fallback"] == 1
    finally:
        xsk.close()
