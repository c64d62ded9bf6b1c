"""The tenant's side of its slow-path endpoint, and the framing both sides
use (control/slowpath.py is the daemon's side). Stdlib only: a tenant's
application imports this without the datapath.

One message per SOCK_SEQPACKET datagram: an 8-byte header
`struct.pack("<BxHI", kind, 0, length)` and `length` bytes of payload.
kind 1: a packet the tenant's handler passed (XDP_PASS), the frame;
kind 2: a record the tenant's program wrote with bpf_ringbuf_output;
kind 3 (tenant -> daemon): an Ethernet frame to transmit through the
datapath, charged to the tenant's budget.
"""
from __future__ import annotations

import os
import socket
import struct

HEADER = struct.Struct("<BxHI")
KIND_PASSED, KIND_RINGBUF, KIND_SEND = 1, 2, 3
KINDS = {KIND_PASSED: "passed", KIND_RINGBUF: "ringbuf", KIND_SEND: "send"}
MAX_MESSAGE = 1 << 16           # payload bytes: a ringbuf record may be that long
SOCKET_BUFFER = 1 << 20         # bytes a client may leave unread before it loses messages


def pack(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(kind, 0, len(payload)) + payload


def unpack(message: bytes) -> tuple[int, bytes]:
    """(kind, payload) of one datagram; ValueError when it is not one."""
    if len(message) < HEADER.size:
        raise ValueError(f"a slow-path message of {len(message)} bytes is shorter than its "
                         f"{HEADER.size}-byte header")
    kind, _zero, length = HEADER.unpack_from(message)
    if length != len(message) - HEADER.size:
        raise ValueError(f"header says {length} payload bytes, the message has "
                         f"{len(message) - HEADER.size}")
    return kind, message[HEADER.size:]


class SlowPathClient:
    """A tenant's connection to its endpoint (the path from the daemon's
    `slowpath.info`). recv() gives (kind, payload); send_frame() transmits an
    Ethernet frame through the datapath, charged to the tenant."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.sock.connect(self.path)
        except BaseException:
            self.sock.close()
            raise
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next message as (kind, payload); None after `timeout` seconds
        without one. EOFError when the daemon closed the endpoint."""
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(HEADER.size + MAX_MESSAGE)
        except (socket.timeout, BlockingIOError):
            return None
        if not message:
            raise EOFError(f"slow-path endpoint {self.path} closed")
        return unpack(message)

    def send_frame(self, frame: bytes) -> None:
        """Queues an Ethernet frame (14..1728 bytes) for transmission; blocks
        while the tenant's send path is full."""
        self.sock.settimeout(None)
        self.sock.send(pack(KIND_SEND, bytes(frame)))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
