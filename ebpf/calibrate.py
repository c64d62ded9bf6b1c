"""The cost model measured on this machine: the interpreter's cycles per
instruction class and per helper.

Each class is timed as the difference between a program with N of its
instructions and the same program without them, both run in XDP mode by the
interpreter's benchmark entry (dp_prog_bench_xdp), so the per-run overhead
cancels out. A run of one class is the interpreter's best case (its dispatch
branch always predicted), so the classes are then scaled up to what a
shuffled mix of them costs, which is what real programs look like. Measured
once per process (about 0.3 s) and cached; `build()` uses it for every
program's cycle bound.
"""
from __future__ import annotations

import functools
import random

from datapath.ebpf_engine import Map, MapType, Program

from . import insn as I
from .bound import CostModel

N = 256          # instructions of the class under test per program
REPEAT = 5_000   # runs per measurement
ROUNDS = 3       # the least of these is taken (interference only adds)
MARGIN = 1.25    # on top of the measured costs, so that bounds stay bounds
FRAME = bytes(64)


def _program(body: list[I.Insn], setup: list[I.Insn] = (), maps=()) -> Program:
    code = [*setup, *body, I.mov64_imm(I.R0, 2), I.exit_()]  # XDP_PASS
    return Program(I.encode(code), list(maps))


def _cycles_per_run(prog: Program) -> float:
    ns = min(prog.bench_xdp(FRAME, REPEAT) for _ in range(ROUNDS))
    from datapath._dp import lib

    return ns * lib.dp_tsc_hz() / 1e9


def _per_insn_block(body: list[I.Insn], setup: list[I.Insn] = (), maps=()) -> float:
    """Cycles `body` adds to a run."""
    full = _cycles_per_run(_program(body, setup, maps))
    empty = _cycles_per_run(_program([], setup, maps))
    return max(0.1, full - empty)


def _per_insn(body_one: list[I.Insn], setup: list[I.Insn] = (), maps=()) -> float:
    """Cycles one copy of `body_one` adds to a run."""
    return _per_insn_block(body_one * N, setup, maps) / N


@functools.cache
def calibrated() -> CostModel:
    """The interpreter's costs on this machine (cached per process)."""
    stack_slot = [I.st_imm(I.SIZE_DW, I.R10, -8, 1)]
    key_on_stack = [I.st_imm(I.SIZE_W, I.R10, -4, 0), I.mov64_reg(2, I.R10),
                    I.alu64_imm(I.ADD, 2, -4)]
    array = Map(MapType.ARRAY, 4, 8, 1)
    model = CostModel(
        alu=_per_insn([I.alu64_imm(I.ADD, 3, 1)]),
        mul=_per_insn([I.alu64_imm(I.MUL, 3, 3)]),
        div=_per_insn([I.alu64_imm(I.DIV, 3, 3)]),
        load=_per_insn([I.ldx(I.SIZE_DW, 3, I.R10, -8)], stack_slot),
        store=_per_insn([I.stx(I.SIZE_DW, I.R10, 3, -16)], stack_slot),
        jump=_per_insn([I.jmp_imm(I.JEQ, 3, 12345, 0)]),
        ld_imm64=_per_insn(I.ld_imm64(3, 1 << 40)),
    )
    model.exit = model.jump
    model.entry = _cycles_per_run(_program([]))

    # the same classes shuffled: mispredicted dispatch, as in real programs
    mix = {"alu": I.alu64_imm(I.ADD, 3, 1), "load": I.ldx(I.SIZE_DW, 3, I.R10, -8),
           "store": I.stx(I.SIZE_DW, I.R10, 3, -16), "jump": I.jmp_imm(I.JEQ, 3, 12345, 0)}
    names = list(mix) * (N // len(mix))
    random.Random(1).shuffle(names)
    mixed = _per_insn_block([mix[n] for n in names], stack_slot) / len(names)
    best = sum(getattr(model, n) for n in names) / len(names)
    # a bound must hold on a shared host whose speed varies run to run
    scale = max(1.0, mixed / best) * MARGIN
    for name in ("alu", "mul", "div", "load", "store", "jump", "ld_imm64", "exit"):
        setattr(model, name, getattr(model, name) * scale)
    model.helpers[5] = _per_insn([I.call(5)])                               # ktime_get_ns
    lookup = [*I.ld_map(I.R1, 0), *key_on_stack, I.call(1)]
    model.helpers[1] = max(0.1, _per_insn(lookup, maps=[array])
                           - 4 * model.alu - model.ld_imm64)                # map_lookup_elem
    model.call = max(model.helpers.values())  # an unmeasured helper: the dearest seen
    return model
