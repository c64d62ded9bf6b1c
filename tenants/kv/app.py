"""kv's slow-path application: answers the GETs the fast path missed.

kv's handler (handler.c) serves GET/SET/DELETE from a BPF hash map in the
fast path; the map is a cache, and a GET whose key is not in it is passed
(XDP_PASS) to the tenant's slow path. This program is the tenant's side of
that path: it connects to the tenant's endpoint (isolaned's
`slowpath.info`), receives each missed request (kind 1), looks the key up
in its own store (a JSON file {key: value}), and sends the reply out
through the datapath (kind 3, charged to the tenant's budget), in the same
format the handler uses: a hit with the value, otherwise KV_NOT_FOUND.
Other passed packets and ringbuf records (kind 2) are logged, one line each.

    python3 tenants/kv/app.py --endpoint /var/lib/isolane/slowpath/kv.sock \\
        --store kv-store.json

Stdlib only, so it runs as the tenant's user with any python3.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys

KV_PORT = 11211
KV_MAGIC = ord("K")
KEY_LEN, VAL_LEN, HDR_LEN = 16, 32, 20
OK, NOT_FOUND = 0, 1
ETH_LEN, IP_LEN, UDP_LEN = 14, 20, 8
L4 = ETH_LEN + IP_LEN


def ipv4_checksum(header: bytes) -> int:
    """RFC 1071 over a 20-byte header whose checksum field is zero."""
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def miss_key(frame: bytes) -> bytes | None:
    """The 16-byte key of a kv GET request in an Ethernet/IPv4/UDP frame,
    or None when the frame is anything else."""
    if len(frame) < L4 + UDP_LEN + HDR_LEN or frame[12:14] != b"\x08\x00" or frame[14] != 0x45:
        return None
    if frame[23] != 17 or struct.unpack_from("!H", frame, L4 + 2)[0] != KV_PORT:
        return None
    msg = frame[L4 + UDP_LEN:]
    if msg[0] != KV_MAGIC or msg[1] != ord("G"):
        return None
    return bytes(msg[4:4 + KEY_LEN])


def reply(request: bytes, key: bytes, value: bytes | None) -> bytes:
    """The reply the fast path would have sent: addresses and ports swapped,
    the value (or KV_NOT_FOUND), lengths and IPv4 checksum set, UDP
    checksum 0 (RFC 768: none)."""
    if value is None:
        body = bytes([KV_MAGIC, ord("G"), NOT_FOUND, 0]) + key
    else:
        body = bytes([KV_MAGIC, ord("G"), OK, len(value)]) + key + value.ljust(VAL_LEN, b"\0")
    eth = request[6:12] + request[0:6] + request[12:14]
    ip = bytearray(request[ETH_LEN:L4])
    struct.pack_into("!H", ip, 2, IP_LEN + UDP_LEN + len(body))
    ip[12:16], ip[16:20] = request[30:34], request[26:30]
    struct.pack_into("!H", ip, 10, 0)
    struct.pack_into("!H", ip, 10, ipv4_checksum(bytes(ip)))
    sport, dport = struct.unpack_from("!HH", request, L4)
    udp = struct.pack("!HHHH", dport, sport, UDP_LEN + len(body), 0)
    return eth + bytes(ip) + udp + body


def load_store(path: str | None) -> dict[bytes, bytes]:
    """{key: value} from a JSON object of strings (keys <= 16 bytes, values
    <= 32), keys zero-padded as the wire carries them."""
    if not path:
        return {}
    with open(path) as f:
        raw = json.load(f)
    store = {}
    for k, v in raw.items():
        key, value = k.encode(), v.encode()
        if len(key) > KEY_LEN or len(value) > VAL_LEN:
            raise SystemExit(f"{path}: key {k!r} or its value is too long "
                             f"(keys <= {KEY_LEN} bytes, values <= {VAL_LEN})")
        store[key.ljust(KEY_LEN, b"\0")] = value
    return store


def serve(client, store: dict[bytes, bytes], log=sys.stdout, limit: int | None = None) -> dict:
    """Answers missed GETs until the endpoint closes (or `limit` messages)."""
    from control.slowpath_client import KIND_PASSED, KIND_RINGBUF

    counts = {"answered": 0, "hits": 0, "other": 0, "ringbuf": 0}
    while limit is None or sum(counts.values()) - counts["hits"] < limit:
        try:
            kind, payload = client.recv()
        except EOFError:
            break
        if kind == KIND_PASSED and (key := miss_key(payload)) is not None:
            value = store.get(key)
            client.send_frame(reply(payload, key, value))
            counts["answered"] += 1
            counts["hits"] += value is not None
        elif kind == KIND_RINGBUF:
            counts["ringbuf"] += 1
            print(f"ringbuf record: {payload.hex()}", file=log, flush=True)
        else:
            counts["other"] += 1
            print(f"passed, not a kv GET: {len(payload)} bytes", file=log, flush=True)
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True, help="the tenant's slow-path socket")
    ap.add_argument("--store", help="JSON object {key: value}: the store behind the cache")
    ap.add_argument("--limit", type=int, help="exit after this many messages")
    args = ap.parse_args(argv)
    # the client is stdlib only: found from this checkout, no install needed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from control.slowpath_client import SlowPathClient

    store = load_store(args.store)
    with SlowPathClient(args.endpoint) as client:
        print(f"kv app: serving misses from {len(store)} keys on {args.endpoint}", flush=True)
        counts = serve(client, store, limit=args.limit)
    print(f"kv app: {counts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
