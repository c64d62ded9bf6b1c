"""Relocation: bcc's bytecode -> bytecode isolane's engines run.

Two rewrites, each its own function:

* **maps** (`relocate_maps`): every LD_IMM64 with src_reg=PSEUDO_MAP_FD
  carries a bcc map fd in `imm`; it becomes the index of that map in the
  program's map list (`MapSpec`s, bcc's table order). src_reg stays 1, so an
  engine still knows the constant is a map reference.
* **context** (`rewrite_ctx`): the kernel's `struct xdp_md` holds 32-bit
  `data`/`data_end`/`data_meta` that the verifier turns into pointers;
  isolane's context is

      struct dp_xdp_ctx { u64 data; u64 data_end; u64 data_meta;
                          u32 ingress_ifindex; u32 rx_queue_index;
                          u32 egress_ifindex; u32 pad; };

  A forward must-analysis over the CFG tracks which registers and 8-byte
  stack slots *definitely* hold the context pointer (r1 at insn 0), and
  rewrites each load through it: off 0/4/8 (LDX_W) -> LDX_DW off 0/8/16,
  off 12/16/20 -> off 24/28/32 (narrower loads of those u32 fields keep
  their size and move by 12). A context access through a register that
  holds the context on some paths only is an error, as is any store to it.

The analysis also follows stack pointers (r10 + constant, spilled and
reloaded), packet and map-value pointers, so that stores through them do
not make a spilled context "maybe". A store through a pointer it cannot
classify demotes every spilled context slot to "maybe"; a later load
through such a slot is then refused (conservative, never wrong). BPF-to-BPF
calls are refused: bcc cannot load them either (see isolane.h).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .errors import RelocationError
from .insn import (ADD, ALU, ALU64, ATOMIC_CMPXCHG, ATOMIC_FETCH, CALL, EXIT, JA, JMP, JMP32, LD,
                   LD_IMM64, LDX, MODE_ATOMIC, MODE_MEM, MOV, PSEUDO_CALL, PSEUDO_MAP_FD, R0,
                   SIZE_DW, SRC_X, ST, STX, SUB, Insn, slot_starts)
from .program import MapSpec

# ------------------------------------------------------------------ maps


def map_specs(bpf, names: list[str]) -> tuple[list[MapSpec], dict[int, int]]:
    """The bcc object's maps as MapSpecs, and bcc map fd -> index."""
    specs, fd_index = [], {}
    for name in names:
        table = bpf[name.encode()]
        key = ctypes.sizeof(table.Key) if table.Key is not None else 0
        value = ctypes.sizeof(table.Leaf) if table.Leaf is not None else 0
        fd_index[table.map_fd] = len(specs)
        specs.append(MapSpec(name, int(table.ttype), key, value, int(table.max_entries)))
    return specs, fd_index


def relocate_maps(insns: list[Insn], fd_index: dict[int, int]) -> list[Insn]:
    """Map fds in LD_IMM64 (src_reg=1) -> map indexes."""
    out = list(insns)
    starts = slot_starts(insns)
    for i, ins in enumerate(insns):
        if not (starts[i] and ins.code == LD_IMM64):
            continue
        if ins.src == PSEUDO_MAP_FD:
            if ins.imm not in fd_index:
                raise RelocationError(f"map fd {ins.imm} is not one of the program's maps", i)
            out[i] = Insn(ins.code, ins.dst, ins.src, ins.off, fd_index[ins.imm])
        elif ins.src != 0:
            raise RelocationError(f"LD_IMM64 with src_reg={ins.src} is not supported", i)
    return out


# ------------------------------------------------------------------ context

# abstract values of a register or an 8-byte stack slot
CTX, MAYBE_CTX, PKT, MAPVAL, SCALAR, UNKNOWN = "ctx", "maybe_ctx", "pkt", "mapval", "scalar", "unknown"
HELPER_MAP_LOOKUP = 1

# xdp_md offset -> dp_xdp_ctx offset
PTR_FIELDS = {0: 0, 4: 8, 8: 16}  # data, data_end, data_meta: u32 -> u64
U32_FIELDS_START, U32_FIELDS_END, U32_FIELDS_NEW = 12, 24, 24  # ingress_ifindex .. egress_ifindex
DP_XDP_CTX_SIZE = 40


def _fp(k: int) -> tuple[str, int]:
    return ("fp", k)


def _is_fp(v) -> bool:
    return isinstance(v, tuple)


def _join_val(a, b):
    if a == b:
        return a
    if a in (CTX, MAYBE_CTX) or b in (CTX, MAYBE_CTX):
        return MAYBE_CTX
    return UNKNOWN


@dataclass(frozen=True)
class _State:
    regs: tuple  # 11 abstract values
    stack: frozenset  # of (offset from r10, value); absent slots are SCALAR

    def slot(self, off: int):
        for k, v in self.stack:
            if k == off:
                return v
        return SCALAR

    def join(self, other: "_State") -> "_State":
        regs = tuple(_join_val(a, b) for a, b in zip(self.regs, other.regs))
        mine, theirs = dict(self.stack), dict(other.stack)
        stack = {}
        for k in mine.keys() | theirs.keys():
            v = _join_val(mine.get(k, SCALAR), theirs.get(k, SCALAR))
            if v != SCALAR:
                stack[k] = v
        return _State(regs, frozenset(stack.items()))


_ENTRY = _State((SCALAR, CTX) + (SCALAR,) * 8 + (_fp(0),), frozenset())


def _stack_base(v, insn_off: int) -> int | None:
    return v[1] + insn_off if _is_fp(v) else None


def _store(state: _State, base, off: int, size: int, value, i: int) -> frozenset:
    """Stack after a store of `size` bytes through `base`+off."""
    if base in (CTX, MAYBE_CTX):
        raise RelocationError("store to the context", i)
    addr = _stack_base(base, off)
    stack = dict(state.stack)
    if addr is None:
        if base in (PKT, MAPVAL):
            return state.stack
        # an unclassified pointer might alias the stack
        return frozenset((k, MAYBE_CTX if v == CTX else v) for k, v in stack.items())
    for k in list(stack):
        if k < addr + size and addr < k + 8:
            del stack[k]
    if size == 8 and value != SCALAR:
        stack[addr] = value
    return frozenset(stack.items())


def _transfer(ins: Insn, state: _State, i: int) -> _State:
    regs = list(state.regs)
    stack = state.stack
    cls = ins.cls
    if cls in (ALU, ALU64):
        if cls == ALU:
            regs[ins.dst] = SCALAR
        elif ins.op == MOV:
            regs[ins.dst] = regs[ins.src] if ins.code & SRC_X else SCALAR
        else:
            d = regs[ins.dst]
            s = regs[ins.src] if ins.code & SRC_X else SCALAR
            if d in (CTX, MAYBE_CTX) or s in (CTX, MAYBE_CTX):
                regs[ins.dst] = MAYBE_CTX  # modified ctx: the kernel refuses loads through it
            elif _is_fp(d) and not ins.code & SRC_X and ins.op in (ADD, SUB):
                regs[ins.dst] = _fp(d[1] + (ins.imm if ins.op == ADD else -ins.imm))
            elif d in (PKT, MAPVAL) or _is_fp(d):
                regs[ins.dst] = d if not _is_fp(d) else UNKNOWN
            elif ins.op == ADD and (s in (PKT, MAPVAL) or _is_fp(s)):
                regs[ins.dst] = s if not _is_fp(s) else UNKNOWN
            else:
                regs[ins.dst] = SCALAR
    elif cls == LDX:
        base = regs[ins.src]
        if base == CTX:
            regs[ins.dst] = PKT if ins.off in PTR_FIELDS else SCALAR
        elif base == MAYBE_CTX:
            raise RelocationError(f"context load through r{ins.src}, which holds the context "
                                  "on some paths only", i)
        elif _is_fp(base) and ins.code & 0x18 == SIZE_DW:
            regs[ins.dst] = state.slot(base[1] + ins.off)
        else:
            regs[ins.dst] = SCALAR
    elif cls == ST:
        stack = _store(state, regs[ins.dst], ins.off, ins.size, SCALAR, i)
    elif cls == STX:
        if ins.mode == MODE_ATOMIC:
            stack = _store(state, regs[ins.dst], ins.off, ins.size, SCALAR, i)
            if ins.imm == ATOMIC_CMPXCHG:
                regs[R0] = SCALAR
            elif ins.imm & ATOMIC_FETCH:
                regs[ins.src] = SCALAR
        else:
            stack = _store(state, regs[ins.dst], ins.off, ins.size, regs[ins.src], i)
    elif cls == LD:
        regs[ins.dst] = SCALAR
    elif cls in (JMP, JMP32) and ins.op == CALL:
        if ins.src == PSEUDO_CALL:
            raise RelocationError("BPF-to-BPF call (tenant helpers must be static __always_inline)", i)
        regs[R0] = MAPVAL if ins.imm == HELPER_MAP_LOOKUP else SCALAR
        for r in range(1, 6):
            regs[r] = SCALAR
    return _State(tuple(regs), stack)


def successors(insns: list[Insn], i: int) -> list[int]:
    """Slot indexes control can reach after the instruction at slot i."""
    ins = insns[i]
    if ins.code == LD_IMM64:
        return [i + 2]
    if ins.cls in (JMP, JMP32):
        if ins.op == EXIT:
            return []
        if ins.op == CALL:
            return [i + 1]
        if ins.op == JA:
            return [i + 1 + ins.off]
        return [i + 1, i + 1 + ins.off]
    return [i + 1]


def ctx_states(insns: list[Insn]) -> list[_State | None]:
    """Fixpoint of the must-analysis: the abstract state before each slot
    (None for unreachable slots and LD_IMM64 second halves)."""
    n = len(insns)
    states: list[_State | None] = [None] * n
    if n == 0:
        return states
    states[0] = _ENTRY
    work = [0]
    while work:
        i = work.pop()
        out = _transfer(insns[i], states[i], i)
        for j in successors(insns, i):
            if not 0 <= j < n:
                raise RelocationError(f"jump to {j} outside the program", i)
            joined = out if states[j] is None else states[j].join(out)
            if joined != states[j]:
                states[j] = joined
                work.append(j)
    return states


def _rewrite_load(ins: Insn, i: int) -> Insn:
    if ins.mode != MODE_MEM:
        raise RelocationError("sign-extending context load", i)
    size, off = ins.size, ins.off
    if off in PTR_FIELDS:
        if size != 4:
            raise RelocationError(f"context pointer field at off {off} loaded with size {size}", i)
        return Insn(LDX | MODE_MEM | SIZE_DW, ins.dst, ins.src, PTR_FIELDS[off], 0)
    if U32_FIELDS_START <= off and off + size <= U32_FIELDS_END and off % 4 + size <= 4:
        return Insn(ins.code, ins.dst, ins.src, off - U32_FIELDS_START + U32_FIELDS_NEW, ins.imm)
    raise RelocationError(f"context load off {off} size {size} is not a struct xdp_md field", i)


def rewrite_ctx(insns: list[Insn]) -> list[Insn]:
    """xdp_md context loads -> dp_xdp_ctx loads (see the module doc)."""
    states = ctx_states(insns)
    out = list(insns)
    for i, (ins, st) in enumerate(zip(insns, states)):
        if st is None or ins.cls != LDX:
            continue
        base = st.regs[ins.src]
        if base == CTX:
            out[i] = _rewrite_load(ins, i)
        elif base == MAYBE_CTX:  # _transfer raised already; kept for clarity
            raise RelocationError(f"context load through maybe-context r{ins.src}", i)
    return out


