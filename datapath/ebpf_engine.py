"""The `interp` eBPF engine: userspace maps and the C interpreter.

    counters = Map(MapType.ARRAY, 4, 8, 16)
    prog = Program(insns, [counters])          # relocated bytecode
    res = prog.run_xdp(frame)                  # XdpResult(verdict, packet, ...)
    counters.lookup((0).to_bytes(4, "little"))

The semantics are the kernel's: instruction set (Documentation/bpf/
standardization/instruction-set.rst), helpers and map flags; see
datapath/src/ebpf_vm.c and maps.c. Keys and values are bytes of exactly
the map's key and value size.
"""
from __future__ import annotations

import enum
import errno
import typing

from ._dp import ffi, lib
from .errors import IsolaneError, check

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)


class MapType(enum.IntEnum):
    HASH = lib.DP_MAP_HASH
    ARRAY = lib.DP_MAP_ARRAY
    DEVMAP = lib.DP_MAP_DEVMAP
    XSKMAP = lib.DP_MAP_XSKMAP
    RINGBUF = lib.DP_MAP_RINGBUF


class ProgramError(IsolaneError):
    """The loader refused a program; the message names the instruction."""


class XdpResult(typing.NamedTuple):
    verdict: int      # XDP_*; XDP_ABORTED after a fault
    packet: bytes     # the packet after the run (head/tail adjusted)
    r0: int
    insns: int        # instructions executed
    fault: int        # 0 or -errno (EFAULT, E2BIG, EINVAL, ENOSPC)
    fault_pc: int
    redirect: int     # bpf_redirect_map's target


class RawResult(typing.NamedTuple):
    r0: int
    mem_after: bytes
    insns: int
    fault: int
    fault_pc: int


class Map:
    """A userspace BPF map; freed with the object (or `close()`)."""

    def __init__(self, type: int | str, key_size: int, value_size: int, max_entries: int):
        if isinstance(type, str):
            type = MapType[type.upper()]
        self.type = MapType(type)
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        d = ffi.new("struct dp_map_def *", (int(type), key_size, value_size, max_entries))
        out = ffi.new("dp_map_t **")
        check(lib.dp_map_create(d, out), f"{self.type.name} map")
        self._m = ffi.gc(out[0], lib.dp_map_free)

    def close(self) -> None:
        if self._m is not None:
            lib.dp_map_free(ffi.gc(self._m, None))
            self._m = None

    @property
    def handle(self):
        return self._m

    def _key(self, key: bytes | int) -> bytes:
        if isinstance(key, int):
            key = key.to_bytes(self.key_size, "little")
        if len(key) != self.key_size:
            raise ValueError(f"key of {len(key)} bytes, map keys are {self.key_size}")
        return key

    def lookup(self, key: bytes | int) -> bytes | None:
        """The value, or None when the key is not there."""
        out = ffi.new("uint8_t[]", max(self.value_size, 1))
        ret = lib.dp_map_lookup(self._m, self._key(key), out)
        if ret == -errno.ENOENT:
            return None
        check(ret, "map lookup")
        return bytes(ffi.buffer(out, self.value_size))

    def update(self, key: bytes | int, value: bytes, flags: int = BPF_ANY) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"value of {len(value)} bytes, map values are {self.value_size}")
        check(lib.dp_map_update(self._m, self._key(key), value, flags), "map update")

    def delete(self, key: bytes | int) -> None:
        check(lib.dp_map_delete(self._m, self._key(key)), "map delete")

    def keys(self) -> typing.Iterator[bytes]:
        """Every key once (dp_map_next_key order); not safe against
        concurrent deletion, like the kernel's iteration."""
        cur = ffi.new("uint8_t[]", max(self.key_size, 1))
        nxt = ffi.new("uint8_t[]", max(self.key_size, 1))
        prev = ffi.NULL
        while lib.dp_map_next_key(self._m, prev, nxt) == 0:
            ffi.memmove(cur, nxt, self.key_size)
            prev = cur
            yield bytes(ffi.buffer(cur, self.key_size))

    def items(self) -> typing.Iterator[tuple[bytes, bytes]]:
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def clear(self) -> None:
        """Empties the map: hash entries deleted, array values zeroed (arrays
        cannot delete, as in the kernel), ring messages drained."""
        if self.type == MapType.RINGBUF:
            while self.read_message() is not None:
                pass
        elif self.type == MapType.HASH:
            for key in list(self.keys()):
                self.delete(key)
        elif self.type == MapType.ARRAY:
            for key in list(self.keys()):
                self.update(key, bytes(self.value_size))

    def read_message(self, cap: int = 1 << 16) -> bytes | None:
        """RINGBUF: the oldest message, or None when the ring is empty."""
        buf = ffi.new("uint8_t[]", cap)
        n = check(lib.dp_ringbuf_read(self._m, buf, cap), "ringbuf read")
        return bytes(ffi.buffer(buf, n)) if n else None


class Program:
    """A validated, relocated program (8-byte little-endian instructions)."""

    def __init__(self, insns: bytes, maps: typing.Sequence[Map] = (), insn_budget: int = 0):
        if len(insns) % 8:
            raise ProgramError(f"program of {len(insns)} bytes is not whole instructions")
        self.maps = list(maps)  # kept alive: the program points at them
        handles = ffi.new("dp_map_t *[]", [m.handle for m in self.maps] or [ffi.NULL])
        err = ffi.new("char[]", 256)
        out = ffi.new("dp_prog_t **")
        n = len(insns) // 8
        words = ffi.from_buffer("uint64_t[]", insns) if n else ffi.NULL
        ret = lib.dp_prog_load(words, n, handles, len(self.maps), insn_budget, err, 256, out)
        if ret < 0:
            raise ProgramError(ffi.string(err).decode() or "program refused", errno=-ret)
        self._p = ffi.gc(out[0], lib.dp_prog_free)
        self.n_insns = n

    @property
    def handle(self):
        return self._p

    def run_xdp(self, packet: bytes, headroom: int = 256, tailroom: int = 256,
                ingress_ifindex: int = 0, rx_queue: int = 0) -> XdpResult:
        buf_len = headroom + len(packet) + tailroom
        buf = ffi.new("uint8_t[]", max(buf_len, 1))
        ffi.memmove(buf + headroom, packet, len(packet))
        res = ffi.new("struct dp_prog_result *")
        verdict = check(lib.dp_prog_run_xdp(self._p, buf, buf_len, headroom, len(packet),
                                            ingress_ifindex, rx_queue, res), "run_xdp")
        out = bytes(ffi.buffer(buf + res.data_off, res.len))
        return XdpResult(verdict, out, res.r0, res.insns, res.fault, res.fault_pc, res.redirect)

    def run_raw(self, mem: bytes = b"") -> RawResult:
        buf = ffi.new("uint8_t[]", max(len(mem), 1))
        ffi.memmove(buf, mem, len(mem))
        res = ffi.new("struct dp_prog_result *")
        lib.dp_prog_run_raw(self._p, buf if mem else ffi.NULL, len(mem), res)
        return RawResult(res.r0, bytes(ffi.buffer(buf, len(mem))), res.insns, res.fault,
                         res.fault_pc)

    def bench_xdp(self, packet: bytes, repeat: int) -> float:
        """Mean ns per run, run in place as BPF_PROG_TEST_RUN does (start and
        length reset every run; what the program wrote stays)."""
        return self.bench_xdp_detail(packet, repeat)[0]

    def bench_xdp_detail(self, packet: bytes, repeat: int) -> tuple[float, int]:
        """(mean ns per run, instructions the last run executed)."""
        last = ffi.new("struct dp_prog_result *")
        cycles = check(lib.dp_prog_bench_xdp(self._p, packet, len(packet), repeat, last),
                       "bench_xdp")
        return cycles * 1e9 / lib.dp_tsc_hz() / repeat, last.insns
