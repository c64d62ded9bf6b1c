"""The kernel as oracle and anchor: bpf(2) through ctypes.

`test_run` runs a loaded XDP program on one packet with BPF_PROG_TEST_RUN
(what the kernel, JIT included, returns and how long it took); `load_raw_xdp`
loads raw bytecode with BPF_PROG_LOAD and a log buffer, so bytecode that did
not come from bcc is still proved by the verifier; `KernelMap` reads and
writes a kernel map with plain bytes, the interface fixtures use for every
engine. Never in the fast path: one syscall per call.

The `bpf_attr` layouts follow include/uapi/linux/bpf.h; only the prefix of
the union that a command reads is passed (the kernel zero-extends it).
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform
import struct
from dataclasses import dataclass

from .errors import IsolaneError

from .errors import VerifierError
from .insn import LD_IMM64, PSEUDO_MAP_FD, Insn, decode, encode, slot_starts

_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}

# bpf(2) commands
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10

BPF_PROG_TYPE_XDP = 6
BPF_ANY = 0

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
VERDICT_NAMES = {XDP_ABORTED: "XDP_ABORTED", XDP_DROP: "XDP_DROP", XDP_PASS: "XDP_PASS",
                 XDP_TX: "XDP_TX", XDP_REDIRECT: "XDP_REDIRECT"}

LOG_SIZE = 1 << 24  # the verifier's log for a 1M-insn walk at level 1 fits
_OUT_SLACK = 4096  # room for xdp_adjust_tail growth in data_out

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class KernelError(IsolaneError):
    """A bpf(2) command failed; `errno` says why."""


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    nr = _SYSCALL_BPF.get(platform.machine())
    if nr is None:
        raise KernelError(f"bpf(2) syscall number unknown on {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr,
                        ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        return -ctypes.get_errno()
    return ret


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise KernelError(f"{what}: {os.strerror(-ret)}", errno=-ret)
    return ret


def _addr(buf) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


# ------------------------------------------------------------------ test run

# bpf_attr.test: prog_fd, retval, data_size_in, data_size_out, data_in,
# data_out, repeat, duration, ctx_size_in, ctx_size_out, ctx_in, ctx_out,
# flags, cpu, batch_size
_TEST = struct.Struct("<IIIIQQIIIIQQIII")


@dataclass(frozen=True)
class KernelRun:
    """What BPF_PROG_TEST_RUN reported: the program's return value (the XDP
    verdict), the packet after the program, and the mean time per run."""

    retval: int
    data_out: bytes
    duration_ns: int

    @property
    def verdict(self) -> str:
        return VERDICT_NAMES.get(self.retval, f"XDP_{self.retval}")


def test_run(prog_fd: int, data: bytes, repeat: int = 1, ctx: bytes | None = None) -> KernelRun:
    """Runs the XDP program `prog_fd` on `data` `repeat` times in the kernel.

    `ctx` is an optional `struct xdp_md` image (ingress_ifindex and
    rx_queue_index must then name a real device and queue). The kernel refuses
    `data` shorter than an Ethernet header (14 bytes): that raises KernelError
    with errno EINVAL, never a verdict.
    """
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    data_in = ctypes.create_string_buffer(bytes(data), max(len(data), 1))
    out_size = len(data) + _OUT_SLACK
    data_out = ctypes.create_string_buffer(out_size)
    ctx_in = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    attr = ctypes.create_string_buffer(_TEST.size)
    _TEST.pack_into(attr, 0, prog_fd, 0, len(data), out_size, _addr(data_in), _addr(data_out),
                    repeat, 0, len(ctx) if ctx else 0, 0, _addr(ctx_in), 0, 0, 0, 0)
    _check(_bpf(BPF_PROG_TEST_RUN, attr), "BPF_PROG_TEST_RUN")
    fields = _TEST.unpack_from(attr, 0)
    retval, size_out, duration = fields[1], fields[3], fields[7]
    return KernelRun(retval, data_out.raw[:size_out], duration)


# ------------------------------------------------------------------ raw load

# bpf_attr prog-load prefix: prog_type, insn_cnt, insns, license, log_level,
# log_size, log_buf, kern_version, prog_flags, prog_name[16], prog_ifindex,
# expected_attach_type
_LOAD = struct.Struct("<IIQQIIQII16sII")


BPF_LOG_LEVEL1, BPF_LOG_STATS = 1, 4


def load_raw_xdp(insns: bytes, map_fds: list[int] | tuple[int, ...] | None = (),
                 name: str = "isolane") -> tuple[int, str]:
    """Loads raw XDP bytecode into the kernel; returns `(prog_fd, verifier_log)`.

    `insns` uses the kernel's `struct xdp_md` context (not the relocated
    64-bit layout). Each LD_IMM64 with src_reg=PSEUDO_MAP_FD carries a map
    *index* into `map_fds` (isolane's relocated form); it is patched to the
    fd before loading; `map_fds=None` loads the LD_IMM64s as they are (they
    carry fds already, as in bcc's dumped bytecode). The load asks only for the verifier's statistics; a
    rejection is retried with the full log (kept to its tail by the kernel
    when long) and raises VerifierError with it. The caller owns the fd.
    """
    slots = decode(insns)
    starts = slot_starts(slots)
    patched: list[Insn] = []
    for i, ins in enumerate(slots):
        if map_fds is not None and starts[i] and ins.code == LD_IMM64 and ins.src == PSEUDO_MAP_FD:
            if not 0 <= ins.imm < len(map_fds):
                raise VerifierError(f"map index {ins.imm} at insn {i} has no map fd")
            ins = Insn(ins.code, ins.dst, ins.src, ins.off, map_fds[ins.imm])
        patched.append(ins)
    code = encode(patched)
    fd, log = _prog_load(code, name, BPF_LOG_STATS)
    if fd >= 0:
        return fd, log
    err = -fd
    fd, full = _prog_load(code, name, BPF_LOG_LEVEL1)
    if fd >= 0:  # accepted on the second try: not expected, but not an error
        return fd, full
    log = full or log
    from .verify import reason_of  # one definition of "the reason"
    raise VerifierError(reason_of(log) or os.strerror(err), log, errno=err)


def _prog_load(code: bytes, name: str, log_level: int) -> tuple[int, str]:
    prog = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(LOG_SIZE)
    attr = ctypes.create_string_buffer(_LOAD.size)
    _LOAD.pack_into(attr, 0, BPF_PROG_TYPE_XDP, len(code) // 8, _addr(prog), _addr(lic),
                    log_level, LOG_SIZE, _addr(log), 0, 0, name.encode()[:15], 0, 0)
    fd = _bpf(BPF_PROG_LOAD, attr)
    return fd, log.value.decode(errors="replace")


# ------------------------------------------------------------------ maps

# bpf_attr map-elem: map_fd, pad, key, value|next_key, flags
_ELEM = struct.Struct("<IIQQQ")


class KernelMap:
    """A kernel map seen as bytes: the engine-neutral map handle fixtures use."""

    def __init__(self, fd: int, key_size: int, value_size: int, name: str = ""):
        self.fd, self.key_size, self.value_size, self.name = fd, key_size, value_size, name

    def _elem(self, cmd: int, key: bytes | None, value, flags: int = 0) -> int:
        kbuf = ctypes.create_string_buffer(key, self.key_size) if key is not None else None
        attr = ctypes.create_string_buffer(_ELEM.size)
        _ELEM.pack_into(attr, 0, self.fd, 0, _addr(kbuf), _addr(value), flags)
        return _bpf(cmd, attr)

    def _key(self, key: bytes) -> bytes:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, expected {self.key_size}")
        return key

    def update(self, key: bytes, value: bytes) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, expected {self.value_size}")
        vbuf = ctypes.create_string_buffer(value, self.value_size)
        _check(self._elem(BPF_MAP_UPDATE_ELEM, self._key(key), vbuf, BPF_ANY), f"update {self.name}")

    def lookup(self, key: bytes) -> bytes | None:
        vbuf = ctypes.create_string_buffer(self.value_size)
        ret = self._elem(BPF_MAP_LOOKUP_ELEM, self._key(key), vbuf)
        if ret == -_errno.ENOENT:
            return None
        _check(ret, f"lookup {self.name}")
        return vbuf.raw

    def delete(self, key: bytes) -> bool:
        ret = self._elem(BPF_MAP_DELETE_ELEM, self._key(key), None)
        if ret == -_errno.ENOENT:
            return False
        _check(ret, f"delete {self.name}")
        return True

    def keys(self) -> list[bytes]:
        out, key = [], None
        while True:
            nbuf = ctypes.create_string_buffer(self.key_size)
            ret = self._elem(BPF_MAP_GET_NEXT_KEY, key, nbuf)
            if ret == -_errno.ENOENT:
                return out
            _check(ret, f"next key {self.name}")
            key = nbuf.raw
            out.append(key)

    def clear(self) -> None:
        """Deletes every key (hash maps); array maps cannot delete, so their
        values are zeroed instead."""
        for key in self.keys():
            if self._elem(BPF_MAP_DELETE_ELEM, key, None) == -_errno.EINVAL:
                self.update(key, bytes(self.value_size))


# r1 = xdp_md->data, r2 = data_end - data: the raw calling convention
# (r1 = memory, r2 = its length) on top of an XDP program's context
_RAW_PROLOGUE = bytes.fromhex(
    "6112040000000000"   # r2 = *(u32 *)(r1 + 4)   data_end
    "6111000000000000"   # r1 = *(u32 *)(r1 + 0)   data
    "1f12000000000000")  # r2 -= r1


def run_raw(insns: bytes, mem: bytes) -> tuple[int, bytes]:
    """Raw bytecode in the kernel, as `isolane prog run --raw --engine kernel`
    runs it: loaded as XDP behind a prologue that sets r1 to the memory and
    r2 to its length, so the verifier must accept every access it makes.
    Returns (r0 as the kernel reports it: 32 bits, memory after the run)."""
    if len(mem) < 14:
        raise KernelError("the kernel's test run needs at least 14 bytes of memory "
                          "(an Ethernet header)")
    fd, _ = load_raw_xdp(_RAW_PROLOGUE + insns, name="isolane_raw")
    try:
        run = test_run(fd, mem)
    finally:
        os.close(fd)
    return run.retval, run.data_out
