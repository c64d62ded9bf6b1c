"""udp_echo fixtures: RFC 862 echo over UDP; non-UDP to the slow path,
malformed frames dropped."""
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from ebpf.fixtures import Fixture
from ebpf.packets import IP_A, IP_B, MAC_A, MAC_B, truncate, udp, udp_reply

_OPTS = [IPOption_NOP()] * 4
_tcp = Ether(src=MAC_A, dst=MAC_B) / IP(src=IP_A, dst=IP_B) / TCP(sport=40000, dport=7) / b"hi"
_arp = Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=IP_A, pdst=IP_B)
_v6 = Ether(src=MAC_A, dst=MAC_B) / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=7) / b"x"
_frag = udp(b"fragment", flags="MF")
_bad_ihl = bytearray(bytes(udp(b"x")))
_bad_ihl[14] = 0x44  # version 4, IHL 4 (16 bytes): below the minimum
_long_udp = bytearray(bytes(udp(b"abcd")))
_long_udp[38:40] = (200).to_bytes(2, "big")  # UDP length beyond the IP datagram
_long_ip = bytearray(bytes(udp(b"abcd")))
_long_ip[16:18] = (500).to_bytes(2, "big")  # IP total length beyond the frame

FIXTURES = [
    Fixture("UDP datagram is echoed", udp(b"hello"), "XDP_TX", udp_reply(b"hello")),
    Fixture("empty UDP payload is echoed", udp(b""), "XDP_TX", udp_reply(b"")),
    Fixture("other ports are echoed too", udp(b"p", sport=5353, dport=9999), "XDP_TX",
            udp_reply(b"p", sport=5353, dport=9999)),
    Fixture("IPv4 options are kept", udp(b"opt", options=_OPTS), "XDP_TX",
            udp_reply(b"opt", options=_OPTS)),
    Fixture("1400-byte payload", udp(bytes(range(256)) * 5 + bytes(120)), "XDP_TX",
            udp_reply(bytes(range(256)) * 5 + bytes(120))),
    Fixture("Ethernet padding after the datagram is kept", bytes(udp(b"pad")) + bytes(10),
            "XDP_TX", bytes(udp_reply(b"pad")) + bytes(10)),
    Fixture("TCP goes to the slow path unchanged", _tcp, "XDP_PASS", _tcp),
    Fixture("ARP goes to the slow path", _arp, "XDP_PASS", _arp),
    Fixture("IPv6 goes to the slow path", _v6, "XDP_PASS", _v6),
    Fixture("IPv4 fragment goes to the slow path", _frag, "XDP_PASS", _frag),
    Fixture("Ethernet header only", truncate(udp(b"x"), 14), "XDP_DROP"),
    Fixture("truncated IPv4 header", truncate(udp(b"x"), 24), "XDP_DROP"),
    Fixture("truncated UDP header", truncate(udp(b"x"), 38), "XDP_DROP"),
    Fixture("IHL below 5", bytes(_bad_ihl), "XDP_DROP"),
    Fixture("UDP length beyond the datagram", bytes(_long_udp), "XDP_DROP"),
    Fixture("IPv4 total length beyond the frame", bytes(_long_ip), "XDP_DROP"),
]
