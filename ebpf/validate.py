"""isolane's own checks on final (relocated) bytecode, independent of the
kernel: whatever reaches an engine passes these, whoever produced it.

Accepted instruction set (what the interpreter must implement):

* ALU/ALU64: ADD SUB MUL DIV OR AND LSH RSH MOD XOR MOV ARSH with K or X
  source, NEG (K), END (to-le/to-be, imm 16/32/64); `off` must be 0
  (no cpu-v4 signed div/mod or movsx).
* LDX MEM B/H/W/DW; ST MEM B/H/W/DW; STX MEM B/H/W/DW;
  STX ATOMIC W/DW with imm ADD/OR/AND/XOR (+FETCH), XCHG, CMPXCHG.
* LD_IMM64 with src_reg 0 (constant) or 1 (map index < number of maps);
  its second slot is all zero but imm.
* JMP/JMP32: JA (JMP only), JEQ JGT JGE JSET JNE JSGT JSGE JLT JLE JSLT JSLE
  with K or X; CALL of an allowed helper (src 0) or a BPF-to-BPF call
  (src 1, target in range); EXIT.

Helpers allowed (kernel ids): see ALLOWED_HELPERS.
"""
from __future__ import annotations

from .errors import ValidationError
from .insn import (ADD, ALU, ALU64, AND, ARSH, ATOMIC_CMPXCHG, ATOMIC_FETCH, ATOMIC_XCHG, CALL,
                   COND_JUMPS, DIV, END, EXIT, JA, JMP, JMP32, LD_IMM64, LDX, LSH, MAX_REG,
                   MOD, MODE_ATOMIC, MODE_MEM, MOV, MUL, NEG, OR, PSEUDO_CALL, PSEUDO_MAP_FD, R10,
                   RSH, SIZE_DW, SIZE_W, SRC_X, ST, STX, SUB, XOR, Insn, decode)

ALLOWED_HELPERS = {
    1: "map_lookup_elem",
    2: "map_update_elem",
    3: "map_delete_elem",
    5: "ktime_get_ns",
    28: "csum_diff",
    44: "xdp_adjust_head",
    51: "redirect_map",
    65: "xdp_adjust_tail",
    130: "ringbuf_output",
}

_ALU_OPS = {ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, MOD, XOR, MOV, ARSH}
_ATOMIC_OPS = {ADD, OR, AND, XOR} | {op | ATOMIC_FETCH for op in (ADD, OR, AND, XOR)} | {
    ATOMIC_XCHG, ATOMIC_CMPXCHG}


def _check_insn(ins: Insn, i: int, n_maps: int) -> None:
    cls, op = ins.cls, ins.op
    if cls in (ALU, ALU64):
        if ins.off != 0:
            raise ValidationError(f"ALU with off={ins.off} (cpu v4) is not supported", i)
        if op in _ALU_OPS:
            return
        if op == NEG and not ins.code & SRC_X:
            return
        if op == END and ins.imm in (16, 32, 64) and (cls == ALU):
            return
    elif cls == LDX:
        if ins.mode == MODE_MEM:
            return
    elif cls == ST:
        if ins.mode == MODE_MEM:
            return
    elif cls == STX:
        if ins.mode == MODE_MEM:
            return
        if ins.mode == MODE_ATOMIC and ins.code & 0x18 in (SIZE_W, SIZE_DW) and ins.imm in _ATOMIC_OPS:
            return
    elif ins.code == LD_IMM64:
        if ins.src == 0:
            return
        if ins.src == PSEUDO_MAP_FD:
            if not 0 <= ins.imm < n_maps:
                raise ValidationError(f"map index {ins.imm} out of range ({n_maps} maps)", i)
            return
        raise ValidationError(f"LD_IMM64 with src_reg={ins.src}", i)
    elif cls in (JMP, JMP32):
        if op == CALL and cls == JMP:
            if ins.src == 0:
                if ins.imm not in ALLOWED_HELPERS:
                    raise ValidationError(f"helper {ins.imm} is not allowed", i)
                return
            if ins.src == PSEUDO_CALL:
                return
        elif op == EXIT and cls == JMP:
            return
        elif op == JA and cls == JMP:
            return
        elif op in COND_JUMPS:
            return
    raise ValidationError(f"unknown opcode 0x{ins.code:02x}", i)


def _writes(ins: Insn) -> int | None:
    """The register an instruction writes, if any (r0 for calls)."""
    cls = ins.cls
    if cls in (ALU, ALU64, LDX) or ins.code == LD_IMM64:
        return ins.dst
    if cls == STX and ins.mode == MODE_ATOMIC:
        if ins.imm == ATOMIC_CMPXCHG:
            return 0
        if ins.imm & ATOMIC_FETCH:
            return ins.src
    return None


def validate(insns: bytes | list[Insn], n_maps: int) -> list[Insn]:
    """Raises ValidationError naming the first bad instruction; returns the
    decoded slots when the program is acceptable."""
    slots = decode(insns) if isinstance(insns, (bytes, bytearray)) else list(insns)
    n = len(slots)
    if n == 0:
        raise ValidationError("empty program")
    starts = [True] * n
    i = 0
    while i < n:
        ins = slots[i]
        if ins.code == LD_IMM64:
            if i + 1 >= n:
                raise ValidationError("LD_IMM64 without its second slot", i)
            nxt = slots[i + 1]
            if nxt.code or nxt.dst or nxt.src or nxt.off:
                raise ValidationError("malformed LD_IMM64 second slot", i + 1)
            if ins.off:
                raise ValidationError("LD_IMM64 with nonzero off", i)
            starts[i + 1] = False
            i += 2
        else:
            i += 1
    last = max(j for j in range(n) if starts[j])
    for i, ins in enumerate(slots):
        if not starts[i]:
            continue
        if ins.dst > MAX_REG or ins.src > MAX_REG:
            raise ValidationError(f"register r{max(ins.dst, ins.src)} does not exist", i)
        _check_insn(ins, i, n_maps)
        if _writes(ins) == R10:
            raise ValidationError("write to r10 (the frame pointer)", i)
        if ins.is_jump() or (ins.code == JMP | CALL and ins.src == PSEUDO_CALL):
            target = i + 1 + (ins.imm if ins.op == CALL else ins.off)
            if not 0 <= target < n:
                raise ValidationError(f"jump target {target} out of range", i)
            if not starts[target]:
                raise ValidationError(f"jump target {target} is inside an LD_IMM64", i)
    end = slots[last]
    if not (end.is_exit() or (end.code == JMP | JA)):
        raise ValidationError("the program can fall off its end", last)
    return slots
