"""eBPF instruction encoding: the 8-byte instruction, opcode fields and names.

One instruction is `struct bpf_insn { u8 code; u8 dst:4, src:4; s16 off; s32 imm; }`
(little-endian, as on x86-64). LD_IMM64 takes two slots; the second slot
carries the upper 32 bits of the immediate in its `imm`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

INSN_SIZE = 8
_FMT = struct.Struct("<BBhi")

# instruction classes (code & 0x07)
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)

# load/store size (code & 0x18) and mode (code & 0xe0)
SIZE_W, SIZE_H, SIZE_B, SIZE_DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {SIZE_W: 4, SIZE_H: 2, SIZE_B: 1, SIZE_DW: 8}
MODE_IMM, MODE_ABS, MODE_IND, MODE_MEM, MODE_MEMSX, MODE_ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0

# ALU operations (code & 0xf0) and operand source (code & 0x08)
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
SRC_K, SRC_X = 0x00, 0x08

# jump operations (code & 0xf0)
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
COND_JUMPS = frozenset({JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, JLT, JLE, JSLT, JSLE})

# atomic operations (imm of STX|ATOMIC)
ATOMIC_FETCH = 0x01
ATOMIC_XCHG = 0xE0 | ATOMIC_FETCH
ATOMIC_CMPXCHG = 0xF0 | ATOMIC_FETCH

LD_IMM64 = LD | SIZE_DW | MODE_IMM  # 0x18
PSEUDO_MAP_FD = 1  # src_reg of LD_IMM64: imm is a map fd (kernel) or map index (isolane)
PSEUDO_CALL = 1  # src_reg of CALL: a BPF-to-BPF call, imm is the relative target

R0, R1, R10 = 0, 1, 10
MAX_REG = 10


@dataclass(frozen=True, slots=True)
class Insn:
    """One 8-byte slot; `dst`/`src` are register numbers, `off`/`imm` signed."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    @property
    def cls(self) -> int:
        return self.code & 0x07

    @property
    def op(self) -> int:
        return self.code & 0xF0

    @property
    def size(self) -> int:
        """Bytes moved by a load/store."""
        return SIZE_BYTES[self.code & 0x18]

    @property
    def mode(self) -> int:
        return self.code & 0xE0

    def is_ld_imm64(self) -> bool:
        return self.code == LD_IMM64

    def is_jump(self) -> bool:
        """A jump with a target (JA or conditional); not CALL or EXIT."""
        return self.cls in (JMP, JMP32) and self.op not in (CALL, EXIT)

    def is_helper_call(self) -> bool:
        return self.code == JMP | CALL and self.src == 0

    def is_exit(self) -> bool:
        return self.code == JMP | EXIT

    def pack(self) -> bytes:
        return _FMT.pack(self.code, (self.src << 4) | self.dst, self.off, self.imm)


def decode(raw: bytes) -> list[Insn]:
    """Splits bytecode into slots (both halves of an LD_IMM64 included)."""
    if len(raw) % INSN_SIZE:
        raise ValueError(f"bytecode length {len(raw)} is not a multiple of {INSN_SIZE}")
    out = []
    for code, regs, off, imm in _FMT.iter_unpack(raw):
        out.append(Insn(code, regs & 0x0F, regs >> 4, off, imm))
    return out


def encode(insns: list[Insn]) -> bytes:
    return b"".join(i.pack() for i in insns)


def slot_starts(insns: list[Insn]) -> list[bool]:
    """`starts[i]` is False exactly for the second slot of an LD_IMM64."""
    starts = [True] * len(insns)
    i = 0
    while i < len(insns):
        if insns[i].is_ld_imm64() and i + 1 < len(insns):
            starts[i + 1] = False
            i += 2
        else:
            i += 1
    return starts


# Ready-made instructions for hand-written bytecode (tests, glue).
def mov64_imm(dst: int, imm: int) -> Insn:
    return Insn(ALU64 | MOV | SRC_K, dst, 0, 0, imm)


def mov64_reg(dst: int, src: int) -> Insn:
    return Insn(ALU64 | MOV | SRC_X, dst, src)


def alu64_imm(op: int, dst: int, imm: int) -> Insn:
    return Insn(ALU64 | op | SRC_K, dst, 0, 0, imm)


def ldx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(LDX | MODE_MEM | size, dst, src, off)


def stx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(STX | MODE_MEM | size, dst, src, off)


def st_imm(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(ST | MODE_MEM | size, dst, 0, off, imm)


def jmp_imm(op: int, dst: int, imm: int, off: int) -> Insn:
    return Insn(JMP | op | SRC_K, dst, 0, off, imm)


def ja(off: int) -> Insn:
    return Insn(JMP | JA, 0, 0, off)


def call(helper_id: int) -> Insn:
    return Insn(JMP | CALL, 0, 0, 0, helper_id)


def exit_() -> Insn:
    return Insn(JMP | EXIT)


def ld_map(dst: int, map_ref: int) -> list[Insn]:
    """LD_IMM64 with src_reg=PSEUDO_MAP_FD: two slots."""
    return [Insn(LD_IMM64, dst, PSEUDO_MAP_FD, 0, map_ref), Insn(0, 0, 0, 0, 0)]


def ld_imm64(dst: int, value: int) -> list[Insn]:
    lo = value & 0xFFFFFFFF
    hi = (value >> 32) & 0xFFFFFFFF
    s32 = lambda v: v - (1 << 32) if v & 0x80000000 else v  # noqa: E731
    return [Insn(LD_IMM64, dst, 0, 0, s32(lo)), Insn(0, 0, 0, 0, s32(hi))]
