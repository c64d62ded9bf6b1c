"""kv fixtures: a sequence (the store keeps state from one fixture to the
next). Wire format in handler.c: magic 'K', op, status, vlen, key[16],
value[32]."""
import struct

from ebpf.fixtures import Fixture
from ebpf.packets import udp, udp_reply

PORT = 11211
OK, NOT_FOUND, BAD = 0, 1, 2


def msg(op: bytes, key: bytes, value: bytes | None = None, status: int = 0, vlen=None) -> bytes:
    head = b"K" + op + bytes([status, len(value) if vlen is None and value else (vlen or 0)])
    body = key.ljust(16, b"\0")
    return head + body + (value.ljust(32, b"\0") if value is not None else b"")


def req(payload: bytes, sport: int = 40000):
    return udp(payload, sport=sport, dport=PORT)


def rep(payload: bytes, sport: int = 40000):
    return udp_reply(payload, sport=sport, dport=PORT, udp_chksum=0)


def _preload(maps):
    """A value written from the slow path side: key bytes -> (value[32], len u32)."""
    maps["kv_store"].update(b"beta".ljust(16, b"\0"),
                            b"from-setup".ljust(32, b"\0") + struct.pack("<I", 10))


_other_port = udp(msg(b"G", b"alpha"), dport=11212)

_miss = req(msg(b"G", b"alpha"))

FIXTURES = [
    Fixture("SET stores the value; the reply is shorter", req(msg(b"S", b"alpha", b"hello")),
            "XDP_TX", rep(msg(b"S", b"alpha", status=OK))),
    Fixture("GET finds it; the reply is longer", req(msg(b"G", b"alpha")), "XDP_TX",
            rep(msg(b"G", b"alpha", b"hello"))),
    Fixture("GET of a key never set misses: to the slow path, unchanged",
            req(msg(b"G", b"gamma")), "XDP_PASS", req(msg(b"G", b"gamma"))),
    Fixture("SET overwrites", req(msg(b"S", b"alpha", b"world!!")), "XDP_TX",
            rep(msg(b"S", b"alpha"))),
    Fixture("GET sees the new value", req(msg(b"G", b"alpha"), sport=40001), "XDP_TX",
            rep(msg(b"G", b"alpha", b"world!!"), sport=40001)),
    Fixture("DELETE removes it", req(msg(b"D", b"alpha")), "XDP_TX", rep(msg(b"D", b"alpha"))),
    Fixture("DELETE of a missing key", req(msg(b"D", b"alpha")), "XDP_TX",
            rep(msg(b"D", b"alpha", status=NOT_FOUND))),
    Fixture("GET after DELETE misses: the slow path answers it", _miss, "XDP_PASS", _miss),
    Fixture("a value put by the slow path is served", req(msg(b"G", b"beta")), "XDP_TX",
            rep(msg(b"G", b"beta", b"from-setup")), setup=_preload),
    Fixture("full 32-byte value", req(msg(b"S", b"k" * 16, b"v" * 32)), "XDP_TX",
            rep(msg(b"S", b"k" * 16))),
    Fixture("GET of a 16-byte key", req(msg(b"G", b"k" * 16)), "XDP_TX",
            rep(msg(b"G", b"k" * 16, b"v" * 32))),
    Fixture("unknown op", req(msg(b"X", b"alpha")), "XDP_TX",
            rep(msg(b"X", b"alpha", status=BAD))),
    Fixture("SET without its value", req(msg(b"S", b"alpha")), "XDP_TX",
            rep(msg(b"S", b"alpha", status=BAD))),
    Fixture("SET with vlen > 32", req(msg(b"S", b"alpha", b"v", vlen=33)), "XDP_TX",
            rep(msg(b"S", b"alpha", status=BAD))),
    Fixture("bad magic is dropped", req(b"Q" + msg(b"G", b"alpha")[1:]), "XDP_DROP"),
    Fixture("payload shorter than a header is dropped", req(b"KG\0\0abc"), "XDP_DROP"),
    Fixture("another port goes to the slow path", _other_port, "XDP_PASS", _other_port),
]
