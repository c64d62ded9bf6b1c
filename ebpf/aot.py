"""The `aot` engine: verified, relocated bytecode translated into C and
compiled with the system C compiler, together with the datapath's handler
glue (ebpf/aot_glue.h), into a shared object loaded at run time (Chamelio's
"joint compilation"; DESIGN.md, "Tenant handlers").

    mod = compile_aot(prog.insns, mode="xdp", checked=False, budget=prog.bound_insns)
    aot = AotProgram(mod, maps)                # maps: datapath.ebpf_engine.Map
    verdict, packet = aot.run_xdp(frame)
    dp_tenant_set_aot(dp, id, aot.fn, aot.env, bound_ns)
    dp_tenant_set_aot_run(dp, id, aot.run_fn, aot.env, bound_ns)   # unchecked XDP

Unchecked XDP mode emits the program once (an always-inline `name_core`)
behind two entries: `name`, a dp_aot_fn for any frame layout, and
`name_run`, the fast path's own handler signature (datapath/src/handler.h,
pkt.h; env in h->aot_env), installed as the handler with no glue call in
between. There the stack becomes scalar locals when r10 is only the base of
fixed-offset loads and stores to disjoint slots (stack_slots), and memory
accesses are pointer + constant so the compiler sees one base per register.
In every unchecked mode, byte accesses are merged (_Merge): values put
together from byte loads become one load, and the stores of a block through
one base are written, when something may observe them, as pieces of the
widths the same C has natively (clang's BPF backend splits memcpy and
unaligned fields into bytes; GCC does not merge them back).

One C function per program: registers are `uint64_t` locals, each
instruction one statement, labelled where something jumps to it, jumps are
`goto`s. BPF-to-BPF calls run in the same function on a frame stack (r6-r9,
the frame and a return label: GCC's labels as values), as the interpreter
does. The semantics are the interpreter's (datapath/src/ebpf_vm.c), which
are the kernel's.

checked=False: the kernel verifier's proof is reused: no bounds checks;
the only run-time check is a budget on back edges (and calls), so a program
can never hold the core longer than its static bound allows.
checked=True: unverified bytecode (tests/vm): every memory access and
helper argument is checked against the interpreter's regions (aot_glue.h)
and every instruction spends the budget, exactly as the interpreter counts
it, so faults, fault_pc and the instruction count are the interpreter's.

Compiled objects are cached in build/aot-cache/<sha256>/, keyed by the
bytecode, mode, checked, budget, the compiler flags and `cc --version`,
DP_ABI_VERSION, and the text of the glue, the headers it includes and this
translator.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cffi

from . import insn as I

ROOT = Path(__file__).resolve().parent.parent
GLUE = Path(__file__).resolve().parent / "aot_glue.h"
DP_INCLUDE = ROOT / "datapath" / "include"
DP_SRC = ROOT / "datapath" / "src"
CACHE_DIR = Path(os.environ.get("ISOLANE_AOT_CACHE", ROOT / "build" / "aot-cache"))
CC = os.environ.get("CC", "cc")
CFLAGS = ["-O2", "-march=native", "-fPIC", "-shared", "-fno-strict-aliasing", "-std=gnu11",
          "-w", f"-I{DP_INCLUDE}", f"-I{DP_SRC}", f"-I{GLUE.parent}"]

STACK = 512
MAX_DEPTH = 8
DEFAULT_BUDGET = 1 << 20
HEADROOM_FLOOR = 64     # DP_AOT_HEADROOM_FLOOR
FRAME_SIZE = 2048       # datapath/src/pkt.h
PKT_DATA_OFF = 320      # PKT_META_SIZE + PKT_HEADROOM
FAULT_VERDICT = 255

H_LOOKUP, H_UPDATE, H_DELETE, H_KTIME, H_CSUM_DIFF = 1, 2, 3, 5, 28
H_ADJUST_HEAD, H_REDIRECT_MAP, H_ADJUST_TAIL, H_RINGBUF_OUTPUT = 44, 51, 65, 130
HELPERS = {H_LOOKUP, H_UPDATE, H_DELETE, H_KTIME, H_CSUM_DIFF, H_ADJUST_HEAD, H_REDIRECT_MAP,
           H_ADJUST_TAIL, H_RINGBUF_OUTPUT}


class AotError(ValueError):
    """The translator cannot take this bytecode (the loader's checks)."""



# ------------------------------------------------------------------ ctx analysis

_HELPER_ARGS = {H_LOOKUP: 2, H_UPDATE: 4, H_DELETE: 2, H_KTIME: 0, H_CSUM_DIFF: 5,
                H_ADJUST_HEAD: 2, H_ADJUST_TAIL: 2, H_REDIRECT_MAP: 3, H_RINGBUF_OUTPUT: 4}
_CTX_FIELDS = {(0, 8): "c_data", (8, 8): "c_end", (16, 8): "c_meta",
               (24, 4): "0", (28, 4): "0", (32, 4): "0"}


def _succs(slots, starts, pc) -> list[int]:
    ins = slots[pc]
    if ins.is_ld_imm64():
        return [pc + 2]
    if ins.cls in (I.JMP, I.JMP32):
        if ins.op == I.EXIT:
            return []
        if ins.op == I.CALL:
            return [pc + 1]
        if ins.op == I.JA:
            return [pc + 1 + (ins.off if ins.cls == I.JMP else ins.imm)]
        return [pc + 1, pc + 1 + ins.off]
    return [pc + 1]


def _writes(ins) -> set[int]:
    cls = ins.cls
    if cls in (I.ALU, I.ALU64, I.LDX) or ins.is_ld_imm64():
        return {ins.dst}
    if cls == I.STX and ins.mode == I.MODE_ATOMIC:
        aop = ins.imm & 0xffffffff
        if aop == I.ATOMIC_CMPXCHG:
            return {0}
        if aop & I.ATOMIC_FETCH:
            return {ins.src}
    if cls == I.JMP and ins.op == I.CALL:
        return {0, 1, 2, 3, 4, 5}
    return set()


def _reads(ins) -> set[int]:
    cls, x = ins.cls, ins.code & I.SRC_X
    if cls in (I.ALU, I.ALU64):
        r = set() if ins.op == I.MOV else {ins.dst}
        if x and ins.op not in (I.NEG, I.END):
            r.add(ins.src)
        return r
    if cls in (I.JMP, I.JMP32):
        if ins.op == I.CALL:
            if ins.src == 0:
                return set(range(1, 1 + _HELPER_ARGS.get(ins.imm, 5)))
            return {1, 2, 3, 4, 5}
        if ins.op in (I.EXIT,):
            return {0}
        if ins.op == I.JA:
            return set()
        return {ins.dst, ins.src} if x else {ins.dst}
    if cls == I.LDX:
        return {ins.src}
    if cls == I.ST:
        return {ins.dst}
    if cls == I.STX:
        return {ins.dst, ins.src} | ({0} if ins.mode == I.MODE_ATOMIC else set())
    return set()


def ctx_registers(slots, starts) -> dict[int, frozenset] | None:
    """Unchecked XDP mode: for each instruction, the registers that hold the
    context pointer there, when every use of the context is a whole-field
    load, a copy, or r1 of adjust_head/tail (so the context can live in
    scalars, not memory); None when some use is anything else."""
    n = len(slots)
    if any(starts[pc] and slots[pc].cls == I.JMP and slots[pc].op == I.CALL and
           slots[pc].src == I.PSEUDO_CALL for pc in range(n)):
        return None
    must: dict[int, frozenset] = {0: frozenset({1})}
    may: dict[int, frozenset] = {0: frozenset({1})}
    work = [0]
    while work:
        pc = work.pop()
        ins = slots[pc]
        m_in, y_in = must[pc], may[pc]

        def xfer(st: frozenset) -> frozenset:
            st = set(st)
            if (ins.cls == I.ALU64 and ins.op == I.MOV and ins.code & I.SRC_X and not ins.off
                    and ins.src in st):
                st.add(ins.dst)
                return frozenset(st)
            return frozenset(st - _writes(ins))

        m_out, y_out = xfer(m_in), xfer(y_in)
        for t in _succs(slots, starts, pc):
            if t >= n:
                return None
            if t not in must:
                must[t], may[t] = m_out, y_out
                work.append(t)
            else:
                nm, ny = must[t] & m_out, may[t] | y_out
                if nm != must[t] or ny != may[t]:
                    must[t], may[t] = nm, ny
                    work.append(t)
    # every use of a maybe-context register must be a definite, allowed one
    for pc, m_in in must.items():
        ins, y_in = slots[pc], may[pc]
        used = _reads(ins) & y_in
        if not used:
            continue
        if used - m_in:
            return None
        cls = ins.cls
        if cls == I.LDX and used == {ins.src} and ins.mode == I.MODE_MEM and \
                (ins.off, ins.size) in _CTX_FIELDS:
            continue
        if cls == I.ALU64 and ins.op == I.MOV and ins.code & I.SRC_X and not ins.off:
            continue
        if ins.is_helper_call() and ins.imm in (H_ADJUST_HEAD, H_ADJUST_TAIL) and used == {1}:
            continue
        return None
    return must

def stack_slots(slots, starts) -> set[tuple[int, int]] | None:
    """Unchecked XDP mode: the stack's (offset from r10, size) slots, when
    r10 is only ever the base of a plain load or store at a fixed offset and
    no two slots overlap: the stack is then a set of scalar locals (no
    frame, no address the compiler must assume escapes). None otherwise."""
    acc: set[tuple[int, int]] = set()
    for pc, ins in enumerate(slots):
        if not starts[pc] or 10 not in _reads(ins):
            continue
        cls = ins.cls
        if cls == I.LDX and ins.src == 10 and ins.mode in (I.MODE_MEM, I.MODE_MEMSX):
            pass
        elif cls == I.ST and ins.mode == I.MODE_MEM:
            pass
        elif cls == I.STX and ins.mode == I.MODE_MEM and ins.dst == 10 and ins.src != 10:
            pass
        else:
            return None
        if not -STACK <= ins.off <= -ins.size:
            return None
        acc.add((ins.off, ins.size))
    spans = sorted(acc)
    for (o1, s1), (o2, _) in zip(spans, spans[1:]):
        if o1 + s1 > o2:
            return None
    return acc


def _slot(off: int, size: int) -> str:
    return f"s{-off}_{size}"



# ------------------------------------------------------------------ byte merging

_C0 = ("c", 0)


def _cbytes(v: int) -> tuple:
    return tuple(("c", (v >> (8 * i)) & 0xff) for i in range(8))


def _cval(vec) -> int | None:
    """the constant a byte vector holds, or None"""
    if any(a[0] != "c" for a in vec):
        return None
    return sum(a[1] << (8 * i) for i, a in enumerate(vec))


class _Merge:
    """Unchecked mode: byte-level value tracking within extended basic
    blocks, so that bytecode built of byte (and halfword) accesses (what
    clang's BPF backend makes of memcpy, struct copies and unaligned fields)
    is emitted with the widths the same C would have natively.

    Every register value is a vector of 8 byte atoms: ("c", k) a constant
    byte, ("m", root, addr, t) the memory byte at root + addr as it was
    when read (t: how many stores had been emitted then), ("v", vid, k)
    byte k of an opaque value. Pointers are (root, delta): a root is a value
    (one vid), so two accesses through the same root are at known distances
    and everything else may alias.

    Loads: an ALU result that is consecutive memory bytes (a value put
    together from byte loads with shifts and ors, in either byte order) is
    re-read as one load of that width, when no store emitted since the
    bytes were read may have changed them; the byte loads become dead.
    Stores: stores through one root are held back (emitted as nothing)
    until something may observe them: a load that may alias one of them,
    a store through another root, a call, a jump, a label. There the final
    bytes they leave are written in pieces, each one value: a constant, a
    run of consecutive bytes of some value of the block (a shifted register
    copy), or a run of memory bytes still unchanged; every piece's source
    is read before any piece is written (a swap reads both sides first).
    Registers are computed exactly as before (only an expression may be
    replaced by an equal one), so no liveness is needed; the compiler drops
    the byte loads and shifts whose results are no longer used."""

    def __init__(self, out: list[str], scalars, ctxmap):
        self.out = out
        self.scalars = scalars
        self.ctxmap = ctxmap
        self.nv = 0
        self.vec: dict[int, tuple] = {}
        self.defs: dict[int, tuple[int, int]] = {}  # vid -> (index in out, register)
        self.temps: set[int] = set()
        self.nb = 0
        self.reset()

    # -- state

    def reset(self) -> None:
        """a block starts: nothing known (registers are fresh values)"""
        self.out.append("")
        idx = len(self.out) - 1
        self.reg: dict[int, int] = {}
        self.ptr: dict[int, tuple[int, int]] = {}
        self.block: list[int] = []
        self.slots: dict[tuple[int, int], tuple] = {}
        self.events: list[tuple[int, int, int]] = []
        self.pending: dict[int, tuple] = {}
        self.proot: int | None = None
        for r in range(11):
            self._def(r, None, idx)

    def _def(self, r: int, vec, idx: int, ptr=None, width: int = 8) -> int:
        v = self.nv
        self.nv += 1
        if vec is None:
            vec = tuple(("v", v, k) if k < width else _C0 for k in range(8))
        self.vec[v] = tuple(vec)
        self.defs[v] = (idx, r)
        self.block.append(v)
        self.reg[r] = v
        self.ptr[r] = ptr if ptr is not None else (v, 0)
        return v

    def temp(self, v: int) -> str:
        """a C name for value v (assigned where v was computed)"""
        if v not in self.temps:
            self.temps.add(v)
            idx, r = self.defs[v]
            self.out[idx] += f" pv{v} = r{r};"
        return f"pv{v}"

    def decls(self) -> str:
        return ("\tuint64_t " + ", ".join(f"pv{v}" for v in sorted(self.temps)) + ";\n"
                if self.temps else "")

    def valid(self, atom) -> bool:
        """a memory atom still holds in memory (no emitted store since it was
        read may have written it)"""
        _, root, a, t = atom
        return all(r == root and not lo <= a < hi for r, lo, hi in self.events[t:])

    # -- stores

    def flush(self) -> str:
        if not self.pending:
            return ""
        droot, pend = self.proot, self.pending
        self.pending, self.proot = {}, None
        addrs = sorted(pend)
        pieces = []  # (addr, n, kind, arg)
        i = 0
        while i < len(addrs):
            o = addrs[i]
            atoms = [pend[o]]
            while (i + len(atoms) < len(addrs) and len(atoms) < 8 and
                   addrs[i + len(atoms)] == o + len(atoms)):
                atoms.append(pend[o + len(atoms)])
            best = self._piece(atoms)
            pieces.append((o, *best))
            i += best[0]
        loads, stores = [], []
        for o, n, kind, arg in pieces:
            j = 0
            while j < n:  # power-of-two chunks, as the compiler expands memcpy
                z = 8 if n - j >= 8 else 4 if n - j >= 4 else 2 if n - j >= 2 else 1
                t, b = _UTYPE[z], self.nb
                self.nb += 1
                if kind == "c":
                    val = _cval(tuple(arg[j:j + z]) + (_C0,) * (8 - z))
                    src = f"({t}){_u64(val)}"
                elif kind == "v":
                    v, k = arg
                    src = f"({t})({self.temp(v)} >> {8 * (k + j)})" if k + j else \
                        f"({t}){self.temp(v)}"
                else:
                    root, a = arg
                    src = f"AOT_LDP({t}, {self.temp(root)}, {a + j})"
                loads.append(f"{t} pb{b} = {src};")
                stores.append(f"AOT_STP({t}, {self.temp(droot)}, {o + j}, pb{b});")
                j += z
        lo = addrs[0]
        for a, b in zip(addrs, addrs[1:] + [None]):
            if b != a + 1:
                self.events.append((droot, lo, a + 1))
                lo = b
        return "\t{ " + " ".join(loads + stores) + " }"

    def _piece(self, atoms: list) -> tuple:
        """(length, kind, source) of the longest piece starting atoms"""
        best = (0, None, None)
        n = 0
        while n < len(atoms) and atoms[n][0] == "c":
            n += 1
        if n:
            best = (n, "c", atoms[:n])
        for v in reversed(self.block):
            vec = self.vec[v]
            for k in range(8):
                if vec[k] != atoms[0]:
                    continue
                n = 1
                while n < len(atoms) and k + n < 8 and vec[k + n] == atoms[n]:
                    n += 1
                if n > best[0]:
                    best = (n, "v", (v, k))
        a0 = atoms[0]
        if a0[0] == "m" and self.valid(a0):
            n = 1
            while (n < len(atoms) and atoms[n][0] == "m" and atoms[n][1] == a0[1] and
                   atoms[n][2] == a0[2] + n and self.valid(atoms[n])):
                n += 1
            if n > best[0]:
                best = (n, "m", (a0[1], a0[2]))
        assert best[0], atoms  # every stored byte is a byte of the stored register
        return best

    # -- one instruction

    def step(self, pc: int, ins, code: str) -> tuple[str, str, bool]:
        """(code to emit before the instruction, its code, whether the block
        ends after it); the state is advanced past it, its results recorded
        at index len(out) + (1 if the first is not empty)."""
        cls, op = ins.cls, ins.op
        before = ""
        defs = []  # (register, vec | None, ptr, width)
        end = False
        if cls in (I.JMP, I.JMP32):
            before = self.flush()
            end = op in (I.CALL, I.EXIT, I.JA)
        elif cls == I.LD:
            defs.append((ins.dst, None, None, 8))
        elif cls == I.LDX:
            if self.ctxmap is not None and ins.src in self.ctxmap.get(pc, ()):
                defs.append((ins.dst, None, None, 8))
            elif self.scalars is not None and ins.src == 10:
                sv = self.slots.get((ins.off, ins.size))
                if ins.mode == I.MODE_MEM and sv is not None:
                    defs.append((ins.dst, sv[:ins.size] + (_C0,) * (8 - ins.size), None, 8))
                else:
                    defs.append((ins.dst, None, None, 8))
            else:
                root, delta = self.ptr[ins.src]
                a = delta + ins.off
                if self.pending and (root != self.proot or
                                     any(a + i in self.pending for i in range(ins.size))):
                    before = self.flush()
                if ins.mode == I.MODE_MEM:
                    t = len(self.events)
                    vec = tuple(("m", root, a + i, t) for i in range(ins.size)) + \
                        (_C0,) * (8 - ins.size)
                    defs.append((ins.dst, vec, None, 8))
                else:
                    defs.append((ins.dst, None, None, 8))
        elif cls in (I.ST, I.STX) and ins.mode == I.MODE_MEM:
            z = ins.size
            val = (self.vec[self.reg[ins.src]] if cls == I.STX
                   else _cbytes(ins.imm & (2**64 - 1)))[:z]
            if self.scalars is not None and ins.dst == 10:
                self.slots[(ins.off, z)] = val
            else:
                root, delta = self.ptr[ins.dst]
                if self.pending and root != self.proot:
                    before = self.flush()
                self.proot = root
                for i in range(z):
                    self.pending[delta + ins.off + i] = val[i]
                code = f"/* st r{ins.dst}{ins.off:+d} (merged) */"
        elif cls in (I.ALU, I.ALU64):
            d = self._alu(ins)
            defs.append(d)
            if isinstance(d[1], tuple) and op not in (I.MOV, I.END):
                wide = self._wide(d[1])
                if wide:
                    code = f"r{ins.dst} = {wide};"
        else:  # atomics
            before = self.flush()
            end = True
        idx = len(self.out) + (1 if before else 0)
        for r, vec, ptr, width in defs:
            if isinstance(vec, int):  # a copy: the same value
                self.reg[r], self.ptr[r] = vec, self.ptr[ptr]
            else:
                self._def(r, vec, idx, ptr, width)
        return before, code, end

    def _wide(self, vec) -> str | None:
        n = 0
        while n < 8 and vec[n] != _C0:
            n += 1
        if n not in (2, 4, 8) or any(a != _C0 for a in vec[n:]):
            return None
        if any(a[0] != "m" or a[1] != vec[0][1] or not self.valid(a) for a in vec[:n]):
            return None
        addrs = [a[2] for a in vec[:n]]
        root, lo = vec[0][1], min(addrs)
        t = _UTYPE[n]
        load = f"AOT_LDP({t}, {self.temp(root)}, {lo})"
        if addrs == list(range(lo, lo + n)):
            return f"(uint64_t)({t}){load}"
        if addrs == list(range(lo + n - 1, lo - 1, -1)):
            return f"(uint64_t)({t})__builtin_bswap{8 * n}({load})"
        return None

    def _alu(self, ins):
        """(register, vec | None, ptr | None, width) of an ALU instruction"""
        is64, op, x = ins.cls == I.ALU64, ins.op, ins.code & I.SRC_X
        w = 8 if is64 else 4
        dst = self.vec[self.reg[ins.dst]]
        if x:
            src = self.vec[self.reg[ins.src]]
        else:
            imm = ins.imm & 0xffffffff
            if is64 and imm & 0x80000000:
                imm |= 0xffffffff00000000
            src = _cbytes(imm)
        out = ptr = None
        if op in (I.ADD, I.SUB) and is64 and not x:  # pointer arithmetic
            c = _cval(src)
            c = c - 2**64 if c >= 2**63 else c
            root, delta = self.ptr[ins.dst]
            ptr = (root, delta + c if op == I.ADD else delta - c)
        if op == I.MOV and not ins.off:
            if is64 and x:
                return (ins.dst, self.reg[ins.src], ins.src, 8)
            out = src[:w]
        elif op == I.END:
            n = ins.imm // 8
            if n in (2, 4, 8):
                out = tuple(reversed(dst[:n])) if (is64 or x) else dst[:n]
        elif op in (I.LSH, I.RSH) and not x and ins.imm % 8 == 0 and 0 <= ins.imm < 8 * w:
            k = ins.imm // 8
            low = dst[:w]
            out = ((_C0,) * k + low[:w - k]) if op == I.LSH else (low[k:] + (_C0,) * k)
        elif op in (I.AND, I.OR, I.XOR, I.ADD):
            a, b = dst[:w], src[:w]
            ca, cb = _cval(a), _cval(b)
            if ca is not None and cb is not None:
                m = (1 << (8 * w)) - 1
                out = _cbytes({I.AND: ca & cb, I.OR: ca | cb, I.XOR: ca ^ cb,
                               I.ADD: ca + cb}[op] & m)[:w]
            else:
                res = []
                for p, q in zip(a, b):
                    if op == I.AND:
                        if p == _C0 or q == _C0:
                            res.append(_C0)
                        elif p == ("c", 0xff):
                            res.append(q)
                        elif q == ("c", 0xff):
                            res.append(p)
                        else:
                            break
                    elif p == _C0:
                        res.append(q)
                    elif q == _C0:
                        res.append(p)
                    elif op == I.OR and p == q:
                        res.append(p)
                    else:
                        break
                else:
                    out = tuple(res)
        if out is None:
            return (ins.dst, None, ptr, w)
        return (ins.dst, tuple(out) + (_C0,) * (8 - len(out)), ptr, 8)


# ------------------------------------------------------------------ translator

def _u64(v: int) -> str:
    return f"UINT64_C(0x{v & (2**64 - 1):x})"


def _u32(v: int) -> str:
    return f"UINT32_C(0x{v & 0xffffffff:x})"


_ALU64 = {
    I.ADD: "d + v", I.SUB: "d - v", I.MUL: "d * v",
    I.OR: "d | v", I.AND: "d & v", I.XOR: "d ^ v",
    I.LSH: "d << (v & 63)", I.RSH: "d >> (v & 63)",
    I.ARSH: "(uint64_t)((int64_t)d >> (v & 63))", I.MOV: "v",
}
_ALU32 = {
    I.ADD: "d + v", I.SUB: "d - v", I.MUL: "d * v",
    I.OR: "d | v", I.AND: "d & v", I.XOR: "d ^ v",
    I.LSH: "d << (v & 31)", I.RSH: "d >> (v & 31)",
    I.ARSH: "(uint32_t)((int32_t)d >> (v & 31))", I.MOV: "v",
}
_DIV = {  # (op, signed): expression over d, v
    (I.DIV, 0, 64): "v ? d / v : 0",
    (I.MOD, 0, 64): "v ? d % v : d",
    (I.DIV, 1, 64): "v == 0 ? 0 : (int64_t)v == -1 ? -d : (uint64_t)((int64_t)d / (int64_t)v)",
    (I.MOD, 1, 64): "v == 0 ? d : (int64_t)v == -1 ? 0 : (uint64_t)((int64_t)d % (int64_t)v)",
    (I.DIV, 0, 32): "v ? d / v : 0",
    (I.MOD, 0, 32): "v ? d % v : d",
    (I.DIV, 1, 32): "v == 0 ? 0 : (int32_t)v == -1 ? -d : (uint32_t)((int32_t)d / (int32_t)v)",
    (I.MOD, 1, 32): "v == 0 ? d : (int32_t)v == -1 ? 0 : (uint32_t)((int32_t)d % (int32_t)v)",
}
_JMP = {I.JEQ: "==", I.JNE: "!=", I.JGT: ">", I.JGE: ">=", I.JLT: "<", I.JLE: "<=",
        I.JSGT: ">", I.JSGE: ">=", I.JSLT: "<", I.JSLE: "<="}
_SIGNED_JMP = {I.JSGT, I.JSGE, I.JSLT, I.JSLE}
_ATOMIC_OPS = {I.ADD: "add", I.OR: "or", I.AND: "and", I.XOR: "xor"}
_UTYPE = {1: "uint8_t", 2: "uint16_t", 4: "uint32_t", 8: "uint64_t"}
_STYPE = {1: "int8_t", 2: "int16_t", 4: "int32_t"}


def _bad(pc: int, what: str) -> AotError:
    return AotError(f"{what} at insn {pc}")


def translate(insns: bytes, *, name: str, mode: str = "xdp", checked: bool = False,
              budget: int = 0) -> str:
    """C source of one function `name` running the program `insns`.

    mode "xdp": `name` is a dp_aot_fn; mode "raw": `uint64_t name(uint8_t
    *mem, uint32_t len, const struct dp_aot_env *env, int32_t *fault)` and
    `name_ex(..., int32_t *fault, uint32_t *fault_pc, uint64_t *insns)`.
    budget: checked: instructions a run may execute (0: 1<<20, as the
    interpreter); unchecked: back edges and calls a run may take (0: 1<<20).
    """
    if mode not in ("xdp", "raw"):
        raise ValueError(f"mode {mode!r}")
    if not name.isidentifier():
        raise ValueError(f"name {name!r}")
    slots = I.decode(insns)
    n = len(slots)
    if not n:
        raise AotError("empty program")
    starts = I.slot_starts(slots)
    budget = budget or DEFAULT_BUDGET

    # targets: jumps, calls (labels), and whether there are local calls
    targets: set[int] = set()
    call_targets: set[int] = set()
    for pc, ins in enumerate(slots):
        if not starts[pc]:
            continue
        if ins.cls in (I.JMP, I.JMP32) and ins.op == I.CALL and ins.src == I.PSEUDO_CALL:
            t = pc + 1 + ins.imm
            if not (0 <= t < n) or not starts[t]:
                raise _bad(pc, "invalid call target")
            call_targets.add(t)
        elif ins.is_jump():
            t = pc + 1 + (ins.imm if (ins.cls == I.JMP32 and ins.op == I.JA) else ins.off)
            if not (0 <= t < n) or not starts[t]:
                raise _bad(pc, "invalid jump target")
            targets.add(t)
    has_calls = bool(call_targets)
    targets |= call_targets
    xdp = mode == "xdp"
    ctxmap = ctx_registers(slots, starts) if xdp and not checked else None
    scalars = (stack_slots(slots, starts) if xdp and not checked and not call_targets
               else None)
    out: list[str] = []
    emit = out.append
    ret_labels = 0
    # unchecked: byte accesses merged into the widths native code has
    merge = _Merge(out, scalars, ctxmap) if not checked and sys.byteorder == "little" else None

    def fault(code: str, pc: int) -> str:
        return f"{{ fault = {code}; fault_pc = {pc}; goto out_fault; }}"

    def step(pc: int) -> str:
        if checked:
            return f"if (AOT_UNLIKELY(count == {budget}u)) {fault('-E2BIG', pc)} count++; "
        return ""

    def spend(pc: int) -> str:
        """unchecked: the back-edge/call budget"""
        if checked:
            return ""
        return f"if (AOT_UNLIKELY(edges-- == 0)) {fault('-E2BIG', pc)} "

    def mem_check(pc: int, addr: str, size: int, acc: str) -> str:
        if not checked:
            return ""
        return f"if (AOT_UNLIKELY(!aot_mem_ok(&R, {addr}, {size}, {acc}))) {fault('-EFAULT', pc)} "

    for pc, ins in enumerate(slots):
        if not starts[pc]:
            continue
        if pc in targets:
            if merge:
                emit(merge.flush())
            emit(f"L{pc}:")
            if merge:
                merge.reset()
        cls, op = ins.cls, ins.op
        d, s = f"r{ins.dst}", f"r{ins.src}"
        if ins.dst > 10 or ins.src > 10:
            raise _bad(pc, "invalid register")
        pre = f"\t/* {pc} */ " + step(pc)
        code = ""
        if cls in (I.ALU, I.ALU64):
            is64 = cls == I.ALU64
            if ins.dst == 10:
                raise _bad(pc, "r10 is read-only")
            x = ins.code & I.SRC_X
            if op == I.END:
                if ins.imm not in (16, 32, 64):
                    raise _bad(pc, "invalid opcode")
                if is64 and x:
                    raise _bad(pc, "invalid opcode")
                if is64 or x:
                    code = {16: f"{d} = __builtin_bswap16((uint16_t){d});",
                            32: f"{d} = __builtin_bswap32((uint32_t){d});",
                            64: f"{d} = __builtin_bswap64({d});"}[ins.imm]
                else:
                    code = {16: f"{d} = (uint16_t){d};", 32: f"{d} = (uint32_t){d};",
                            64: ";"}[ins.imm]
            elif op == I.NEG:
                if x or ins.off:
                    raise _bad(pc, "invalid opcode")
                code = f"{d} = -{d};" if is64 else f"{d} = (uint32_t)-(uint32_t){d};"
            elif op == I.MOV and ins.off:
                if not x:
                    raise _bad(pc, "invalid opcode")
                t = {8: "int8_t", 16: "int16_t", 32: "int32_t"}.get(ins.off)
                if t is None or (ins.off == 32 and not is64):
                    raise _bad(pc, "invalid opcode")
                code = (f"{d} = (uint64_t)(int64_t)({t}){s};" if is64
                        else f"{d} = (uint32_t)(int32_t)({t}){s};")
            elif op in (I.DIV, I.MOD):
                if ins.off not in (0, 1):
                    raise _bad(pc, "invalid opcode")
                expr = _DIV[(op, ins.off, 64 if is64 else 32)]
                if is64:
                    v = s if x else _u64(ins.imm)
                    code = f"{{ uint64_t d = {d}, v = {v}; {d} = {expr}; }}"
                else:
                    v = f"(uint32_t){s}" if x else _u32(ins.imm)
                    code = f"{{ uint32_t d = (uint32_t){d}, v = {v}; {d} = (uint32_t)({expr}); }}"
            elif op in _ALU64:
                if ins.off:
                    raise _bad(pc, "invalid opcode")
                if is64:
                    v = s if x else _u64(ins.imm)
                    if op == I.MOV:
                        code = f"{d} = {v};"
                    else:
                        code = f"{{ uint64_t d = {d}, v = {v}; {d} = {_ALU64[op]}; }}"
                else:
                    v = f"(uint32_t){s}" if x else _u32(ins.imm)
                    if op == I.MOV:
                        code = f"{d} = (uint32_t){v};"
                    else:
                        code = (f"{{ uint32_t d = (uint32_t){d}, v = {v}; "
                                f"{d} = (uint32_t)({_ALU32[op]}); }}")
            else:
                raise _bad(pc, f"invalid opcode 0x{ins.code:02x}")
        elif cls in (I.JMP, I.JMP32):
            x = ins.code & I.SRC_X
            if op == I.JA:
                if x:
                    raise _bad(pc, "invalid opcode")
                t = pc + 1 + (ins.off if cls == I.JMP else ins.imm)
                code = (spend(pc) if t <= pc else "") + f"goto L{t};"
            elif op == I.EXIT:
                if cls != I.JMP or x:
                    raise _bad(pc, "invalid opcode")
                if has_calls:
                    code = ("if (depth) { depth--; r6 = fr[depth].r6; r7 = fr[depth].r7; "
                            "r8 = fr[depth].r8; r9 = fr[depth].r9; R.stack_lo = fr[depth].lo; "
                            f"r10 = R.stack_lo + {STACK}; goto *fr[depth].ret; }} goto out;")
                else:
                    code = "goto out;"
            elif op == I.CALL:
                if cls != I.JMP or x:
                    raise _bad(pc, "invalid opcode")
                if ins.src == I.PSEUDO_CALL:
                    t = pc + 1 + ins.imm
                    ret_labels += 1
                    zero = (f"memset((void *)(uintptr_t)R.stack_lo, 0, {STACK}); "
                            if checked else "")
                    code = (spend(pc) +
                            f"if (AOT_UNLIKELY(depth + 1 >= {MAX_DEPTH})) {fault('-ENOSPC', pc)} "
                            "fr[depth].r6 = r6; fr[depth].r7 = r7; fr[depth].r8 = r8; "
                            f"fr[depth].r9 = r9; fr[depth].lo = R.stack_lo; "
                            f"fr[depth].ret = &&ret{pc}; depth++; R.stack_lo -= {STACK}; "
                            f"{zero}r10 = R.stack_lo + {STACK}; goto L{t}; ret{pc}:;")
                elif ins.src != 0:
                    raise _bad(pc, f"unsupported call kind {ins.src}")
                elif ins.imm not in HELPERS:
                    raise _bad(pc, f"unknown helper {ins.imm}")
                else:
                    code = _helper(ins.imm, pc, xdp, checked, fault, ctxmap is None)
            elif op in _JMP or op == I.JSET:
                is64 = cls == I.JMP
                if is64:
                    t_ = "int64_t" if op in _SIGNED_JMP else "uint64_t"
                    a, b = f"({t_}){d}", f"({t_}){s}" if x else f"({t_}){_u64(ins.imm)}"
                else:
                    t_ = "int32_t" if op in _SIGNED_JMP else "uint32_t"
                    a = f"({t_})(uint32_t){d}"
                    b = f"({t_})(uint32_t){s}" if x else f"({t_}){_u32(ins.imm)}"
                cond = f"{a} & {b}" if op == I.JSET else f"{a} {_JMP[op]} {b}"
                t = pc + 1 + ins.off
                code = f"if ({cond}) {{ {spend(pc) if t <= pc else ''}goto L{t}; }}"
            else:
                raise _bad(pc, f"invalid opcode 0x{ins.code:02x}")
        elif cls == I.LD:
            if ins.code != I.LD_IMM64:
                raise _bad(pc, f"invalid opcode 0x{ins.code:02x}")
            if pc + 1 >= n:
                raise _bad(pc, "incomplete LD_IMM64")
            if ins.dst == 10:
                raise _bad(pc, "r10 is read-only")
            hi = slots[pc + 1]
            if ins.src == 0:
                code = f"{d} = {_u64((ins.imm & 0xffffffff) | (hi.imm & 0xffffffff) << 32)};"
            elif ins.src == 1:
                code = f"{d} = (uint64_t)(uintptr_t)&env->maps[{ins.imm & 0xffffffff}];"
            elif ins.src == 2:
                code = (f"{d} = (uint64_t)(uintptr_t)env->maps[{ins.imm & 0xffffffff}]->values"
                        f" + {hi.imm & 0xffffffff}u;")
            else:
                raise _bad(pc, f"unsupported LD_IMM64 kind {ins.src}")
        elif cls == I.LDX:
            if ins.dst == 10:
                raise _bad(pc, "r10 is read-only")
            size = ins.size
            if ins.mode == I.MODE_MEM:
                t = _UTYPE[size]
            elif ins.mode == I.MODE_MEMSX and size in _STYPE:
                t = _STYPE[size]
            else:
                raise _bad(pc, f"invalid opcode 0x{ins.code:02x}")
            addr = f"{s} + {_u64(ins.off)}"
            if ctxmap is not None and ins.src in ctxmap.get(pc, ()):
                code = f"{d} = (uint64_t){_CTX_FIELDS[(ins.off, size)]};"
            elif scalars is not None and ins.src == 10:
                code = f"{d} = (uint64_t)({t}){_slot(ins.off, size)};"
            elif not checked:  # base + offset as pointers: wide merges need a common base
                code = f"{d} = (uint64_t)({t})AOT_LDP({t}, {s}, {ins.off});"
            else:
                code = ("{ uint64_t a = " + addr + "; " +
                        mem_check(pc, "a", size, "AOT_ACC_READ") +
                        f"{d} = (uint64_t)({t})AOT_LD({t}, a); }}")
        elif cls in (I.ST, I.STX):
            size = ins.size
            addr = f"{d} + {_u64(ins.off)}"
            if ins.mode == I.MODE_MEM and scalars is not None and ins.dst == 10:
                val = s if cls == I.STX else _u64(ins.imm)
                code = f"{_slot(ins.off, size)} = ({_UTYPE[size]}){val};"
            elif ins.mode == I.MODE_MEM and not checked:
                val = s if cls == I.STX else _u64(ins.imm)
                code = f"AOT_STP({_UTYPE[size]}, {d}, {ins.off}, {val});"
            elif ins.mode == I.MODE_MEM:
                val = s if cls == I.STX else _u64(ins.imm)
                code = ("{ uint64_t a = " + addr + "; " +
                        mem_check(pc, "a", size, "AOT_ACC_WRITE") +
                        f"AOT_ST({_UTYPE[size]}, a, {val}); }}")
            elif cls == I.STX and ins.mode == I.MODE_ATOMIC and size in (4, 8):
                code = _atomic(ins, pc, size, checked, fault)
            else:
                raise _bad(pc, f"invalid opcode 0x{ins.code:02x}")
        else:
            raise _bad(pc, f"invalid opcode 0x{ins.code:02x}")
        if merge:
            before, code, end = merge.step(pc, ins, code)
            if before:
                emit(before)
            emit(pre + code)
            if end:
                merge.reset()
        else:
            emit(pre + code)
    last = [pc for pc in range(n) if starts[pc]][-1]
    lins = slots[last]
    if not (lins.code == I.JMP | I.EXIT or (lins.cls in (I.JMP, I.JMP32) and lins.op == I.JA)):
        raise AotError(f"last insn {last} is not exit or jump")
    moves_packet = any(starts[pc] and slots[pc].is_helper_call() and
                       slots[pc].imm in (H_ADJUST_HEAD, H_ADJUST_TAIL) for pc in range(n))
    body = "\n".join(line for line in out if line)
    if merge:
        body = merge.decls() + body
    return _function(name, body, xdp=xdp, checked=checked, has_calls=has_calls,
                     budget=budget, ctx_in_mem=ctxmap is None, moves_packet=moves_packet,
                     scalars=scalars)


def _helper(hid: int, pc: int, xdp: bool, checked: bool, fault, ctx_in_mem: bool) -> str:
    if checked:
        return ("{ uint64_t a[6] = {r0, r1, r2, r3, r4, r5}; int32_t f = 0; "
                f"r0 = aot_call_checked(&R, {hid}, a, &f); "
                f"if (AOT_UNLIKELY(f)) {fault('f', pc)} }}")
    m = "aot_map_of(r1)"
    if hid == H_LOOKUP:
        return f"r0 = (uint64_t)(uintptr_t)env->map_lookup({m}, (const void *)(uintptr_t)r2);"
    if hid == H_UPDATE:
        return (f"r0 = (uint64_t)env->map_update({m}, (const void *)(uintptr_t)r2, "
                "(const void *)(uintptr_t)r3, r4);")
    if hid == H_DELETE:
        return f"r0 = (uint64_t)env->map_delete({m}, (const void *)(uintptr_t)r2);"
    if hid == H_KTIME:
        return "r0 = env->ktime_get_ns();"
    if hid == H_CSUM_DIFF:
        return ("r0 = env->csum_diff((const uint8_t *)(uintptr_t)r1, (uint32_t)r2, "
                "(const uint8_t *)(uintptr_t)r3, (uint32_t)r4, (uint32_t)r5);")
    if hid in (H_ADJUST_HEAD, H_ADJUST_TAIL):
        if not xdp:
            return fault("-EINVAL", pc)
        fn = "aot_adjust_head_s" if hid == H_ADJUST_HEAD else "aot_adjust_tail_s"
        sync = (" ctx.data = c_data; ctx.data_end = c_end; ctx.data_meta = c_meta;"
                if ctx_in_mem else "")
        return f"r0 = {fn}(&c_data, &c_end, &c_meta, buf_lo, buf_hi, (int32_t)r2);{sync}"
    if hid == H_REDIRECT_MAP:
        return f"r0 = (uint64_t)env->redirect_map({m}, r2, r3, &redir);"
    if hid == H_RINGBUF_OUTPUT:
        return (f"r0 = (uint64_t)env->ringbuf_output({m}, (const void *)(uintptr_t)r2, r3, r4);")
    raise AssertionError(hid)


def _atomic(ins: I.Insn, pc: int, size: int, checked: bool, fault) -> str:
    t = _UTYPE[size]
    s = f"r{ins.src}"
    aop = ins.imm & 0xffffffff
    chk = ""
    if checked:
        chk = (f"if (AOT_UNLIKELY((a & {size - 1}) || !aot_mem_ok(&R, a, {size}, "
               f"AOT_ACC_ATOMIC))) {fault('-EFAULT', pc)} ")
    head = f"{{ uint64_t a = r{ins.dst} + {_u64(ins.off)}; {chk}{t} *p = ({t} *)(uintptr_t)a; "
    if aop == I.ATOMIC_CMPXCHG:
        return head + (f"{t} old = ({t})r0; __atomic_compare_exchange_n(p, &old, ({t}){s}, 0, "
                       "__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); r0 = old; }")
    if aop == I.ATOMIC_XCHG:
        if ins.src == 10:
            raise _bad(pc, "r10 is read-only")
        return head + f"{s} = __atomic_exchange_n(p, ({t}){s}, __ATOMIC_SEQ_CST); }}"
    base, fetch = aop & ~I.ATOMIC_FETCH, aop & I.ATOMIC_FETCH
    if base not in _ATOMIC_OPS or aop & ~(0xf0 | I.ATOMIC_FETCH):
        raise _bad(pc, "invalid atomic operation")
    fn = f"__atomic_fetch_{_ATOMIC_OPS[base]}"
    if fetch:
        if ins.src == 10:
            raise _bad(pc, "r10 is read-only")
        return head + f"{s} = {fn}(p, ({t}){s}, __ATOMIC_SEQ_CST); }}"
    return head + f"(void){fn}(p, ({t}){s}, __ATOMIC_SEQ_CST); }}"


def _function(name: str, body: str, *, xdp: bool, checked: bool, has_calls: bool,
              budget: int, ctx_in_mem: bool = True, moves_packet: bool = True,
              scalars: set[tuple[int, int]] | None = None) -> str:
    if xdp and not checked:
        return _function_fast(name, body, has_calls=has_calls, budget=budget,
                              ctx_in_mem=ctx_in_mem, moves_packet=moves_packet,
                              scalars=scalars)
    stack = STACK * (MAX_DEPTH if has_calls else 1)
    regs = "\tuint64_t r0 = 0, r1 = 0, r2 = 0, r3 = 0, r4 = 0, r5 = 0, r6 = 0, r7 = 0, r8 = 0, " \
           "r9 = 0, r10;\n"
    decl = [regs,
            f"\tuint8_t stack[{stack}] __attribute__((aligned(16)));\n",
            "\tstruct aot_run R;\n",
            "\tint32_t fault = 0; uint32_t fault_pc = 0;\n"]
    if checked:
        decl.append("\tuint64_t count = 0;\n")
    else:
        decl.append(f"\tuint64_t edges = {budget}u;\n")
    if has_calls:
        decl.append(f"\tstruct {{ uint64_t r6, r7, r8, r9, lo; void *ret; }} fr[{MAX_DEPTH}];\n"
                    "\tuint32_t depth = 0;\n")
    init = ["\tR.env = env; R.redirect = 0;\n",
            f"\tR.stack_hi = (uint64_t)(uintptr_t)(stack + {stack});\n",
            f"\tR.stack_lo = R.stack_hi - {STACK};\n",
            "\tr10 = R.stack_hi;\n"]
    if checked:
        init.append(f"\tmemset((void *)(uintptr_t)R.stack_lo, 0, {STACK});\n")
    if xdp:
        sig = (f"uint32_t {name}(uint8_t *frame, uint32_t frame_len, uint32_t *off, "
               "uint32_t *len, const struct dp_aot_env *env, uint32_t *redirect)")
        init += ["\tR.ctx.data = (uint64_t)(uintptr_t)(frame + *off);\n",
                 "\tR.ctx.data_end = R.ctx.data + *len;\n",
                 "\tR.ctx.data_meta = R.ctx.data;\n",
                 "\tR.ctx.ingress_ifindex = 0; R.ctx.rx_queue_index = 0;\n",
                 "\tR.ctx.egress_ifindex = 0; R.ctx._pad = 0;\n",
                 f"\tR.buf_lo = (uint64_t)(uintptr_t)(frame + {HEADROOM_FLOOR});\n",
                 "\tR.buf_hi = (uint64_t)(uintptr_t)(frame + frame_len);\n",
                 "\tR.xdp = 1;\n",
                 "\tr1 = (uint64_t)(uintptr_t)&R.ctx;\n"]
        tail = ("out:\n"
                "\t*off = (uint32_t)(R.ctx.data - (uint64_t)(uintptr_t)frame);\n"
                "\t*len = (uint32_t)(R.ctx.data_end - R.ctx.data);\n"
                "\t*redirect = R.redirect;\n"
                "\treturn (uint32_t)r0 > AOT_XDP_REDIRECT ? 0 : (uint32_t)r0;\n"
                "out_fault:\n"
                "\t(void)fault; (void)fault_pc;\n"
                "\t*off = (uint32_t)(R.ctx.data - (uint64_t)(uintptr_t)frame);\n"
                "\t*len = (uint32_t)(R.ctx.data_end - R.ctx.data);\n"
                "\t*redirect = R.redirect;\n"
                "\treturn AOT_FAULT_VERDICT;\n")
        return (f"{sig}\n{{\n{''.join(decl)}{''.join(init)}{body}\n{tail}}}\n")
    inner = (f"static __attribute__((__noinline__)) uint64_t {name}_body(uint8_t *mem, "
             "uint32_t len, const struct dp_aot_env *env, int32_t *fault_out, "
             "uint32_t *fault_pc_out, uint64_t *insns_out)")
    init += ["\tmemset(&R.ctx, 0, sizeof(R.ctx));\n",
             "\tR.ctx.data = (uint64_t)(uintptr_t)mem;\n",
             "\tR.ctx.data_end = R.ctx.data + len;\n",
             "\tR.buf_lo = R.buf_hi = 0; R.xdp = 0;\n",
             "\tr1 = R.ctx.data; r2 = len;\n"]
    count = "count" if checked else "0"
    tail = ("out:\n"
            f"\t*fault_out = 0; *fault_pc_out = 0; *insns_out = {count};\n"
            "\treturn r0;\n"
            "out_fault:\n"
            f"\t*fault_out = fault; *fault_pc_out = fault_pc; *insns_out = {count};\n"
            "\treturn 0;\n")
    wrappers = (
        f"uint64_t {name}(uint8_t *mem, uint32_t len, const struct dp_aot_env *env, "
        "int32_t *fault)\n{\n\tuint32_t pc; uint64_t n;\n"
        f"\treturn {name}_body(mem, len, env, fault, &pc, &n);\n}}\n"
        f"uint64_t {name}_ex(uint8_t *mem, uint32_t len, const struct dp_aot_env *env, "
        "int32_t *fault, uint32_t *fault_pc, uint64_t *insns)\n{\n"
        f"\treturn {name}_body(mem, len, env, fault, fault_pc, insns);\n}}\n")
    return f"{inner}\n{{\n{''.join(decl)}{''.join(init)}{body}\n{tail}}}\n{wrappers}"


def _function_fast(name: str, body: str, *, has_calls: bool, budget: int,
                   ctx_in_mem: bool, moves_packet: bool = True,
                   scalars: set[tuple[int, int]] | None = None) -> str:
    """unchecked XDP mode: the context in scalars (and in memory only when
    some use of it is not a plain field load), no run-state struct"""
    stack = STACK * (MAX_DEPTH if has_calls else 1)
    lines = [f"AOT_INLINE uint32_t {name}_core(uint8_t *frame, uint32_t frame_len, uint32_t *off, "
             "uint32_t *len, const struct dp_aot_env *env, uint32_t *redirect)", "{",
             "\tuint64_t r0 = 0, r1 = 0, r2 = 0, r3 = 0, r4 = 0, r5 = 0, r6 = 0, r7 = 0, "
             "r8 = 0, r9 = 0, r10;",
             (f"\tuint8_t stack[{stack}] __attribute__((aligned(8)));" if scalars is None else
              "".join(f"\t{_UTYPE[z]} {_slot(o, z)} = 0;" for o, z in sorted(scalars))),
             "\tint32_t fault = 0; uint32_t fault_pc = 0, redir = 0;",
             f"\tuint64_t edges = {budget}u;",
             "\tuint64_t c_data = (uint64_t)(uintptr_t)(frame + *off);",
             "\tuint64_t c_end = c_data + *len, c_meta = c_data;",
             f"\tconst uint64_t buf_lo = (uint64_t)(uintptr_t)(frame + {HEADROOM_FLOOR});",
             "\tconst uint64_t buf_hi = (uint64_t)(uintptr_t)(frame + frame_len);",
             "\tstruct { uint64_t stack_lo; } R;"]
    if has_calls:
        lines += [f"\tstruct {{ uint64_t r6, r7, r8, r9, lo; void *ret; }} fr[{MAX_DEPTH}];",
                  "\tuint32_t depth = 0;"]
    if ctx_in_mem:
        lines += ["\tstruct dp_xdp_ctx ctx = { .data = c_data, .data_end = c_end, "
                  ".data_meta = c_meta };",
                  "\tr1 = (uint64_t)(uintptr_t)&ctx;"]
    if scalars is None:
        lines += [f"\tr10 = (uint64_t)(uintptr_t)(stack + {stack});",
                  f"\tR.stack_lo = r10 - {STACK};"]
    lines += [body]
    # the packet's bounds change only through adjust_head/tail: otherwise
    # *off and *len are left alone (no store the compiler must keep)
    wb = (["\t*off = (uint32_t)(c_data - (uint64_t)(uintptr_t)frame);",
           "\t*len = (uint32_t)(c_end - c_data);"] if moves_packet else [])
    lines += ["out:", *wb,
              "\t*redirect = redir;",
              "\treturn (uint32_t)r0 > AOT_XDP_REDIRECT ? 0 : (uint32_t)r0;",
              "out_fault:",
              "\t(void)fault; (void)fault_pc;", *wb,
              "\t*redirect = redir;",
              "\treturn AOT_FAULT_VERDICT;",
              "}", "",
              # the dp_aot_fn entry (any frame layout)
              f"uint32_t {name}(uint8_t *frame, uint32_t frame_len, uint32_t *off, "
              "uint32_t *len, const struct dp_aot_env *env, uint32_t *redirect)",
              f"{{\n\treturn {name}_core(frame, frame_len, off, len, env, redirect);\n}}", "",
              # the fast path's handler (handler.h, pkt.h): installed as h->run
              f"uint32_t {name}_run(const struct handler *h, struct pkt *p)",
              "{\n\tuint32_t redirect;\n",
              f"\treturn {name}_core((uint8_t *)p, FRAME_SIZE, &p->off, &p->len, "
              "h->aot_env, &redirect);\n}", "",
              # one run of name_run on a frame laid out as the fast path's (tests)
              f"__attribute__((__noinline__)) uint32_t {name}_run_pkt(uint8_t *frame, "
              "const struct dp_aot_env *env)",
              "{\n\tstruct handler h = { .aot_env = env };\n",
              f"\treturn {name}_run(&h, (struct pkt *)frame);\n}}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ compiler

_cc_version: str | None = None
_lock = threading.Lock()


def cc_version() -> str:
    global _cc_version
    if _cc_version is None:
        _cc_version = subprocess.run([CC, "--version"], capture_output=True, text=True,
                                     check=True).stdout
    return _cc_version


def _abi_version() -> int:
    from datapath._dp import lib
    return int(lib.DP_ABI_VERSION)


def _glue_text() -> str:
    """Everything the generated code is compiled with, besides itself."""
    parts = [GLUE.read_text(), (DP_INCLUDE / "isolane_dp.h").read_text()]
    for h in ("maps.h", "compiler.h", "handler.h", "pkt.h"):
        parts.append((DP_SRC / h).read_text())
    parts.append(Path(__file__).read_text())  # the translator itself
    return "\0".join(parts)


def cache_key(insns: bytes, *, mode: str, checked: bool, budget: int,
              cflags: list[str] | None = None, abi: int | None = None) -> str:
    h = hashlib.sha256()
    for part in (insns, mode.encode(), b"checked" if checked else b"unchecked",
                 str(budget).encode(), " ".join(cflags or CFLAGS).encode(),
                 cc_version().encode(),
                 str(_abi_version() if abi is None else abi).encode(),
                 _glue_text().encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


@dataclass
class AotModule:
    """A compiled program: the shared object, its symbol, and how it came to be."""

    path: Path
    name: str
    mode: str
    checked: bool
    key: str
    cached: bool
    translate_s: float = 0.0
    compile_s: float = 0.0
    load_s: float = 0.0
    _ffi: object = field(default=None, repr=False)
    _lib: object = field(default=None, repr=False)

    @property
    def total_s(self) -> float:
        return self.translate_s + self.compile_s + self.load_s

    def address(self, symbol: str | None = None) -> int:
        return int(self._ffi.cast("uintptr_t", self._ffi.addressof(self._lib, symbol or self.name)))


def compile_aot(insns: bytes, *, mode: str = "xdp", checked: bool = False, budget: int = 0,
                name: str | None = None, cflags: list[str] | None = None,
                cache_dir: Path | None = None) -> AotModule:
    """Translates and compiles `insns` (or finds them in the cache) and loads
    the shared object."""
    cflags = list(cflags or CFLAGS)
    key = cache_key(insns, mode=mode, checked=checked, budget=budget, cflags=cflags)
    name = name or f"aot_{key[:16]}"
    d = (cache_dir or CACHE_DIR) / key
    so = d / f"{name}.so"
    t0 = time.perf_counter()
    t_tr = t_cc = 0.0
    cached = so.is_file()
    if not cached:
        src = ('#include "aot_glue.h"\n\n' +
               translate(insns, name=name, mode=mode, checked=checked, budget=budget))
        t_tr = time.perf_counter() - t0
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.c").write_text(src)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=d)
        os.close(fd)
        t1 = time.perf_counter()
        r = subprocess.run([CC, *cflags, "-o", tmp, str(d / f"{name}.c")],
                           capture_output=True, text=True)
        if r.returncode:
            os.unlink(tmp)
            raise AotError(f"{CC} failed on {d / (name + '.c')}:\n{r.stderr[-4000:]}")
        os.replace(tmp, so)
        t_cc = time.perf_counter() - t1
    t2 = time.perf_counter()
    ffi = cffi.FFI()
    if mode == "xdp":
        ffi.cdef(f"uint32_t {name}(uint8_t *, uint32_t, uint32_t *, uint32_t *, void *, "
                 "uint32_t *);")
        if not checked:
            ffi.cdef(f"uint32_t {name}_run(void *, void *);\n"
                     f"uint32_t {name}_run_pkt(uint8_t *, void *);")
    else:
        ffi.cdef(f"uint64_t {name}(uint8_t *, uint32_t, void *, int32_t *);\n"
                 f"uint64_t {name}_ex(uint8_t *, uint32_t, void *, int32_t *, uint32_t *, "
                 "uint64_t *);")
    lib = ffi.dlopen(str(so))
    return AotModule(so, name, mode, checked, key, cached, t_tr, t_cc,
                     time.perf_counter() - t2, ffi, lib)


# ------------------------------------------------------------------ running

class AotProgram:
    """A compiled program with its maps and its dp_aot_env, ready to run or
    to hand to dp_tenant_set_aot (`fn`, `env`)."""

    def __init__(self, module: AotModule, maps=()):
        from datapath._dp import ffi as dp_ffi, lib as dp_lib

        self.module = module
        self.maps = list(maps)  # kept alive: env points at them
        self._handles = dp_ffi.new("dp_map_t *[]", [m.handle for m in self.maps] or [dp_ffi.NULL])
        self.env = dp_ffi.new("struct dp_aot_env *")
        ret = dp_lib.dp_aot_env_init(self.env, self._handles, len(self.maps))
        if ret < 0:
            raise AotError(f"dp_aot_env_init: {os.strerror(-ret)}")
        self._env_addr = int(dp_ffi.cast("uintptr_t", self.env))
        self.fn = (dp_ffi.cast("dp_aot_fn", module.address()) if module.mode == "xdp" else None)
        # unchecked XDP: the fast path's own handler, `uint32_t run(const struct
        # handler *h, struct pkt *p)` (env in h->aot_env), for
        # dp_tenant_set_aot_run / dp_aot_run_bench
        self.run_fn = (dp_ffi.cast("void *", module.address(f"{module.name}_run"))
                       if module.mode == "xdp" and not module.checked else None)

    def run_xdp(self, packet: bytes, headroom: int = 256, tailroom: int = 256
                ) -> tuple[int, bytes]:
        """(verdict, packet after the run); verdict 255 is a fault."""
        return self.run_xdp_detail(packet, headroom, tailroom)[:2]

    def run_xdp_detail(self, packet: bytes, headroom: int = 256, tailroom: int = 256):
        """(verdict, packet, redirect target)."""
        from datapath._dp import ffi as dp_ffi

        if self.fn is None:
            raise AotError("not an XDP-mode program")
        start = HEADROOM_FLOOR + headroom
        frame_len = start + len(packet) + tailroom
        frame = dp_ffi.new("uint8_t[]", frame_len)
        dp_ffi.memmove(frame + start, packet, len(packet))
        off = dp_ffi.new("uint32_t *", start)
        ln = dp_ffi.new("uint32_t *", len(packet))
        redirect = dp_ffi.new("uint32_t *")
        verdict = self.fn(frame, frame_len, off, ln, self.env, redirect)
        return verdict, bytes(dp_ffi.buffer(frame + off[0], ln[0])), redirect[0]

    def run_pkt(self, packet: bytes) -> tuple[int, bytes]:
        """(verdict, packet after the run) through run_fn, on a frame laid out
        as the fast path's (datapath/src/pkt.h: 2048 bytes, 64 of metadata,
        the packet at 320)."""
        if self.run_fn is None:
            raise AotError("not an unchecked XDP-mode program")
        ffi, lib = self.module._ffi, self.module._lib
        if len(packet) > FRAME_SIZE - PKT_DATA_OFF:
            raise AotError("packet larger than a frame")
        frame = ffi.new("uint64_t[]", FRAME_SIZE // 8)  # 8-aligned, as the pool's frames
        buf = ffi.cast("uint8_t *", frame)
        off = ffi.cast("uint32_t *", buf + 8)  # struct pkt: off, len after ts_intended
        off[0], off[1] = PKT_DATA_OFF, len(packet)
        ffi.memmove(buf + PKT_DATA_OFF, packet, len(packet))
        verdict = getattr(lib, f"{self.module.name}_run_pkt")(
            buf, ffi.cast("void *", self._env_addr))
        return verdict, bytes(ffi.buffer(buf + off[0], off[1]))

    def run_raw(self, mem: bytes = b"") -> tuple[int, bytes, int]:
        """(r0, mem after the run, fault: 0 or -errno)."""
        r0, after, f, _, _ = self.run_raw_detail(mem)
        return r0, after, f

    def run_raw_detail(self, mem: bytes = b""):
        """(r0, mem after, fault, fault_pc, instructions executed (checked only))."""
        ffi, lib = self.module._ffi, self.module._lib
        if self.module.mode != "raw":
            raise AotError("not a raw-mode program")
        buf = ffi.new("uint8_t[]", max(len(mem), 1))
        ffi.memmove(buf, mem, len(mem))
        fault = ffi.new("int32_t *")
        fpc = ffi.new("uint32_t *")
        n = ffi.new("uint64_t *")
        fn = getattr(lib, f"{self.module.name}_ex")
        r0 = fn(buf if mem else ffi.NULL, len(mem), ffi.cast("void *", self._env_addr),
                fault, fpc, n)
        return r0, bytes(ffi.buffer(buf, len(mem))), fault[0], fpc[0], n[0]

    def bench_xdp(self, packet: bytes, repeat: int) -> float:
        """Mean ns per run, in place (dp_aot_bench: the datapath's frame,
        start and length reset every run)."""
        from datapath._dp import ffi as dp_ffi, lib as dp_lib

        verdict = dp_ffi.new("uint32_t *")
        cycles = dp_lib.dp_aot_bench(self.fn, self.env, packet, len(packet), repeat, verdict)
        if cycles < 0:
            raise AotError(f"dp_aot_bench: {os.strerror(-cycles)}")
        return cycles * 1e9 / dp_lib.dp_tsc_hz() / repeat

    def bench_run(self, packet: bytes, repeat: int) -> float:
        """Mean ns per run of run_fn installed as the handler itself
        (dp_aot_run_bench: the harness of dp_handler_bench)."""
        from datapath._dp import ffi as dp_ffi, lib as dp_lib

        if self.run_fn is None:
            raise AotError("not an unchecked XDP-mode program")
        verdict = dp_ffi.new("uint32_t *")
        cycles = dp_lib.dp_aot_run_bench(self.run_fn, self.env, packet, len(packet), repeat,
                                         verdict)
        if cycles < 0:
            raise AotError(f"dp_aot_run_bench: {os.strerror(-cycles)}")
        return cycles * 1e9 / dp_lib.dp_tsc_hz() / repeat


def load_raw(insns: bytes, maps=(), budget: int = 0, checked: bool = True) -> AotProgram:
    """A raw-mode program (r1 = mem, r2 = len), validated first by the
    interpreter's loader (so refusals are its ProgramError, word for word)."""
    from datapath.ebpf_engine import Program

    Program(insns, list(maps), insn_budget=budget)  # raises ProgramError
    return AotProgram(compile_aot(insns, mode="raw", checked=checked, budget=budget), maps)


__all__ = ["translate", "compile_aot", "cache_key", "AotModule", "AotProgram", "AotError",
           "load_raw", "FAULT_VERDICT"]
