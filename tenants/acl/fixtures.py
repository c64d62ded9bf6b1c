"""acl fixtures: the table's setup() installs the rules; key = (source IPv4,
destination port), network byte order, 2 bytes of zero padding."""
import socket
import struct

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from ebpf.fixtures import Fixture
from ebpf.packets import IP_A, IP_B, MAC_A, MAC_B, udp

IP_C = "10.0.0.3"


def key(src: str, dport: int) -> bytes:
    return socket.inet_aton(src) + struct.pack("!H", dport) + b"\0\0"


def allow(maps, src: str, dport: int, value: int = 1) -> None:
    maps["acl_rules"].update(key(src, dport), struct.pack("<I", value))


def setup(maps):
    allow(maps, IP_A, 53)  # DNS from A
    allow(maps, IP_A, 80)  # HTTP from A
    allow(maps, IP_C, 0)  # ICMP (no port) from C
    allow(maps, IP_C, 22, value=0)  # a rule that denies: value 0


def _late_rule(maps):
    allow(maps, IP_B, 123)


def _tcp(src, dport, payload=b""):
    return Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=IP_B) / TCP(sport=40000, dport=dport) / payload


def _icmp(src):
    return Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=IP_B) / ICMP()


_arp = Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=IP_A, pdst=IP_B)
_v6 = Ether(src=MAC_A, dst=MAC_B) / IPv6(src="fd00::1", dst="fd00::2") / b"x"
_short_tcp = Ether(src=MAC_A, dst=MAC_B) / IP(src=IP_A, dst=IP_B, proto=6) / b"\x9c\x40"

FIXTURES = [
    Fixture("UDP to an allowed port from an allowed source", udp(b"q", src=IP_A, dport=53),
            "XDP_PASS", udp(b"q", src=IP_A, dport=53)),
    Fixture("TCP to an allowed port", _tcp(IP_A, 80), "XDP_PASS", _tcp(IP_A, 80)),
    Fixture("the key has no protocol: TCP to 53 passes too", _tcp(IP_A, 53), "XDP_PASS"),
    Fixture("allowed source, other port", udp(b"q", src=IP_A, dport=54), "XDP_DROP"),
    Fixture("other source, allowed port", udp(b"q", src=IP_B, dport=53), "XDP_DROP"),
    Fixture("ICMP uses port 0: allowed from C", _icmp(IP_C), "XDP_PASS", _icmp(IP_C)),
    Fixture("ICMP from A has no rule", _icmp(IP_A), "XDP_DROP"),
    Fixture("a rule with value 0 denies", _tcp(IP_C, 22), "XDP_DROP"),
    Fixture("ARP passes", _arp, "XDP_PASS", _arp),
    Fixture("IPv6 is dropped", _v6, "XDP_DROP"),
    Fixture("non-first fragment is dropped", udp(b"q", src=IP_A, dport=53, frag=8), "XDP_DROP"),
    Fixture("first fragment is checked like a datagram", udp(b"q", src=IP_A, dport=53, flags="MF"),
            "XDP_PASS"),
    Fixture("TCP header cut short", _short_tcp, "XDP_DROP"),
    Fixture("truncated IPv4 header", bytes(udp(b"q"))[:20], "XDP_DROP"),
    Fixture("before its rule exists: dropped", udp(b"t", src=IP_B, dport=123), "XDP_DROP"),
    Fixture("a rule added at run time takes effect", udp(b"t", src=IP_B, dport=123), "XDP_PASS",
            setup=_late_rule),
]
