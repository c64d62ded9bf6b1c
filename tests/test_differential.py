"""Differential fuzzing of the engines: random verifier-accepted XDP programs
run under the kernel (the oracle), the interpreter and the aot engine must
agree on r0's low 32 bits, the output packet and the verdict.

The programs come from a small grammar: a prologue that proves 64 bytes of
packet to the verifier and initialises r0, r4, r5, r7-r9 with random
values; a body of random ALU64/ALU32 operations (div/mod/sdiv/smod, shifts,
movsx, byte swaps), sign-extending and plain packet loads, packet stores
and forward conditional jumps; an epilogue that stores r0 (all 64 bits) at
the packet's start and returns r0 & 3. A program the verifier refuses is
replaced by another. ISOLANE_DIFF_PROGRAMS sets the count (default 30),
ISOLANE_DIFF_SEED the seed.
"""
from __future__ import annotations

import os
import random

import pytest

from ebpf import insn as I
from ebpf.insn import Insn

N_PROGRAMS = int(os.environ.get("ISOLANE_DIFF_PROGRAMS", "30"))
SEED = int(os.environ.get("ISOLANE_DIFF_SEED", "20261121"))
PKT_LEN = 64
REGS = [0, 4, 5, 7, 8, 9]
ALU_OPS = [I.ADD, I.SUB, I.MUL, I.DIV, I.OR, I.AND, I.LSH, I.RSH, I.MOD, I.XOR, I.MOV, I.ARSH]
JMP_OPS = [I.JEQ, I.JGT, I.JGE, I.JSET, I.JNE, I.JSGT, I.JSGE, I.JLT, I.JLE, I.JSLT, I.JSLE]
SIZES = {1: I.SIZE_B, 2: I.SIZE_H, 4: I.SIZE_W, 8: I.SIZE_DW}


def _imm(rng: random.Random) -> int:
    return rng.choice([0, 1, -1, 2, 7, 31, 32, 63, 0x7fffffff, -0x80000000,
                       rng.randint(-2**31, 2**31 - 1), rng.randint(-100, 100)])


def _alu(rng: random.Random) -> Insn:
    cls = rng.choice([I.ALU64, I.ALU])
    dst = rng.choice(REGS)
    r = rng.random()
    if r < 0.06:
        return Insn(cls | I.NEG, dst)
    if r < 0.12:  # byte swaps: le/be (ALU), bswap (ALU64)
        code = rng.choice([I.ALU | I.END | I.SRC_K, I.ALU | I.END | I.SRC_X, I.ALU64 | I.END])
        return Insn(code, dst, imm=rng.choice([16, 32, 64]))
    if r < 0.18:  # movsx
        off = rng.choice([8, 16, 32] if cls == I.ALU64 else [8, 16])
        return Insn(cls | I.MOV | I.SRC_X, dst, rng.choice(REGS), off)
    op = rng.choice(ALU_OPS)
    off = 1 if op in (I.DIV, I.MOD) and rng.random() < 0.4 else 0
    if rng.random() < 0.5:
        return Insn(cls | op | I.SRC_X, dst, rng.choice(REGS), off)
    imm = _imm(rng)
    if op in (I.LSH, I.RSH, I.ARSH):
        imm = rng.randrange(64 if cls == I.ALU64 else 32)
    if op in (I.DIV, I.MOD) and imm == 0:
        imm = 3
    return Insn(cls | op | I.SRC_K, dst, 0, off, imm)


def gen_program(rng: random.Random, n_body: int = 24) -> bytes:
    """Kernel-form bytecode (xdp_md loads)."""
    body: list[list[Insn]] = []
    for _ in range(n_body):
        r = rng.random()
        if r < 0.6:
            body.append([_alu(rng)])
        elif r < 0.75:
            size = rng.choice([1, 2, 4, 8])
            sx = size < 8 and rng.random() < 0.3
            code = I.LDX | SIZES[size] | (I.MODE_MEMSX if sx else I.MODE_MEM)
            body.append([Insn(code, rng.choice(REGS), 2, rng.randrange(PKT_LEN - size + 1))])
        elif r < 0.85:
            size = rng.choice([1, 2, 4, 8])
            body.append([Insn(I.STX | SIZES[size] | I.MODE_MEM, 2, rng.choice(REGS),
                              rng.randrange(8, PKT_LEN - size + 1))])
        else:
            body.append([None])  # a forward jump, resolved below
    flat: list[Insn] = []
    idx = []
    for chunk in body:
        idx.append(len(flat))
        flat.extend(chunk)
    for k, pos in enumerate(idx):
        if flat[pos] is None:
            skip = rng.randint(0, len(flat) - pos - 1)
            cls = rng.choice([I.JMP, I.JMP32])
            op = rng.choice(JMP_OPS)
            if rng.random() < 0.5:
                flat[pos] = Insn(cls | op | I.SRC_X, rng.choice(REGS), rng.choice(REGS), skip)
            else:
                flat[pos] = Insn(cls | op | I.SRC_K, rng.choice(REGS), 0, skip, _imm(rng))
    pro = [
        Insn(I.LDX | I.SIZE_W | I.MODE_MEM, 2, 1, 0),      # data
        Insn(I.LDX | I.SIZE_W | I.MODE_MEM, 3, 1, 4),      # data_end
        Insn(I.ALU64 | I.MOV | I.SRC_K, 0, imm=1),
        Insn(I.ALU64 | I.MOV | I.SRC_X, 4, 2),
        Insn(I.ALU64 | I.ADD | I.SRC_K, 4, imm=PKT_LEN),
        None,                                              # if r4 > r3 goto the exit
    ]
    init = []
    for r in REGS:
        if rng.random() < 0.5:
            v = rng.getrandbits(64)
            init += [Insn(I.LD_IMM64, r, imm=v & 0xffffffff if v & 0x80000000 == 0
                          else (v & 0xffffffff) - 2**32),
                     Insn(0, imm=(v >> 32) - (2**32 if v >> 63 else 0))]
        else:
            init.append(Insn(I.ALU64 | I.MOV | I.SRC_K, r, imm=_imm(rng)))
    epi = [Insn(I.STX | I.SIZE_DW | I.MODE_MEM, 2, 0, 0),
           Insn(I.ALU64 | I.AND | I.SRC_K, 0, imm=3),
           Insn(I.JMP | I.EXIT)]
    after_check = len(init) + len(flat) + 2   # to the exit
    pro[5] = Insn(I.JMP | I.JGT | I.SRC_X, 4, 3, after_check)
    return I.encode(pro + init + flat + epi)


def packet(rng: random.Random) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(PKT_LEN + rng.randrange(16)))


def engine_form(kernel_insns: bytes) -> bytes:
    from ebpf import rewrite_ctx
    return I.encode(rewrite_ctx(I.decode(kernel_insns)))


@pytest.mark.unit
def test_generator_programs_translate():
    from ebpf.aot import translate
    rng = random.Random(SEED)
    for k in range(20):
        translate(engine_form(gen_program(rng)), name=f"p{k}", mode="xdp", checked=False)


@pytest.mark.integration
def test_differential_kernel_interp_aot():
    if os.geteuid() != 0:
        pytest.skip("the kernel needs root")
    from datapath.ebpf_engine import Program
    from ebpf.aot import AotProgram, compile_aot
    from ebpf.errors import VerifierError
    from ebpf.kernel import load_raw_xdp, test_run

    rng = random.Random(SEED)
    done = rejected = 0
    mismatches = []
    while done < N_PROGRAMS:
        kprog = gen_program(rng)
        try:
            fd, _ = load_raw_xdp(kprog, name="isolane_diff")
        except VerifierError:
            rejected += 1
            assert rejected < 20 * N_PROGRAMS + 100, "the generator makes too many rejects"
            continue
        try:
            prog = engine_form(kprog)
            interp = Program(prog, [], insn_budget=0)
            aot = AotProgram(compile_aot(prog, mode="xdp", checked=False, budget=1 << 20))
            for _ in range(3):
                pkt = packet(rng)
                k = test_run(fd, pkt)
                i = interp.run_xdp(pkt)
                a_verdict, a_pkt = aot.run_xdp(pkt)
                got = {"kernel": (k.retval, k.data_out), "interp": (i.r0 & 0xffffffff, i.packet),
                       "aot": (a_verdict, a_pkt)}
                if i.fault or not (k.retval == i.r0 & 0xffffffff == a_verdict == i.verdict and
                                   k.data_out == i.packet == a_pkt):
                    mismatches.append((kprog.hex(), pkt.hex(), got, i.fault))
        finally:
            os.close(fd)
        done += 1
    print(f"{done} programs, {rejected} refused by the verifier")
    assert not mismatches, mismatches[:3]
