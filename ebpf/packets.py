"""Frame builders for tenant fixtures (scapy), so that every table speaks of
the same two hosts: A (the client) and B (the tenant's address)."""
from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
IP_A, IP_B = "10.0.0.1", "10.0.0.2"


def udp(payload: bytes = b"", sport: int = 40000, dport: int = 7, src: str = IP_A,
        dst: str = IP_B, mac_src: str = MAC_A, mac_dst: str = MAC_B, udp_chksum=None, **ip):
    """Ether/IP/UDP/payload from (src, sport) to (dst, dport); extra keyword
    arguments go to the IP layer (options, flags, ttl, ...)."""
    return (Ether(src=mac_src, dst=mac_dst) / IP(src=src, dst=dst, **ip)
            / UDP(sport=sport, dport=dport, chksum=udp_chksum) / payload)


def udp_reply(payload: bytes = b"", sport: int = 40000, dport: int = 7, src: str = IP_A,
              dst: str = IP_B, **kw):
    """What a tenant sends back for `udp(...)` with the same arguments:
    MACs, IPs and ports swapped (checksums recomputed by scapy)."""
    return udp(payload, sport=dport, dport=sport, src=dst, dst=src, mac_src=MAC_B,
               mac_dst=MAC_A, **kw)


def truncate(pkt, n: int) -> bytes:
    """The first `n` bytes of a frame (a truncated capture)."""
    return bytes(pkt)[:n]
