"""hasher fixtures: FNV-1a 32 over min(len, 1024) payload bytes, written
big-endian over the first 4 payload bytes; UDP checksum 0; echoed."""
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from ebpf.fixtures import Fixture
from ebpf.packets import IP_A, IP_B, MAC_A, MAC_B, truncate, udp, udp_reply

HASH_MAX_BYTES = 1024


def fnv1a32(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def hashed(payload: bytes) -> bytes:
    if len(payload) < 4:
        return payload
    return fnv1a32(payload[:HASH_MAX_BYTES]).to_bytes(4, "big") + payload[4:]


def case(description: str, payload: bytes) -> Fixture:
    return Fixture(description, udp(payload, dport=9000), "XDP_TX",
                   udp_reply(hashed(payload), dport=9000, udp_chksum=0))


_tcp = Ether(src=MAC_A, dst=MAC_B) / IP(src=IP_A, dst=IP_B) / TCP(dport=9000)

FIXTURES = [
    case("short text payload", b"hello world"),
    case("exactly 4 bytes", b"abcd"),
    case("3 bytes: hashed, nothing written", b"abc"),
    case("empty payload", b""),
    case("1024 bytes: the whole payload is hashed", bytes(i * 7 & 0xFF for i in range(1024))),
    case("1400 bytes: only the first 1024 are hashed", bytes(i * 13 & 0xFF for i in range(1400))),
    Fixture("TCP goes to the slow path", _tcp, "XDP_PASS", _tcp),
    Fixture("truncated UDP header is dropped", truncate(udp(b"x"), 40), "XDP_DROP"),
]
