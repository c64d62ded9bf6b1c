"""The aot engine (ebpf/aot.py): cache, compile time, budgets, the XDP
contract of the generated function, and the programmability tax figure."""
from __future__ import annotations

import errno
import os
import time

import pytest

from ebpf import aot
from ebpf.aot import AotProgram, cache_key, compile_aot, translate

from test_vm import PKT, assemble

PKT_PTRS = "ldxdw r2, [r1+0]\nldxdw r3, [r1+8]\n"


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "aot-cache"


def _prog(k: int = 0) -> bytes:
    return assemble(PKT_PTRS + f"stb [r2+0], {k}\nmov r0, 3\nexit")


@pytest.mark.unit
def test_cache_hit_and_miss(cache):
    prog = _prog(0x11)
    first = compile_aot(prog, mode="xdp", cache_dir=cache)
    assert not first.cached and first.compile_s > 0
    t = time.perf_counter()
    again = compile_aot(prog, mode="xdp", cache_dir=cache)
    hit_s = time.perf_counter() - t
    assert again.cached and again.key == first.key and again.path == first.path
    print(f"miss {first.total_s * 1e3:.1f} ms, hit {hit_s * 1e3:.1f} ms")
    assert hit_s < 0.2
    # anything that changes the code invalidates
    assert compile_aot(_prog(0x12), mode="xdp", cache_dir=cache).key != first.key
    assert compile_aot(prog, mode="xdp", checked=True, cache_dir=cache).key != first.key
    flags = compile_aot(prog, mode="xdp", cache_dir=cache, cflags=aot.CFLAGS + ["-DX=1"])
    assert not flags.cached and flags.key != first.key
    assert cache_key(prog, mode="xdp", checked=False, budget=0, abi=999) != first.key
    assert cache_key(prog, mode="xdp", checked=False, budget=0) == first.key
    assert cache_key(prog, mode="xdp", checked=False, budget=5) != first.key


@pytest.mark.unit
def test_compile_time_under_a_second(cache):
    # a program of ~1000 instructions
    body = "\n".join(f"add r4, {i}\nxor r5, r4\njgt r5, {i}, +0" for i in range(330))
    prog = assemble(PKT_PTRS + "mov r4, 0\nmov r5, 0\n" + body + "\nmov r0, 2\nexit")
    mod = compile_aot(prog, mode="xdp", cache_dir=cache)
    print(f"translate {mod.translate_s * 1e3:.1f} ms, cc {mod.compile_s * 1e3:.1f} ms, "
          f"load {mod.load_s * 1e3:.1f} ms")
    assert mod.total_s < 1.0
    assert AotProgram(mod).run_xdp(PKT)[0] == 2


LOOP = "mov r0, 0\nloop:\nadd r0, 1\nja loop"


@pytest.mark.unit
def test_unchecked_loop_hits_its_budget(cache):
    # an unbounded loop the verifier would refuse: the back-edge budget stops it
    mod = compile_aot(assemble(LOOP), mode="xdp", checked=False, budget=1000, cache_dir=cache)
    t = time.perf_counter()
    verdict, packet = AotProgram(mod).run_xdp(PKT)
    assert verdict == aot.FAULT_VERDICT and packet == PKT
    assert time.perf_counter() - t < 1.0


@pytest.mark.unit
def test_checked_loop_hits_its_budget(cache):
    mod = compile_aot(assemble(LOOP), mode="raw", checked=True, budget=100, cache_dir=cache)
    r0, _, fault, fault_pc, insns = AotProgram(mod).run_raw_detail(b"")
    assert (r0, fault, insns) == (0, -errno.E2BIG, 100)
    assert fault_pc in (1, 2)


@pytest.mark.unit
def test_call_depth_and_frames(cache):
    prog = assemble("""
        mov r6, 7
        mov r1, 5
        call local f
        add r0, r6
        exit
    f:
        stdw [r10-8], 40
        ldxdw r0, [r10-8]
        add r0, r1
        mov r6, 100
        exit""")
    for checked in (False, True):
        mod = compile_aot(prog, mode="raw", checked=checked, cache_dir=cache)
        assert AotProgram(mod).run_raw(b"")[:3:2] == (52, 0)


ADJUST = """
    mov r6, r1
    mov r2, {delta}
    call {helper}
    mov r7, r0
    ldxdw r2, [r6+0]
    ldxdw r3, [r6+8]
    stb [r2+0], 0xab
    mov r0, 3
    jeq r7, 0, +1
    mov r0, 1
    exit
"""


@pytest.mark.unit
@pytest.mark.parametrize("helper, delta", [
    ("xdp_adjust_head", -14), ("xdp_adjust_head", 14), ("xdp_adjust_head", -256),
    ("xdp_adjust_head", -257), ("xdp_adjust_head", 47), ("xdp_adjust_tail", 10),
    ("xdp_adjust_tail", 256), ("xdp_adjust_tail", 257), ("xdp_adjust_tail", -47),
    ("xdp_adjust_tail", -46)])
@pytest.mark.parametrize("spill", [False, True])
def test_adjust_matches_interpreter(cache, helper, delta, spill):
    from datapath.ebpf_engine import Program

    src = ADJUST.format(helper=helper, delta=delta)
    if spill:  # the context through the stack: the generated code keeps it in memory
        src = "stxdw [r10-8], r1\nldxdw r1, [r10-8]\n" + src
    prog = assemble(src)
    want = Program(prog, []).run_xdp(PKT)
    for checked in (False, True):
        a = AotProgram(compile_aot(prog, mode="xdp", checked=checked, cache_dir=cache))
        got = a.run_xdp(PKT)
        assert got == (want.verdict, want.packet), (checked, got, want)
    # the fast path's handler entry, on its frame (tailroom: the rest of the frame)
    want = Program(prog, []).run_xdp(PKT, tailroom=aot.FRAME_SIZE - aot.PKT_DATA_OFF - len(PKT))
    assert a.run_fn is None
    got = AotProgram(compile_aot(prog, mode="xdp", checked=False, cache_dir=cache)).run_pkt(PKT)
    assert got == (want.verdict, want.packet), got


@pytest.mark.unit
def test_translate_shape():
    src = translate(assemble("mov r0, 2\nja +0\nexit"), name="f", mode="xdp")
    assert "uint32_t f(uint8_t *frame" in src and "goto L2;" in src and "L2:" in src
    assert "uint32_t f_run(const struct handler *h, struct pkt *p)" in src
    # no adjust_head/tail: the packet's bounds are never written back
    assert "*off =" not in src and "*len =" not in src
    raw = translate(assemble("mov r0, r2\nexit"), name="g", mode="raw", checked=True)
    assert "uint64_t g(uint8_t *mem, uint32_t len" in raw and "g_ex(" in raw


def udp_echo_side_by_side(repeat_native: int = 10_000_000, repeat_aot: int = 10_000_000,
                          repeat_slow: int = 1_000_000) -> dict[str, float]:
    """ns per packet of udp_echo: native echo handler, aot, interpreter,
    kernel (BPF_PROG_TEST_RUN), and the tax aot/native - 1."""
    from datapath._dp import lib

    from ebpf import build, kernel
    from ebpf.engines import load_aot, load_interp
    from ebpf.fixtures import load_table

    root = os.path.join(os.path.dirname(__file__), "..", "tenants", "udp_echo")
    prog = build(root)
    pkt = load_table(root).FIXTURES[0].frame
    hz = lib.dp_tsc_hz()
    out = {
        "native": lib.dp_handler_bench(lib.DP_HANDLER_ECHO, pkt, len(pkt), repeat_native)
        / repeat_native / hz * 1e9,
        "aot": load_aot(prog).aot.bench_run(pkt, repeat_aot),
        "interp": load_interp(prog).vm.bench_xdp(pkt, repeat_slow),
        "kernel": kernel.test_run(prog.kernel_fd, pkt, repeat=repeat_slow).duration_ns,
    }
    out["tax"] = out["aot"] / out["native"] - 1
    return out


@pytest.mark.integration
def test_programmability_tax_udp_echo():
    if os.geteuid() != 0:
        pytest.skip("building tenants needs root")
    r = udp_echo_side_by_side(1_000_000, 1_000_000, 100_000)
    print("udp_echo ns/pkt: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k != "tax")
          + f"; tax aot/native-1 = {r['tax'] * 100:.0f}%")
    assert r["aot"] > 0 and r["native"] > 0  # timing is reported, not asserted


@pytest.mark.integration
def test_handler_entry_passes_fixtures():
    """run_fn (the fast path's handler, as dp_tenant_set_aot_run installs
    it) passes every tenant's fixture table, as the dp_aot_fn entry does."""
    if os.geteuid() != 0:
        pytest.skip("building tenants needs root")
    from pathlib import Path

    from ebpf import build
    from ebpf.engines import AotEngine
    from ebpf.fixtures import load_table, run_table
    tenants = Path(__file__).resolve().parent.parent / "tenants"
    n = 0
    for t in sorted(p.name for p in tenants.iterdir() if (p / "handler.c").is_file()):
        prog = build(tenants / t)
        for res in run_table(AotEngine(handler=True), prog, load_table(tenants / t)):
            assert res.ok, (t, res.fixture.description, res.problems)
            n += 1
    assert n


@pytest.mark.integration
def test_tenant_compile_times():
    if os.geteuid() != 0:
        pytest.skip("building tenants needs root")
    import tempfile
    from pathlib import Path

    from ebpf import build
    tenants = Path(__file__).resolve().parent.parent / "tenants"
    with tempfile.TemporaryDirectory() as d:
        for t in sorted(p.name for p in tenants.iterdir() if (p / "handler.c").is_file()):
            prog = build(tenants / t)
            mod = compile_aot(prog.insns, mode="xdp", budget=prog.bound_insns,
                              cache_dir=Path(d))
            hit = compile_aot(prog.insns, mode="xdp", budget=prog.bound_insns,
                              cache_dir=Path(d))
            print(f"{t}: {prog.n_insns} insns, translate {mod.translate_s * 1e3:.1f} ms + cc "
                  f"{mod.compile_s * 1e3:.1f} ms + load {mod.load_s * 1e3:.1f} ms; "
                  f"hit {hit.total_s * 1e3:.1f} ms")
            assert mod.total_s < 1.0 and hit.cached


@pytest.mark.unit
@pytest.mark.parametrize("src, scalar", [
    # disjoint fixed slots: scalar locals, no stack frame
    ("stdw [r10-8], -2\nstw [r10-12], 0x1234\nldxdw r0, [r10-8]\nldxw r4, [r10-12]\n"
     "add r0, r4\nstxdw [r2+0], r0\nmov r0, 3\nexit", True),
    # overlapping slots: the stack stays memory
    ("stdw [r10-8], 0x11223344\nldxw r0, [r10-8]\nldxh r4, [r10-6]\nadd r0, r4\n"
     "stxdw [r2+0], r0\nmov r0, 3\nexit", False),
    # r10 escapes
    ("mov r4, r10\nstdw [r4-8], 7\nldxdw r0, [r10-8]\nstxdw [r2+0], r0\nmov r0, 3\nexit", False),
])
def test_stack_slots_match_interpreter(cache, src, scalar):
    from datapath.ebpf_engine import Program

    prog = assemble(PKT_PTRS + src)
    text = translate(prog, name="f", mode="xdp", checked=False)
    assert ("uint8_t stack[" not in text) == scalar
    want = Program(prog, []).run_xdp(PKT)
    a = AotProgram(compile_aot(prog, mode="xdp", checked=False, cache_dir=cache))
    assert a.run_xdp(PKT) == (want.verdict, want.packet)
    assert a.run_pkt(PKT) == (want.verdict, want.packet)


# byte merging (ebpf.aot._Merge): hand-written byte swaps and copies; r6 is
# r2 + a run-time 0 the translator cannot see (another base that aliases r2),
# and the last block stores r4, r5, r7, r8, r9 so final registers are compared
_ALIAS = "ldxb r6, [r2+0]\nmul r6, 0\nadd r6, r2\n"
_DUMP = ("ja +0\nstxdw [r2+64], r4\nstxdw [r2+72], r5\nstxdw [r2+80], r7\n"
         "stxdw [r2+88], r8\nstxdw [r2+96], r9\nmov r0, 3\nexit")
PKT128 = bytes((i * 37 + 11) & 0xff for i in range(128))

MERGE_CASES = {
    # clang's MAC swap (tenants/udp_echo): halves put together from bytes,
    # spilled, bytes copied one by one, the spills stored back byte by byte
    "mac_swap": """
        ldxb r3, [r2+11]\nlsh r3, 8\nldxb r4, [r2+10]\nor r3, r4\nstxh [r10-4], r3
        ldxb r3, [r2+7]\nlsh r3, 8\nldxb r4, [r2+6]\nor r3, r4
        ldxb r4, [r2+9]\nlsh r4, 8\nldxb r5, [r2+8]\nor r4, r5\nlsh r4, 16\nor r4, r3
        stxw [r10-8], r4
        ldxb r3, [r2+2]\nstxb [r2+8], r3\nldxb r3, [r2+3]\nstxb [r2+9], r3
        ldxb r3, [r2+0]\nstxb [r2+6], r3\nldxb r3, [r2+1]\nstxb [r2+7], r3
        ldxb r3, [r2+4]\nstxb [r2+10], r3\nldxb r3, [r2+5]\nstxb [r2+11], r3
        ldxw r3, [r10-8]\nmov r4, r3\nrsh r4, 16\nstxb [r2+2], r4\nmov r4, r3\nrsh r4, 24
        stxb [r2+3], r4\nstxb [r2+0], r3\nrsh r3, 8\nstxb [r2+1], r3
        ldxh r3, [r10-4]\nstxb [r2+4], r3\nrsh r3, 8\nstxb [r2+5], r3
        ldxw r3, [r2+30]\nldxw r4, [r2+26]\nstxw [r2+30], r4\nstxw [r2+26], r3
        mov r6, r2\nadd r6, 34\nldxh r5, [r6+2]\nldxh r3, [r6+0]\nstxh [r6+2], r3\nstxh [r6+0], r5
    """,
    # the same with the stack in memory (r10 escapes)
    "mac_swap_stack": "mov r9, r10\n" + """
        ldxb r3, [r2+11]\nlsh r3, 8\nldxb r4, [r2+10]\nor r3, r4\nstxh [r10-4], r3
        ldxb r4, [r2+9]\nlsh r4, 8\nldxb r5, [r2+8]\nor r4, r5\nlsh r4, 16
        ldxb r3, [r2+7]\nlsh r3, 8\nor r4, r3\nldxb r3, [r2+6]\nor r4, r3\nstxw [r10-8], r4
        ldxb r3, [r2+0]\nstxb [r2+6], r3\nldxb r3, [r2+1]\nstxb [r2+7], r3
        ldxh r3, [r2+2]\nstxh [r2+8], r3\nldxh r3, [r2+4]\nstxh [r2+10], r3
        ldxw r3, [r9-8]\nstxw [r2+0], r3\nldxh r3, [r10-4]\nstxh [r2+4], r3\nmov r9, 0
    """,
    # overlapping copies, forwards (each load reads the byte just stored) and backwards
    "copy_forward": "ldxb r4, [r2+0]\nstxb [r2+1], r4\nldxb r5, [r2+1]\nstxb [r2+2], r5\n"
                    "ldxb r7, [r2+2]\nstxb [r2+3], r7\nldxb r8, [r2+3]\nstxb [r2+4], r8",
    "copy_backward": "ldxb r4, [r2+3]\nstxb [r2+4], r4\nldxb r5, [r2+2]\nstxb [r2+3], r5\n"
                     "ldxb r7, [r2+1]\nstxb [r2+2], r7\nldxb r8, [r2+0]\nstxb [r2+1], r8",
    # composite loads: little-endian, big-endian, from halves, 32-bit ops, all kept
    "composites": """
        ldxb r4, [r2+5]\nlsh r4, 8\nldxb r5, [r2+4]\nor r4, r5
        ldxb r7, [r2+8]\nlsh r7, 8\nldxb r5, [r2+9]\nor r7, r5
        ldxh r8, [r2+12]\nldxh r9, [r2+14]\nlsh r9, 16\nor r9, r8
        ldxb r8, [r2+21]\nlsh32 r8, 24\nldxb r5, [r2+20]\nlsh32 r5, 16\nor32 r8, r5
        ldxb r5, [r2+3]\nlsh r5, 8\nldxb r0, [r2+2]\nadd r5, r0\nlsh r5, 8\nldxb r0, [r2+1]
        xor r5, r0\nlsh r5, 8\nldxb r0, [r2+0]\nor r5, r0
    """,
    # a store through another base that may alias: loads after it re-read nothing stale
    "alias_store": _ALIAS + """
        ldxb r4, [r2+11]\nlsh r4, 8\nstb [r6+11], 0x55\nldxb r7, [r2+10]\nor r4, r7
        stb [r2+10], 0x66\nldxb r8, [r6+10]\nldxb r5, [r2+11]\nlsh r5, 8\nor r5, r8
        stxh [r2+20], r4\nstb [r6+21], 0x77\nldxb r9, [r2+21]
    """,
    # a swap whose halves are reached through two bases that alias
    "alias_swap": _ALIAS + """
        ldxh r4, [r2+0]\nldxh r5, [r6+2]\nstxh [r6+0], r5\nstxh [r2+2], r4
        ldxb r7, [r2+4]\nldxb r8, [r2+5]\nstxb [r2+5], r7\nstxb [r6+4], r8\nldxb r9, [r2+4]
    """,
    # constants, and stores overwriting stores (the last one wins)
    "constants": """
        stb [r2+30], 1\nstb [r2+31], 2\nsth [r2+32], 0x0403\nstw [r2+34], -1\nstdw [r2+38], -2
        stw [r2+46], 0x11223344\nstb [r2+47], 0x99\nmov r4, 0x1234\nstxh [r2+48], r4
        stxb [r2+49], r4\nsth [r2+50], 7\nstxw [r2+51], r4\nmov r5, -1\nstxdw [r2+20], r5
        stb [r2+23], 0
    """,
    # a register's bytes stored one by one, the register shifted between stores
    "split_store": """
        ldxdw r4, [r2+0]\nstxb [r2+30], r4\nrsh r4, 8\nstxb [r2+31], r4\nrsh r4, 8
        stxb [r2+33], r4\nrsh r4, 8\nstxb [r2+32], r4\nldxw r5, [r2+8]\nstxh [r2+34], r5
        rsh r5, 16\nstxh [r2+36], r5\nldxb r7, [r2+31]
    """,
    # stores held back must be written before a branch (its target reads them)
    "branch": """
        ldxb r4, [r2+0]\nldxb r5, [r2+1]\nstxb [r2+1], r4\nstxb [r2+0], r5
        jeq r4, 0, skip\nldxh r7, [r2+0]\nstb [r2+2], 9\nja skip
    skip:
        ldxh r8, [r2+0]\nldxb r9, [r2+2]
    """,
}


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(MERGE_CASES))
def test_byte_merge_matches_interpreter(cache, case):
    from datapath.ebpf_engine import Program

    prog = assemble(PKT_PTRS + "mov r0, 0\nmov r4, 0\nmov r5, 0\nmov r7, 0\nmov r8, 0\n"
                    "mov r9, 0\n" + MERGE_CASES[case] + "\n" + _DUMP)
    text = translate(prog, name="f", mode="xdp", checked=False)
    assert "(merged)" in text  # the peephole took the stores
    assert "(merged)" not in translate(prog, name="f", mode="xdp", checked=True)
    want = Program(prog, []).run_xdp(PKT128)
    assert want.verdict == 3
    a = AotProgram(compile_aot(prog, mode="xdp", checked=False, cache_dir=cache))
    assert a.run_xdp(PKT128) == (want.verdict, want.packet)
    assert a.run_pkt(PKT128) == (want.verdict, want.packet)


@pytest.mark.unit
def test_byte_merge_wide_accesses():
    """the swap comes out with the widths native code has"""
    text = translate(assemble(PKT_PTRS + MERGE_CASES["mac_swap"] + "\nmov r0, 3\nexit"),
                     name="f", mode="xdp", checked=False)
    assert "AOT_LDP(uint16_t" in text and "AOT_LDP(uint32_t" in text
    assert "AOT_STP(uint8_t" not in text  # no byte store is left


@pytest.mark.unit
def test_byte_merge_random_programs(cache):
    """random blocks of byte/half/word loads, stores, shifts, ors and masks
    through two bases that alias (and one at a known distance): aot = interp"""
    import random

    from datapath.ebpf_engine import Program

    rng = random.Random(1234)
    regs = ["r4", "r5", "r7", "r8", "r9"]
    bases = ["r2", "r2", "r2", "r6", "r0"]  # r0 = r2 + 8
    progs = []
    for _ in range(24):
        lines = []
        for _ in range(40):
            k = rng.random()
            r, q, b = rng.choice(regs), rng.choice(regs), rng.choice(bases)
            sz = rng.choice("bbbbhhw")
            off = rng.randrange(0, 24)
            if k < 0.3:
                lines.append(f"ldx{sz} {r}, [{b}+{off}]")
            elif k < 0.6:
                lines.append(f"stx{sz} [{b}+{off}], {r}")
            elif k < 0.65:
                lines.append(f"st{sz} [{b}+{off}], {rng.randrange(256)}")
            elif k < 0.75:
                lines.append(f"{rng.choice(['lsh', 'rsh', 'lsh32', 'rsh32'])} {r}, "
                             f"{rng.choice([8, 8, 16, 24, 4])}")
            elif k < 0.87:
                lines.append(f"{rng.choice(['or', 'or', 'add', 'xor', 'or32'])} {r}, {q}")
            elif k < 0.93:
                lines.append(f"and {r}, {rng.choice(['0xff', '0xff00', '0xffff', '0xf0'])}")
            elif k < 0.97:
                lines.append(f"mov {r}, {q}")
            else:
                lines.append(f"be16 {r}" if rng.random() < 0.5 else f"mov32 {r}, {q}")
        src = (PKT_PTRS + "mov r4, 0\nmov r5, 0\nmov r7, 0\nmov r8, 0\nmov r9, 0\n" + _ALIAS +
               "mov r0, r2\nadd r0, 8\n" + "\n".join(lines) + "\n" + _DUMP)
        progs.append(assemble(src))
    merged = 0
    for prog in progs:
        want = Program(prog, []).run_xdp(PKT128)
        a = AotProgram(compile_aot(prog, mode="xdp", checked=False, cache_dir=cache))
        assert a.run_xdp(PKT128) == (want.verdict, want.packet)
        merged += "(merged)" in translate(prog, name="f", mode="xdp", checked=False)
    assert merged == len(progs)
