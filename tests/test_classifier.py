"""Classification (rules -> tenant), malformed-header handling and the echo
handler, one packet at a time through `Datapath.process` (dp_process_one)."""
from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from datapath import ConfigError, Rule
from datapath.probe import tcp_frame, udp_frame

pytestmark = pytest.mark.unit

TENANTS = (1, 2, 3, 4, 5, 6)


@pytest.fixture
def dp(dp_factory):
    d = dp_factory("fifo")
    for t in TENANTS:
        d.add_tenant(t, handler="echo")
    return d


def eth():
    return Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")


def arp_frame(vlan: int | None = None) -> bytes:
    l2 = Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:02")
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    return bytes(l2 / ARP(pdst="10.0.0.1", psrc="10.0.0.2"))


def tenant_of(dp, frame: bytes):
    verdict, tenant, _ = dp.process(frame)
    return tenant if tenant is not None else verdict


# ---- matching ----

def test_match_by_ip(dp):
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(2, ip_dst="10.0.0.9")])
    assert dp.process(udp_frame("10.0.0.1"))[:2] == ("tx", 1)
    assert dp.process(tcp_frame("10.0.0.1"))[:2] == ("tx", 1)
    assert dp.process(udp_frame("10.0.0.9"))[:2] == ("tx", 2)
    assert tenant_of(dp, udp_frame("10.0.0.2")) == "unknown"


def test_match_by_udp_port(dp):
    dp.set_rules([Rule(1, dport=53, proto="udp"), Rule(2, dport=53, proto="tcp")])
    assert tenant_of(dp, udp_frame("10.1.2.3", dport=53)) == 1
    assert tenant_of(dp, tcp_frame("10.1.2.3", dport=53)) == 2
    assert tenant_of(dp, udp_frame("10.1.2.3", dport=54)) == "unknown"


def test_match_by_tcp_port(dp):
    dp.set_rules([Rule(3, dport=443, proto="tcp")])
    assert tenant_of(dp, tcp_frame("192.168.0.1", dport=443)) == 3
    assert tenant_of(dp, udp_frame("192.168.0.1", dport=443)) == "unknown"
    assert tenant_of(dp, tcp_frame("192.168.0.1", dport=444)) == "unknown"


def test_port_rule_without_proto_matches_udp_and_tcp(dp):
    dp.set_rules([Rule(1, dport=8080)])
    assert tenant_of(dp, udp_frame(dport=8080)) == 1
    assert tenant_of(dp, tcp_frame(dport=8080)) == 1
    # a port on the source side does not match a dport rule
    assert tenant_of(dp, udp_frame(dport=9, sport=8080)) == "unknown"


def test_match_by_proto_only(dp):
    dp.set_rules([Rule(1, proto="udp"), Rule(2, proto="tcp")])
    assert tenant_of(dp, udp_frame("1.2.3.4", dport=1)) == 1
    assert tenant_of(dp, tcp_frame("5.6.7.8", dport=2)) == 2
    icmp = bytes(eth() / IP(dst="10.0.0.1") / ICMP())
    assert tenant_of(dp, icmp) == "unknown"


def test_match_by_vlan(dp):
    dp.set_rules([Rule(1, vlan=100), Rule(2, vlan=200), Rule(3, ip_dst="10.0.0.1")])
    assert tenant_of(dp, udp_frame("10.0.0.7", vlan=100)) == 1
    assert tenant_of(dp, tcp_frame("10.0.0.7", vlan=200)) == 2
    assert tenant_of(dp, udp_frame("10.0.0.7", vlan=300)) == "unknown"
    assert tenant_of(dp, udp_frame("10.0.0.7")) == "unknown"  # untagged
    # an IP rule beats a VLAN rule
    assert tenant_of(dp, udp_frame("10.0.0.1", vlan=100)) == 3


def test_vlan_and_port_rule(dp):
    dp.set_rules([Rule(1, vlan=10, dport=7), Rule(2, vlan=10)])
    assert tenant_of(dp, udp_frame(dport=7, vlan=10)) == 1
    assert tenant_of(dp, udp_frame(dport=8, vlan=10)) == 2
    assert tenant_of(dp, udp_frame(dport=7, vlan=11)) == "unknown"


def test_catch_all(dp):
    dp.set_rules([Rule(4), Rule(1, ip_dst="10.0.0.1")])
    assert tenant_of(dp, udp_frame("10.0.0.1")) == 1
    assert tenant_of(dp, udp_frame("10.9.9.9")) == 4
    assert tenant_of(dp, tcp_frame("10.9.9.9", vlan=5)) == 4
    assert tenant_of(dp, bytes(eth() / IP(dst="10.9.9.9") / ICMP())) == 4


def test_most_specific_wins(dp):
    dp.set_rules([
        Rule(1, ip_dst="10.0.0.1"),
        Rule(2, dport=7),
        Rule(3, ip_dst="10.0.0.1", dport=7),
        Rule(4, proto="udp"),
        Rule(5),
    ])
    assert tenant_of(dp, udp_frame("10.0.0.1", dport=7)) == 3   # IP + port
    assert tenant_of(dp, udp_frame("10.0.0.2", dport=7)) == 2   # port beats proto
    assert tenant_of(dp, tcp_frame("10.0.0.2", dport=7)) == 2
    assert tenant_of(dp, udp_frame("10.0.0.1", dport=8)) == 4   # proto beats IP
    assert tenant_of(dp, tcp_frame("10.0.0.1", dport=8)) == 1   # IP beats catch-all
    assert tenant_of(dp, tcp_frame("10.0.0.2", dport=8)) == 5


def test_port_rule_beats_ip_rule(dp):
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(2, dport=7)])
    assert tenant_of(dp, udp_frame("10.0.0.1", dport=7)) == 2
    assert tenant_of(dp, udp_frame("10.0.0.1", dport=8)) == 1


def test_rule_order_does_not_matter(dp):
    rules = [Rule(1, ip_dst="10.0.0.1"), Rule(2, dport=7), Rule(3, ip_dst="10.0.0.1", dport=7)]
    frames = [udp_frame("10.0.0.1", dport=7), udp_frame("10.0.0.1", dport=8),
              udp_frame("10.0.0.5", dport=7)]
    dp.set_rules(rules)
    want = [tenant_of(dp, f) for f in frames]
    dp.set_rules(rules[::-1])
    assert [tenant_of(dp, f) for f in frames] == want == [3, 1, 2]


def test_no_rules_means_unknown(dp):
    assert dp.process(udp_frame()) == ("unknown", None, b"")
    dp.set_rules([])
    assert dp.process(udp_frame()) == ("unknown", None, b"")


def test_rule_for_absent_tenant_is_unknown(dp):
    dp.set_rules([Rule(200, ip_dst="10.0.0.1")])
    assert tenant_of(dp, udp_frame("10.0.0.1")) == "unknown"


def test_non_ipv4_only_matches_vlan_or_catch_all(dp):
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(2, proto="udp"), Rule(3, dport=7)])
    assert tenant_of(dp, arp_frame()) == "unknown"
    assert tenant_of(dp, arp_frame(vlan=42)) == "unknown"
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(5, vlan=42)])
    assert tenant_of(dp, arp_frame(vlan=42)) == 5
    assert tenant_of(dp, arp_frame()) == "unknown"
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(6)])
    verdict, tenant, _ = dp.process(arp_frame())
    assert tenant == 6
    assert verdict == "drop"  # echo does not understand ARP: it drops


# ---- rule validation ----

def test_duplicate_rule_is_a_config_error(dp):
    dp.set_rules([Rule(1, ip_dst="10.0.0.1")])
    with pytest.raises(ConfigError):
        dp.set_rules([Rule(1, ip_dst="10.0.0.5", dport=7), Rule(2, ip_dst="10.0.0.5", dport=7)])
    with pytest.raises(ConfigError):
        dp.set_rules([Rule(1), Rule(1)])
    # a failed install leaves the old rules in place
    assert tenant_of(dp, udp_frame("10.0.0.1")) == 1
    assert tenant_of(dp, udp_frame("10.0.0.5", dport=7)) == "unknown"


@pytest.mark.parametrize("fields", [
    dict(tenant=-1), dict(tenant=256), dict(tenant=1, dport=0), dict(tenant=1, dport=65536),
    dict(tenant=1, vlan=0), dict(tenant=1, vlan=4096), dict(tenant=1, proto="icmp"),
    dict(tenant=1, ip_dst="10.0.0"), dict(tenant=1, ip_dst="10.0.0.256"),
    dict(tenant=1, ip_dst="::1"),
])
def test_invalid_rule_fields(fields):
    with pytest.raises(ConfigError):
        Rule(**fields)


def test_ip_rule_for_0_0_0_0_is_refused():
    # 0 is the C wildcard: accepting it would silently make a catch-all rule
    with pytest.raises(ConfigError, match="0.0.0.0"):
        Rule(1, ip_dst="0.0.0.0")


def test_set_rules_replaces_all_rules(dp):
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(2, dport=7)])
    assert tenant_of(dp, udp_frame("10.0.0.1", dport=9)) == 1
    dp.set_rules([Rule(3, ip_dst="10.0.0.2")])
    assert tenant_of(dp, udp_frame("10.0.0.1", dport=9)) == "unknown"
    assert tenant_of(dp, udp_frame("10.0.0.3", dport=7)) == "unknown"
    assert tenant_of(dp, udp_frame("10.0.0.2", dport=7)) == 3
    assert dp.rules == [Rule(3, ip_dst="10.0.0.2")]


def test_many_rules(dp):
    rules = [Rule(1 + i % 6, ip_dst=f"10.{i >> 8}.{i & 255}.1") for i in range(4000)]
    dp.set_rules(rules)
    for i in (0, 1, 255, 256, 1234, 3999):
        assert tenant_of(dp, udp_frame(f"10.{i >> 8}.{i & 255}.1")) == 1 + i % 6
    assert tenant_of(dp, udp_frame("10.200.0.1")) == "unknown"


# ---- malformed headers ----

def _ip_udp(**ip):
    return eth() / IP(dst="10.0.0.1", **ip) / UDP(dport=7) / (b"x" * 24)


def _patch(frame: bytes, off: int, data: bytes) -> bytes:
    return frame[:off] + data + frame[off + len(data):]


GOOD = bytes(_ip_udp())
GOOD_TCP = tcp_frame("10.0.0.1", dport=7)

MALFORMED = {
    "shorter than Ethernet": GOOD[:13],
    "empty": b"",
    "truncated VLAN tag": bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02", type=0x8100))[:14] + b"\x00\x64",
    "truncated IPv4 header": GOOD[:14 + 19],
    "IPv4 with VLAN, truncated": udp_frame(vlan=5)[:18 + 12],
    "IPv4 version 6 in an IPv4 ethertype": _patch(GOOD, 14, b"\x65"),
    "IHL < 5": _patch(GOOD, 14, b"\x44"),
    "IHL larger than total length": bytes(eth() / IP(dst="10.0.0.1", len=20, ihl=6) / (b"\0" * 4)),
    "IPv4 total length beyond the frame": _patch(GOOD, 16, struct.pack(">H", len(GOOD) - 14 + 1)),
    "UDP length beyond the IP payload": _patch(GOOD, 14 + 20 + 4, struct.pack(">H", 8 + 24 + 1)),
    "UDP length below its header": _patch(GOOD, 14 + 20 + 4, struct.pack(">H", 7)),
    "IP payload shorter than a UDP header": bytes(eth() / IP(dst="10.0.0.1", proto=17) / b"abc"),
    "truncated TCP header": GOOD_TCP[:14 + 20 + 10],
    "TCP header cut by IP total length": bytes(eth() / IP(dst="10.0.0.1", proto=6) / (b"\0" * 12)),
    "TCP data offset < 5": _patch(GOOD_TCP, 14 + 20 + 12, b"\x40"),
    "TCP data offset beyond the IP payload": _patch(GOOD_TCP, 14 + 20 + 12, b"\x60"),
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed(dp, frame):
    dp.set_rules([Rule(1)])  # a catch-all: anything parseable would match
    assert dp.process(frame) == ("malformed", None, b"")


def test_good_frames_behind_the_malformed_table_are_fine(dp):
    dp.set_rules([Rule(1)])
    for frame in (GOOD, GOOD_TCP, udp_frame(vlan=5)):
        assert dp.process(frame)[:2] == ("tx", 1)


def test_ip_fragment_matches_by_ip_only(dp):
    """A later fragment has no L4 header: only non-port rules can match it."""
    dp.set_rules([Rule(1, ip_dst="10.0.0.1"), Rule(2, ip_dst="10.0.0.1", dport=7)])
    frag = bytes(eth() / IP(dst="10.0.0.1", proto=17, frag=100) / (b"\0" * 4))
    assert tenant_of(dp, frag) == 1
    assert tenant_of(dp, GOOD) == 2


@pytest.mark.parametrize("make", [lambda: udp_frame("10.0.0.1", dport=7, size=128),
                                  lambda: udp_frame("10.0.0.1", dport=7, vlan=9),
                                  lambda: tcp_frame("10.0.0.1", dport=7)],
                         ids=["udp", "udp-vlan", "tcp"])
def test_truncation_at_every_byte(dp, make):
    frame = make()
    dp.set_rules([Rule(1, ip_dst="10.0.0.1", dport=7)])
    assert dp.process(frame)[:2] == ("tx", 1)
    for n in range(len(frame)):
        verdict, tenant, out = dp.process(frame[:n])
        # every header length is exact, so any cut lands inside a claimed length
        assert (verdict, tenant, out) == ("malformed", None, b""), n


# ---- the echo handler ----

def _udp_sum_ok(pkt) -> bool:
    got = pkt[UDP].chksum
    fresh = pkt.copy()
    del fresh[UDP].chksum
    return Ether(bytes(fresh))[UDP].chksum == got


@pytest.mark.parametrize("vlan", [None, 7])
def test_echo_swaps_addresses_and_keeps_checksums(dp, vlan):
    dp.set_rules([Rule(1, dport=7)])
    frame = udp_frame("10.0.0.1", dport=7, src="192.168.3.4", sport=40000, vlan=vlan, size=100,
                      eth_dst="02:00:00:00:00:aa", eth_src="02:00:00:00:00:bb")
    verdict, tenant, out = dp.process(frame)
    assert (verdict, tenant) == ("tx", 1)
    assert len(out) == len(frame)
    a, b = Ether(frame), Ether(out)
    assert (b.dst, b.src) == (a.src, a.dst)
    assert (b[IP].src, b[IP].dst) == (a[IP].dst, a[IP].src)
    assert (b[UDP].sport, b[UDP].dport) == (a[UDP].dport, a[UDP].sport)
    assert bytes(b[UDP].payload) == bytes(a[UDP].payload)
    if vlan is not None:
        assert b[Dot1Q].vlan == vlan
    assert b[UDP].chksum != 0
    assert _udp_sum_ok(b)
    fresh = b.copy()
    del fresh[IP].chksum
    assert Ether(bytes(fresh))[IP].chksum == b[IP].chksum
    # echoing the echo gives back the original frame
    dp.set_rules([Rule(1)])
    assert dp.process(out)[2] == frame


def test_echo_tcp(dp):
    dp.set_rules([Rule(2, proto="tcp")])
    frame = tcp_frame("10.0.0.1", dport=80, src="10.0.0.2", sport=1234)
    verdict, tenant, out = dp.process(frame)
    assert (verdict, tenant) == ("tx", 2)
    b = Ether(out)
    assert (b[TCP].sport, b[TCP].dport) == (80, 1234)
    assert (b[IP].src, b[IP].dst) == ("10.0.0.1", "10.0.0.2")
    fresh = b.copy()
    del fresh[TCP].chksum
    assert Ether(bytes(fresh))[TCP].chksum == b[TCP].chksum


def test_drop_handler(dp_factory):
    d = dp_factory("fifo")
    d.add_tenant(1, handler="drop")
    d.set_rules([Rule(1)])
    assert d.process(udp_frame())[:2] == ("drop", 1)
