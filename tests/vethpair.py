"""Two network namespaces of a test's own joined by a veth pair, and a raw
AF_PACKET socket on the peer side to send frames and read the answers.

The *host* end (host_ip) is where isolane attaches (steer program, AF_XDP
socket); the *peer* end (peer_ip) plays the remote host. IPv6 is off and
ICMP is not rate-limited in both namespaces, so counters see only what a
test sends. Everything lives in the namespaces and goes with them.

queues=N gives both ends N receive and N transmit queues. veth delivers a
frame to the host's receive queue numbered like the peer's transmit queue
it left on (seen by an XDP program only in native mode: the generic path
reports queue 0); `send(frame, queue=q)` picks that queue (see send).
"""
from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from ebpf.steer import _in_netns

ETH_P_ALL = 0x0003
SOL_PACKET, PACKET_QDISC_BYPASS = 263, 20  # linux/socket.h, linux/if_packet.h


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


class VethPair:
    def __init__(self, tag: str, host_ip: str, peer_ip: str, *, host_if: str = "vh",
                 peer_if: str = "vp", expect_timeout: float = 1.0, queues: int = 1):
        self.ns_host, self.ns_peer = f"{tag}-h", f"{tag}-p"
        self.if_host, self.if_peer = host_if, peer_if
        self.ip_host, self.ip_peer = host_ip, peer_ip
        self.expect_timeout = expect_timeout
        self.queues = queues
        self.made: list[str] = []
        self.sock = self.qsock = None
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self) -> None:
        for ns in (self.ns_host, self.ns_peer):
            ip("netns", "add", ns)
            self.made.append(ns)
        nq = ("numtxqueues", str(self.queues), "numrxqueues", str(self.queues))
        ip("-n", self.ns_host, "link", "add", self.if_host, *nq, "type", "veth", "peer", "name",
           self.if_peer, *nq, "netns", self.ns_peer)
        for ns, ifname, addr in ((self.ns_host, self.if_host, self.ip_host),
                                 (self.ns_peer, self.if_peer, self.ip_peer)):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                            "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.icmp_ratelimit=0"],
                           check=True, capture_output=True)
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            ip("-n", ns, "link", "set", ifname, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        self.mac_host = self._mac(self.ns_host, self.if_host)
        self.mac_peer = self._mac(self.ns_peer, self.if_peer)
        with _in_netns(self.ns_peer):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((self.if_peer, 0))
            # sends past the qdisc: the kernel picks the transmit queue from
            # the sending CPU (packet_pick_tx_queue), which send(queue=) sets
            self.qsock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.qsock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            self.qsock.bind((self.if_peer, 0))
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)

    @staticmethod
    def _mac(ns: str, ifname: str) -> str:
        return json.loads(ip("-n", ns, "-j", "link", "show", "dev", ifname))[0]["address"]

    def close(self) -> None:
        for sock in (self.sock, self.qsock):
            if sock is not None:
                sock.close()
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def eth(self) -> Ether:
        """An Ethernet header from the peer to the host."""
        return Ether(src=self.mac_peer, dst=self.mac_host)

    def udp(self, sport: int, dport: int, payload: bytes) -> bytes:
        return bytes(self.eth() / IP(src=self.ip_peer, dst=self.ip_host)
                     / UDP(sport=sport, dport=dport) / payload)

    def drain(self) -> None:
        while True:
            try:
                self.sock.recv(65535)
            except BlockingIOError:
                return

    def send(self, frame, queue: int | None = None) -> None:
        """Sends from the peer; with `queue`, on that transmit queue (and so
        to the host's receive queue of that number). With no XPS map, a
        socket that bypasses the qdisc transmits on queue (sending CPU mod
        queues): this thread moves to such a CPU for the send."""
        if queue is None:
            self.sock.send(bytes(frame))
            return
        cpus = sorted(c for c in os.sched_getaffinity(0) if c % self.queues == queue)
        if not 0 <= queue < self.queues or not cpus:
            raise ValueError(f"no CPU of ours sends on queue {queue} of {self.queues}")
        home = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpus[0]})
        try:
            self.qsock.send(bytes(frame))
        finally:
            os.sched_setaffinity(0, home)

    def expect(self, match, timeout: float | None = None):
        """The first frame received on the peer end (sent by the host) for
        which match(Ether) is true, or None after the timeout."""
        end = time.monotonic() + (self.expect_timeout if timeout is None else timeout)
        while (left := end - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                break
            data, addr = self.sock.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            pkt = Ether(data)
            if match(pkt):
                return pkt
        return None


def two_queue_pair(request, name: str, host_ip: str, peer_ip: str, *, host_if: str,
                   peer_if: str) -> VethPair:
    """A VethPair with two receive and two transmit queues on each end,
    closed after the test (`request`: the fixture's). Fails, never skips,
    without root, or with one CPU: sending on queue 1 takes a second one
    (see VethPair.send)."""
    import pytest

    if os.geteuid() != 0:
        pytest.fail("needs root (netns, veth, XDP, AF_XDP)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("sending on veth queue 1 needs two CPUs (see VethPair.send)")
    net = VethPair(name, host_ip, peer_ip, host_if=host_if, peer_if=peer_if,
                   expect_timeout=2.0, queues=2)
    request.addfinalizer(net.close)
    return net

