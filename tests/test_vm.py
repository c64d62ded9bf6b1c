"""eBPF instruction semantics as data (uBPF style), run under every engine.

Each tests/vm/*.data file is one case, in sections that start with a line
`-- name`; `#` starts a comment anywhere:

    -- asm        the program in the assembly below
    -- raw        the program as 64-bit instruction words, one per line
                  (0x<imm:8><off:4><src:1><dst:1><code:2>, as uBPF writes them)
    -- mem        hex bytes given to the program: r1 = mem, r2 = its length
    -- maps       maps, one per line: `<type> <key_size> <value_size> <max_entries>`
                  (`map N` / `mapval N OFF` in the assembly refer to them)
    -- budget     the instruction budget (default 0: the engine's 1<<20)
    -- result     expected r0
    -- mem_after  expected mem after the run (hex)
    -- insns      expected number of executed instructions
    -- error      the loader refuses the program; a substring of its message
    -- fault      the run faults: EFAULT, E2BIG, EINVAL or ENOSPC, optionally `at PC`
    -- no-kernel  the case does not run in the kernel; the section's text says why
                  (required, one line or more)

Every case runs under isolane's interpreter ("interp") and, unless it says
`-- no-kernel`, in the kernel ("kernel", isolane's oracle: BPF_PROG_LOAD, so the
verifier must accept it, then BPF_PROG_TEST_RUN as XDP). `-- error` and
`-- fault` are isolane's own loader and runtime checks and are never run in
the kernel; neither are `-- budget` and `-- insns`, which the kernel path
ignores. The kernel returns r0's low 32 bits (the XDP verdict), so each case
runs there twice, the second time with the main frame's exits turned into
jumps to `r0 >>= 32; exit`, and the halves are joined. Memory shorter
than the 14 bytes the kernel's test run needs is padded with zeros (and
`-- mem_after` with it; a program that reads r2, the length, before writing it
must then say `-- no-kernel`), and r1 comes with the memory's exact length
proved to the verifier, so in-bounds loads and stores through r1 verify.

The assembly: one instruction per line, `label:` lines, operands separated
by commas. A `32` suffix selects the 32-bit class (ALU, JMP32).

    add sub mul div sdiv mod smod or and xor lsh rsh arsh mov   dst, src|imm
    neg dst                 movsxb/movsxh/movsxw dst, src (movsxb32, movsxh32)
    le16/le32/le64 dst      be16/be32/be64 dst      bswap16/bswap32/bswap64 dst
    ldxb/ldxh/ldxw/ldxdw dst, [src+off]    ldxsb/ldxsh/ldxsw (sign-extending)
    stb/sth/stw/stdw [dst+off], imm        stxb/stxh/stxw/stxdw [dst+off], src
    atomic_{add,or,and,xor,fetch_add,fetch_or,fetch_and,fetch_xor,xchg,cmpxchg}[32] [dst+off], src
    lddw dst, imm64 | lddw dst, map N | lddw dst, mapval N OFF
    ja L    gotol L    jeq jgt jge jlt jle jset jne jsgt jsge jslt jsle dst, src|imm, L
    call N | call <helper name> | call local L      exit      .word 0x...

A target L is a label or a relative offset (+3, -1).
"""
from __future__ import annotations

import errno
import os
import pathlib
import re
import struct

import pytest

from datapath.ebpf_engine import Map, Program, ProgramError, RawResult

# tiers per test: the kernel engine needs root (integration), the rest is unit

DATA = pathlib.Path(__file__).parent / "vm"
ENGINES = ["interp", "aot", "kernel"]

HELPERS = {"map_lookup_elem": 1, "map_update_elem": 2, "map_delete_elem": 3,
           "ktime_get_ns": 5, "csum_diff": 28, "xdp_adjust_head": 44, "redirect_map": 51,
           "xdp_adjust_tail": 65, "ringbuf_output": 130}
ALU = {"add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
       "lsh": 0x60, "rsh": 0x70, "mod": 0x90, "xor": 0xa0, "mov": 0xb0, "arsh": 0xc0,
       "sdiv": 0x30, "smod": 0x90}
JMP = {"jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50, "jsgt": 0x60,
       "jsge": 0x70, "jlt": 0xa0, "jle": 0xb0, "jslt": 0xc0, "jsle": 0xd0}
SIZE = {"b": 0x10, "h": 0x08, "w": 0x00, "dw": 0x18}
ATOMIC = {"add": 0x00, "or": 0x40, "and": 0x50, "xor": 0xa0, "fetch_add": 0x01,
          "fetch_or": 0x41, "fetch_and": 0x51, "fetch_xor": 0xa1, "xchg": 0xe1, "cmpxchg": 0xf1}


def insn(code, dst=0, src=0, off=0, imm=0) -> int:
    return (code | dst << 8 | src << 12 | (off & 0xffff) << 16 | (imm & 0xffffffff) << 32)


class AsmError(ValueError):
    pass


def _reg(s: str) -> int:
    m = re.fullmatch(r"r(\d+)", s.strip())
    if not m or int(m.group(1)) > 10:
        raise AsmError(f"not a register: {s!r}")
    return int(m.group(1))


def _is_reg(s: str) -> bool:
    return re.fullmatch(r"r\d+", s.strip()) is not None


def _mem(s: str) -> tuple[int, int]:
    m = re.fullmatch(r"\[\s*(r\d+)\s*(?:([+-])\s*(\w+))?\s*\]", s.strip())
    if not m:
        raise AsmError(f"not a memory operand: {s!r}")
    off = int(m.group(3), 0) if m.group(3) else 0
    return _reg(m.group(1)), -off if m.group(2) == "-" else off


def assemble(text: str) -> bytes:
    """The assembly above -> 8-byte little-endian instructions."""
    lines, labels = [], {}
    for raw in text.splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        if line.endswith(":"):
            labels[line[:-1].strip()] = sum(2 if ln.split()[0] == "lddw" else 1 for ln in lines)
            continue
        lines.append(line)

    words: list[int] = []

    def target(s: str, pc: int) -> int:
        s = s.strip()
        if s in labels:
            return labels[s] - pc - 1
        return int(s, 0)

    for line in lines:
        pc = len(words)
        mn, _, rest = line.partition(" ")
        ops = [o.strip() for o in re.split(r",(?![^\[]*\])", rest)] if rest.strip() else []
        w32 = mn.endswith("32") and mn not in ("le32", "be32", "bswap32")
        base = mn[:-2] if w32 else mn
        if mn == ".word":
            words.append(int(ops[0], 0))
        elif mn == "exit":
            words.append(insn(0x95))
        elif mn == "ja":
            words.append(insn(0x05, off=target(ops[0], pc)))
        elif mn == "gotol":
            words.append(insn(0x06, imm=target(ops[0], pc)))
        elif mn == "call":
            if ops[0].startswith("local"):
                words.append(insn(0x85, src=1, imm=target(ops[0][5:], pc)))
            else:
                words.append(insn(0x85, imm=HELPERS.get(ops[0]) or int(ops[0], 0)))
        elif mn == "lddw":
            dst, arg = _reg(ops[0]), ops[1].split()
            if arg[0] == "map":
                words += [insn(0x18, dst, 1, imm=int(arg[1], 0)), 0]
            elif arg[0] == "mapval":
                words += [insn(0x18, dst, 2, imm=int(arg[1], 0)), insn(0, imm=int(arg[2], 0))]
            else:
                v = int(arg[0], 0) & (2**64 - 1)
                words += [insn(0x18, dst, imm=v & 0xffffffff), insn(0, imm=v >> 32)]
        elif base in JMP:
            cls = 0x06 if w32 else 0x05
            dst, off = _reg(ops[0]), target(ops[2], pc)
            if _is_reg(ops[1]):
                words.append(insn(cls | JMP[base] | 0x08, dst, _reg(ops[1]), off))
            else:
                words.append(insn(cls | JMP[base], dst, 0, off, int(ops[1], 0)))
        elif base in ALU:
            cls = 0x04 if w32 else 0x07
            off = 1 if base in ("sdiv", "smod") else 0
            dst = _reg(ops[0])
            if _is_reg(ops[1]):
                words.append(insn(cls | ALU[base] | 0x08, dst, _reg(ops[1]), off))
            else:
                words.append(insn(cls | ALU[base], dst, 0, off, int(ops[1], 0)))
        elif base == "neg":
            words.append(insn((0x04 if w32 else 0x07) | 0x80, _reg(ops[0])))
        elif base in ("movsxb", "movsxh", "movsxw"):
            off = {"movsxb": 8, "movsxh": 16, "movsxw": 32}[base]
            words.append(insn((0x04 if w32 else 0x07) | 0xb8, _reg(ops[0]), _reg(ops[1]), off))
        elif m := re.fullmatch(r"(le|be|bswap)(16|32|64)", mn):
            code = {"le": 0xd4, "be": 0xdc, "bswap": 0xd7}[m.group(1)]
            words.append(insn(code, _reg(ops[0]), imm=int(m.group(2))))
        elif m := re.fullmatch(r"ldx(s?)(b|h|w|dw)", mn):
            src, off = _mem(ops[1])
            words.append(insn((0x80 if m.group(1) else 0x60) | SIZE[m.group(2)] | 0x01,
                              _reg(ops[0]), src, off))
        elif m := re.fullmatch(r"st(x?)(b|h|w|dw)", mn):
            dst, off = _mem(ops[0])
            if m.group(1):
                words.append(insn(0x63 | SIZE[m.group(2)], dst, _reg(ops[1]), off))
            else:
                words.append(insn(0x62 | SIZE[m.group(2)], dst, 0, off, int(ops[1], 0)))
        elif base.startswith("atomic_") and base[7:] in ATOMIC:
            dst, off = _mem(ops[0])
            words.append(insn(0xc3 if w32 else 0xdb, dst, _reg(ops[1]), off, ATOMIC[base[7:]]))
        else:
            raise AsmError(f"unknown instruction: {line!r}")
    return struct.pack(f"<{len(words)}Q", *words)


# ---------------------------------------------------------------- data files

def parse_data(path: pathlib.Path) -> dict[str, str]:
    sections: dict[str, str] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith("-- "):
            name = line[3:].strip()
            sections[name] = ""
        elif name is not None:
            sections[name] += line.split("#")[0] + "\n"
    return {k: v.strip() for k, v in sections.items()}


def _hex(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


def program_of(case: dict[str, str]) -> bytes:
    if "raw" in case:
        words = [int(w, 0) for w in case["raw"].split()]
        return struct.pack(f"<{len(words)}Q", *words)
    return assemble(case["asm"])


def maps_of(case: dict[str, str]) -> list[Map]:
    maps = []
    for line in case.get("maps", "").splitlines():
        if line.strip():
            t, k, v, n = line.split()
            maps.append(Map(t, int(k, 0), int(v, 0), int(n, 0)))
    return maps


def run(engine: str, prog: bytes, mem: bytes, maps: list[Map], budget: int = 0):
    """Loads and runs prog in raw mode under `engine`; returns a RawResult
    (raises ProgramError when isolane refuses the program, VerifierError when
    the kernel's verifier does). In the kernel `insns` is unknown (-1); maps
    and budgets are isolane's only."""
    if engine == "interp":
        return Program(prog, maps, insn_budget=budget).run_raw(mem)
    if engine == "aot":  # ebpf/aot.py, checked mode: the interpreter's loader, then C
        from ebpf.aot import load_raw
        r0, mem_after, fault, fault_pc, insns = load_raw(prog, maps, budget).run_raw_detail(mem)
        return RawResult(r0, mem_after, insns, fault, fault_pc)
    if engine == "kernel":
        if maps or budget:
            raise NotImplementedError("the kernel engine runs no maps and no budget")
        low, mem_after = run_kernel(prog, mem)
        high, _ = run_kernel(prog, mem, high_half=True)
        return RawResult(high << 32 | low, mem_after, -1, 0, 0)
    raise NotImplementedError(engine)


KERNEL_MIN_MEM = 14  # BPF_PROG_TEST_RUN wants an Ethernet header
_BAIL = 0x7eadbeef   # r0 when the memory is shorter than proved (never, by construction)
_EPILOGUE = 9        # the prologue's `rsh r0, 32; exit`


def kernel_prologue(n: int, epilogue: bool = False) -> bytes:
    """r1 = packet data, r2 = its length (the raw convention), with
    `data + n <= data_end` proved to the verifier first, so r1 carries a
    packet range of n bytes. ebpf.kernel.run_raw's prologue has no such check
    and cannot have one after the fact: r2 is a plain scalar then, and
    `if r2 < 8 goto fail` tells the verifier nothing about r1. Uses r0-r2
    only, as run_raw's does, so no register is initialised that the program
    would otherwise read uninitialised. With `epilogue`, ends with one that
    the program's main-frame exits jump back to when r0's high half is asked
    for (the kernel returns 32 bits; without a jump to it, the verifier would
    refuse it as unreachable)."""
    code = assemble(f"""
        ldxw r2, [r1+4]         # data_end
        ldxw r1, [r1+0]         # data
        add r1, {n}
        jle r1, r2, +2
        mov r0, {_BAIL}
        exit
        add r1, {-n}
        sub r2, r1              # r2 = data_end - data
    """ + ("""
        ja +2
        rsh r0, 32              # _EPILOGUE
        exit
    """ if epilogue else ""))
    assert not epilogue or struct.unpack_from("<Q", code, _EPILOGUE * 8)[0] == insn(0x77, imm=32)
    return code


def _exits_to_epilogue(prog: bytes, base: int) -> bytes:
    """prog (to be loaded at slot `base`) with every exit of the main frame
    (before the first `call local` target) turned into a jump, of the same
    size, to the epilogue: r0 >> 32 comes back instead of r0."""
    words = [w for (w,) in struct.iter_unpack("<Q", prog)]
    main_end, skip = len(words), False
    for pc, w in enumerate(words):
        if skip:
            skip = False
            continue
        skip = w & 0xff == 0x18
        if w & 0xff == 0x85 and w >> 12 & 0xf == 1:
            imm = (w >> 32) - (1 << 32) * (w >> 63)
            main_end = min(main_end, pc + 1 + imm)
    skip = False
    for pc in range(main_end):
        if skip:
            skip = False
            continue
        skip = words[pc] & 0xff == 0x18
        if words[pc] & 0xff == 0x95:
            words[pc] = insn(0x05, off=_EPILOGUE - (base + pc) - 1)
    return struct.pack(f"<{len(words)}Q", *words)


def run_kernel(prog: bytes, mem: bytes, high_half: bool = False) -> tuple[int, bytes]:
    """`prog` in the kernel on `mem` (>= 14 bytes) -> (r0's low 32 bits, or
    its high 32 with `high_half`; the memory after the run)."""
    from ebpf.kernel import load_raw_xdp, test_run

    if len(mem) < KERNEL_MIN_MEM:
        raise ValueError(f"the kernel needs {KERNEL_MIN_MEM} bytes of memory, not {len(mem)}")
    pro = kernel_prologue(len(mem), epilogue=high_half)
    if high_half:
        prog = _exits_to_epilogue(prog, len(pro) // 8)
    fd, _ = load_raw_xdp(pro + prog, name="isolane_vm")
    try:
        out = test_run(fd, mem)
    finally:
        os.close(fd)
    assert out.retval != _BAIL, "the kernel's memory is shorter than proved"
    return out.retval, out.data_out


def reads_r2_first(prog: bytes) -> bool:
    """Whether r2 (the memory's length) is read before it is written, in
    program order (straight-line approximation: the data files are small)."""
    for (word,) in struct.iter_unpack("<Q", prog):
        code, dst, src = word & 0xff, word >> 8 & 0xf, word >> 12 & 0xf
        cls, x = code & 0x07, code & 0x08
        reads = set()
        if cls in (0x04, 0x07):                      # ALU: mov reads only src
            op = code & 0xf0
            if op != 0xb0:
                reads.add(dst)
            if x and op not in (0x80, 0xd0):
                reads.add(src)
        elif cls in (0x05, 0x06):                    # JMP
            op = code & 0xf0
            if op == 0x80 and src == 0:              # a helper reads r2 as its 2nd
                return word >> 32 != HELPERS["ktime_get_ns"]  # argument and clobbers it
            elif op not in (0x00, 0x90):
                reads.add(dst)
                if x:
                    reads.add(src)
        elif cls == 0x01:                            # LDX
            reads.add(src)
        elif cls in (0x02, 0x03):                    # ST, STX
            reads.add(dst)
            if cls == 0x03:
                reads.add(src)
        if 2 in reads:
            return True
        writes = cls in (0x04, 0x07, 0x01) or cls == 0x00 and code == 0x18
        if writes and dst == 2:
            return False
    return False


CASES = sorted(DATA.glob("*.data"))


def kernel_exclusion(case: dict[str, str]) -> str | None:
    """Why `case` does not run in the kernel, or None when it does."""
    if "no-kernel" in case:
        if not case["no-kernel"]:
            raise ValueError("`-- no-kernel` needs a reason")
        return case["no-kernel"]
    if "error" in case:
        return "isolane's loader refuses it (-- error)"
    if "fault" in case:
        return "isolane's runtime faults (-- fault)"
    if "maps" in case:
        return "the kernel engine has no maps (ebpf.kernel creates none)"
    return None


def _params():
    """One parameter per file and engine: interp always (unit), kernel unless
    the file is excluded (integration: it needs root), so none is skipped."""
    out = []
    for path in CASES:
        for engine in ENGINES:
            if engine == "kernel" and kernel_exclusion(parse_data(path)) is not None:
                continue
            marks = [pytest.mark.unit] if engine in ("interp", "aot") else \
                [pytest.mark.integration, *KERNEL_XFAIL.get(path.stem, [])]
            out.append(pytest.param(engine, path, id=f"{path.stem}[{engine}]", marks=marks))
    return out


# files on which the kernel and the interpreter disagree: findings, kept visible
KERNEL_XFAIL: dict[str, list] = {}


@pytest.mark.unit
def test_enough_cases():
    assert len(CASES) >= 60


@pytest.mark.unit
def test_exclusions_have_reasons():
    for path in CASES:
        case = parse_data(path)
        kernel_exclusion(case)  # raises on an empty reason
        if kernel_exclusion(case) is None and len(_hex(case.get("mem", ""))) < KERNEL_MIN_MEM:
            assert not reads_r2_first(program_of(case)), \
                f"{path.name}: padding its memory changes r2; give 14 bytes or -- no-kernel"


@pytest.mark.parametrize("engine, path", _params())
def test_vm_data(engine, path):
    case = parse_data(path)
    prog = program_of(case)
    mem = _hex(case.get("mem", ""))
    maps = maps_of(case)
    budget = int(case.get("budget", "0"), 0)
    mem_after = _hex(case["mem_after"]) if "mem_after" in case else None
    if engine == "kernel":
        if os.geteuid() != 0:
            pytest.skip("the kernel engine needs root")
        pad = bytes(max(0, KERNEL_MIN_MEM - len(mem)))
        mem += pad
        if mem_after is not None:
            mem_after += pad
        budget = 0
    if "error" in case:
        with pytest.raises(ProgramError) as exc:
            run(engine, prog, mem, maps, budget)
        assert case["error"] in str(exc.value)
        return
    res = run(engine, prog, mem, maps, budget)
    if "fault" in case:
        name, _, at = case["fault"].partition(" at ")
        assert res.fault == -getattr(errno, name.strip()), res
        if at:
            assert res.fault_pc == int(at, 0), res
    else:
        assert res.fault == 0, res
    if "result" in case:
        assert res.r0 == int(case["result"], 0) & (2**64 - 1), hex(res.r0)
    if mem_after is not None:
        assert res.mem_after.hex() == mem_after.hex()
    if "insns" in case and engine != "kernel":
        assert res.insns == int(case["insns"], 0)


# ---------------------------------------------------------------- XDP mode

from datapath.ebpf_engine import XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX  # noqa: E402

PKT = bytes(range(60))


def xdp(asm: str, packet: bytes = PKT, maps=(), **kw):
    return Program(assemble(asm), list(maps)).run_xdp(packet, **kw)


@pytest.mark.unit
def test_xdp_context_fields():
    res = xdp("""
        ldxdw r2, [r1+0]
        ldxdw r3, [r1+8]
        ldxdw r4, [r1+16]
        ldxw r5, [r1+24]
        ldxw r6, [r1+28]
        ldxw r7, [r1+32]
        mov r0, r3
        sub r0, r2
        sub r4, r2          # data_meta == data
        lsh r5, 16
        or r0, r5
        lsh r6, 32
        or r0, r6
        or r0, r4
        or r0, r7           # egress_ifindex 0
        exit""", ingress_ifindex=7, rx_queue=3)
    assert res.fault == 0
    assert res.r0 == 60 | 7 << 16 | 3 << 32


@pytest.mark.parametrize("asm", [
    "stdw [r1+0], 0",            # the context is read-only
    "ldxw r0, [r1+0]",           # half a pointer
    "ldxdw r0, [r1+24]",         # two u32 fields at once
    "ldxw r0, [r1+36]",          # the padding
    "ldxb r0, [r1+24]",          # part of a field
])
@pytest.mark.unit
def test_xdp_context_forbidden(asm):
    res = xdp(asm + "\nmov r0, 2\nexit")
    assert (res.verdict, res.fault, res.fault_pc) == (XDP_ABORTED, -errno.EFAULT, 0)


PKT_PTRS = """
    ldxdw r2, [r1+0]
    ldxdw r3, [r1+8]
"""


@pytest.mark.unit
def test_xdp_packet_bounds():
    ok = xdp(PKT_PTRS + "ldxb r0, [r3-1]\nexit")
    assert (ok.fault, ok.r0) == (0, 59)
    past = xdp(PKT_PTRS + "ldxb r0, [r3+0]\nexit")
    assert (past.verdict, past.fault, past.fault_pc) == (XDP_ABORTED, -errno.EFAULT, 2)
    before = xdp(PKT_PTRS + "ldxb r0, [r2-1]\nexit")   # headroom is not the packet
    assert before.fault == -errno.EFAULT
    atomic = xdp(PKT_PTRS + "mov r4, 1\natomic_add [r2+0], r4\nmov r0, 2\nexit")
    assert atomic.fault == -errno.EFAULT   # no atomics on packet data


@pytest.mark.unit
def test_xdp_writes_reach_the_packet():
    res = xdp(PKT_PTRS + "stb [r2+0], 0xaa\nstb [r3-1], 0xbb\nmov r0, 3\nexit")
    assert res.verdict == XDP_TX
    assert res.packet == b"\xaa" + PKT[1:-1] + b"\xbb"


@pytest.mark.unit
def test_xdp_unknown_action_aborts():
    res = xdp("mov r0, 5\nexit")
    assert (res.verdict, res.fault, res.r0) == (XDP_ABORTED, 0, 5)
    assert xdp("lddw r0, 0x100000002\nexit").verdict == XDP_PASS  # the verdict is 32-bit


ADJUST = """
    mov r6, r1
    mov r2, {delta}
    call {helper}
    mov r7, r0
    ldxdw r2, [r6+0]
    ldxdw r3, [r6+8]
    mov r0, r3
    sub r0, r2
    lsh r7, 32
    or r0, r7
    exit
"""


def _adjust(helper, delta, packet=PKT, **kw):
    res = xdp(ADJUST.format(helper=helper, delta=delta), packet, **kw)
    assert res.fault == 0
    ret = res.r0 >> 32
    return (ret - (1 << 32) if ret >> 31 else ret), res.r0 & 0xffffffff, res.packet


@pytest.mark.unit
@pytest.mark.parametrize("delta, ok", [(-14, True), (14, True), (-256, True), (-257, False),
                                       (46, True), (47, False), (0, True), (-(1 << 31), False)])
def test_xdp_adjust_head(delta, ok):
    ret, length, packet = _adjust("xdp_adjust_head", delta)
    if ok:
        assert (ret, length) == (0, 60 - delta)
        assert packet == (bytes(-delta) + PKT if delta < 0 else PKT[delta:])
    else:
        assert (ret, length, packet) == (-errno.EINVAL, 60, PKT)


@pytest.mark.unit
@pytest.mark.parametrize("delta, ok", [(10, True), (-10, True), (256, True), (257, False),
                                       (-46, True), (-47, False), (0, True)])
def test_xdp_adjust_tail(delta, ok):
    ret, length, packet = _adjust("xdp_adjust_tail", delta)
    if ok:
        assert (ret, length) == (0, 60 + delta)
        assert packet == (PKT + bytes(delta) if delta >= 0 else PKT[:delta])
    else:
        assert (ret, length, packet) == (-errno.EINVAL, 60, PKT)


@pytest.mark.unit
def test_xdp_adjust_tail_grows_zeroed():
    # the tailroom holds old bytes; growing must clear them, as the kernel does
    prog = Program(assemble(PKT_PTRS + """
        stb [r3-1], 0xee
        mov r6, r1
        mov r2, -1
        call xdp_adjust_tail
        mov r1, r6
        mov r2, 1
        call xdp_adjust_tail
        mov r0, 2
        exit"""), [])
    assert prog.run_xdp(PKT).packet == PKT[:-1] + b"\x00"


@pytest.mark.unit
def test_xdp_adjust_head_invalidates_old_pointers():
    res = xdp(PKT_PTRS + """
        mov r6, r2
        mov r2, 20
        call xdp_adjust_head
        ldxb r0, [r6+0]
        exit""")
    assert (res.verdict, res.fault, res.fault_pc) == (XDP_ABORTED, -errno.EFAULT, 5)


@pytest.mark.unit
def test_xdp_headroom_floor():
    ret, length, _ = _adjust("xdp_adjust_head", -32, headroom=32)
    assert (ret, length) == (0, 92)
    ret, length, _ = _adjust("xdp_adjust_head", -33, headroom=32)
    assert (ret, length) == (-errno.EINVAL, 60)


REDIRECT = """
    lddw r1, map 0
    mov r2, {key}
    mov r3, {flags}
    call redirect_map
    exit
"""


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["devmap", "xskmap"])
def test_xdp_redirect_map(kind):
    m = Map(kind, 4, 4, 4)
    m.update(1, (7).to_bytes(4, "little"))
    hit = xdp(REDIRECT.format(key=1, flags=0), maps=[m])
    assert (hit.verdict, hit.redirect) == (XDP_REDIRECT, 7)
    miss = xdp(REDIRECT.format(key=2, flags=XDP_PASS), maps=[m])
    assert (miss.verdict, miss.redirect) == (XDP_PASS, 0)
    past = xdp(REDIRECT.format(key=9, flags=XDP_DROP), maps=[m])
    assert past.verdict == XDP_DROP
    bad_flags = xdp(REDIRECT.format(key=1, flags=1 << 5), maps=[m])
    assert (bad_flags.verdict, bad_flags.fault) == (XDP_ABORTED, 0)
    m.delete(1)
    assert xdp(REDIRECT.format(key=1, flags=XDP_TX), maps=[m]).verdict == XDP_TX


@pytest.mark.unit
def test_xdp_redirect_map_not_a_redirect_map():
    m = Map("array", 4, 4, 4)
    assert xdp(REDIRECT.format(key=1, flags=XDP_PASS), maps=[m]).verdict == XDP_ABORTED


@pytest.mark.unit
def test_devmap_is_read_only_to_programs():
    m = Map("devmap", 4, 4, 4)
    m.update(0, (3).to_bytes(4, "little"))
    res = xdp("""
        stw [r10-4], 0
        lddw r1, map 0
        mov r2, r10
        add r2, -4
        call map_lookup_elem
        jeq r0, 0, +3
        ldxw r1, [r0+0]
        stw [r0+0], 9
        mov r0, r1
        exit""", maps=[m])
    assert (res.fault, res.fault_pc) == (-errno.EFAULT, 8)
    assert m.lookup(0) == (3).to_bytes(4, "little")


@pytest.mark.unit
def test_xdp_ringbuf_output():
    rb = Map("ringbuf", 0, 0, 4096)
    res = xdp(PKT_PTRS + """
        lddw r1, map 0
        mov r4, 0
        mov r3, 10
        call ringbuf_output
        exit""", maps=[rb])
    assert (res.fault, res.r0) == (0, 0)
    assert rb.read_message() == PKT[:10]
    assert rb.read_message() is None


@pytest.mark.unit
def test_bench_straight_line():
    # ~70 instructions of ALU work on the packet pointers: the interpreter's
    # per-instruction cost (a quick sanity figure, not a benchmark)
    body = "\n".join(f"add r4, {i}\nxor r5, r4" for i in range(33))
    prog = Program(assemble(PKT_PTRS + "mov r4, 0\nmov r5, 0\n" + body + "\nmov r0, 2\nexit"), [])
    res = prog.run_xdp(PKT)
    assert (res.verdict, res.insns) == (XDP_PASS, 72)
    ns = prog.bench_xdp(PKT, 2000)
    assert 0 < ns < 1e6
