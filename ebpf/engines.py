"""isolane's userspace engines for a built TenantProgram, behind the
fixture runner's engine interface (ebpf.fixtures.Engine).

`interp`: the C interpreter (datapath/src/ebpf_vm.c) with userspace maps
of the same types and sizes as the kernel's; its instruction budget is the
program's static bound, so a program that runs past its bound is stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from datapath.ebpf_engine import Map, MapType, Program

from .program import TenantProgram

if TYPE_CHECKING:
    from .aot import AotProgram


@dataclass
class Loaded:
    vm: Program
    maps: dict[str, Map]


def userspace_maps(program: TenantProgram) -> dict[str, Map]:
    """A userspace map for each of the program's maps. bcc reports a ring
    buffer's (unused) key and value as 4 bytes; a RINGBUF has neither, as in
    the kernel, so it is made with 0 and 0."""
    def make(m):
        ring = m.type == MapType.RINGBUF
        return Map(m.type, 0 if ring else m.key_size, 0 if ring else m.value_size,
                   m.max_entries)

    return {m.name: make(m) for m in program.maps}


def load_interp(program: TenantProgram) -> Loaded:
    """Userspace maps and the interpreter's copy of a built program."""
    maps = userspace_maps(program)
    vm = Program(program.insns, [maps[m.name] for m in program.maps],
                 insn_budget=program.bound_insns)
    return Loaded(vm, maps)


class InterpEngine:
    """The interpreter, one loaded copy (and one set of maps) per program."""

    name = "interp"

    def __init__(self):
        self._loaded: dict[int, Loaded] = {}

    def load(self, program: TenantProgram) -> Loaded:
        if id(program) not in self._loaded:
            self._loaded[id(program)] = load_interp(program)
        return self._loaded[id(program)]

    def run(self, program: TenantProgram, frame: bytes) -> tuple[int, bytes]:
        res = self.load(program).vm.run_xdp(frame)
        return res.verdict, res.packet

    def maps(self, program: TenantProgram) -> dict:
        return self.load(program).maps


# ---------------------------------------------------------------- aot

@dataclass
class LoadedAot:
    aot: "AotProgram"
    maps: dict[str, Map]


def load_aot(program: TenantProgram) -> LoadedAot:
    """Userspace maps (as load_interp) and the program jointly compiled with
    the datapath's glue (ebpf.aot): checked=False, the kernel verifier's
    proof reused; its back edges and calls are budgeted by the program's
    static bound, so it cannot hold the core."""
    from .aot import AotProgram, compile_aot

    maps = userspace_maps(program)
    module = compile_aot(program.insns, mode="xdp", checked=False, budget=program.bound_insns)
    return LoadedAot(AotProgram(module, [maps[m.name] for m in program.maps]), maps)


class AotEngine:
    """The aot engine, one compiled copy (and one set of maps) per program.
    A fault (never expected of a verified program) reports XDP_ABORTED.
    handler=True: runs through run_fn, the entry the fast path installs as
    the tenant's handler (dp_tenant_set_aot_run), on the fast path's frame
    layout; otherwise through the dp_aot_fn entry."""

    name = "aot"

    def __init__(self, handler: bool = False):
        self._loaded: dict[int, LoadedAot] = {}
        self.handler = handler
        if handler:
            self.name = "aot-handler"

    def load(self, program: TenantProgram) -> LoadedAot:
        if id(program) not in self._loaded:
            self._loaded[id(program)] = load_aot(program)
        return self._loaded[id(program)]

    def run(self, program: TenantProgram, frame: bytes) -> tuple[int, bytes]:
        aot = self.load(program).aot
        verdict, packet = aot.run_pkt(frame) if self.handler else aot.run_xdp(frame)
        return (0 if verdict == 255 else verdict), packet

    def maps(self, program: TenantProgram) -> dict:
        return self.load(program).maps
