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
