"""isolane's userspace engines for a built TenantProgram, behind the
fixture runner's engine interface (ebpf.fixtures.Engine).

`interp`: the C interpreter (datapath/src/ebpf_vm.c) with userspace maps
of the same types and sizes as the kernel's; its instruction budget is the
program's static bound, so a program that runs past its bound is stopped.
"""
from __future__ import annotations

from dataclasses import dataclass

from datapath.ebpf_engine import Map, Program

from .program import TenantProgram


@dataclass
class Loaded:
    vm: Program
    maps: dict[str, Map]


def load_interp(program: TenantProgram) -> Loaded:
    """Userspace maps and the interpreter's copy of a built program."""
    maps = {m.name: Map(m.type, m.key_size, m.value_size, m.max_entries) for m in program.maps}
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
