"""Test and load frames carrying isolane's probe header (see struct dp_probe).

The probe sits at the start of the UDP payload: magic, the cost in ns the
`spin` handler burns, a sequence number and a send timestamp.
"""
from __future__ import annotations

import struct

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from ._dp import lib

PROBE = struct.Struct("<IIQQ")


def probe_payload(cost_ns: int = 0, seq: int = 0, t_send: int = 0, size: int = PROBE.size) -> bytes:
    return PROBE.pack(lib.DP_PROBE_MAGIC, cost_ns, seq, t_send).ljust(size, b"\0")


def udp_frame(dst: str = "10.0.0.1", dport: int = 7, *, src: str = "10.0.0.2", sport: int = 4242,
              cost_ns: int = 0, size: int = 64, vlan: int | None = None,
              eth_dst: str = "02:00:00:00:00:01", eth_src: str = "02:00:00:00:00:02") -> bytes:
    """An Ethernet/IPv4/UDP frame of `size` bytes (probe payload padded)."""
    l2 = Ether(dst=eth_dst, src=eth_src)
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    headers = len(l2 / IP() / UDP())
    payload = probe_payload(cost_ns, size=max(PROBE.size, size - headers))
    return bytes(l2 / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


def tcp_frame(dst: str = "10.0.0.1", dport: int = 80, *, src: str = "10.0.0.2",
              sport: int = 4242, vlan: int | None = None) -> bytes:
    l2 = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    return bytes(l2 / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S"))
