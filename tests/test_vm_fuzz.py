"""Random bytecode at the loader and random packets at loaded programs:
never a crash, never a write outside the allowed regions.

The bulk runs in C (dp_fuzz_batch, datapath/src/ebpf_fuzz.c), which checks
guard bytes around every packet buffer; `make test-asan` runs the same
batch with AddressSanitizer watching the stack and map memory too.
ISOLANE_FUZZ_PROGRAMS sets the number of programs (default 20000; CI
runs 100000).
"""
from __future__ import annotations

import os
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datapath._dp import ffi, lib
from datapath.ebpf_engine import Map, Program, ProgramError

pytestmark = pytest.mark.unit

N_PROGRAMS = int(os.environ.get("ISOLANE_FUZZ_PROGRAMS", "20000"))


def fuzz(seed: int, n: int, max_insns: int = 64):
    stats = ffi.new("struct dp_fuzz_stats *")
    assert lib.dp_fuzz_batch(seed, n, max_insns, stats) == 0
    return {name: getattr(stats[0], name) for name, _ in ffi.typeof(stats[0]).fields}


@pytest.mark.parametrize("max_insns", [16, 64, 512])
def test_fuzz_batch(max_insns):
    s = fuzz(0x15014e + max_insns, N_PROGRAMS, max_insns)
    assert s["programs"] == N_PROGRAMS
    assert s["guard_violations"] == 0
    assert s["bad_results"] == 0
    # the generator reaches every outcome, so the checks above saw real runs
    assert s["loaded"] > N_PROGRAMS // 20
    assert s["runs"] == 3 * s["loaded"]
    for outcome in ("ok", "fault_efault", "fault_e2big", "fault_einval", "fault_enospc"):
        assert s[outcome] > 0, (outcome, s)


def test_fuzz_100k_programs_well_under_a_minute():
    t0 = time.perf_counter()
    s = fuzz(7, 100_000)
    elapsed = time.perf_counter() - t0
    assert s["guard_violations"] == 0 and s["bad_results"] == 0
    assert elapsed < 20, elapsed


def test_fuzz_is_deterministic():
    # (outcomes may differ where a program branches on ktime_get_ns)
    a, b = fuzz(42, 2000), fuzz(42, 2000)
    assert (a["programs"], a["loaded"], a["runs"]) == (b["programs"], b["loaded"], b["runs"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=8 * 40))
def test_loader_takes_any_bytes(code):
    code = code[: len(code) // 8 * 8]
    try:
        prog = Program(code, [Map("array", 4, 8, 2)], insn_budget=1000)
    except ProgramError as e:
        assert str(e)
        return
    prog.run_raw(bytes(16))
    prog.run_xdp(bytes(64))


def insn(code, dst=0, src=0, off=0, imm=0) -> bytes:
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


# A packet-driven program: reads a length and a delta from the packet and
# uses them unchecked (as only a buggy, unverified program would): moves
# the head and tail by them, then reads and writes at packet-chosen offsets.
PACKET_DRIVEN = b"".join([
    insn(0xbf, 6, 1),                 # r6 = ctx
    insn(0x79, 2, 1, 0),              # r2 = data
    insn(0x79, 3, 1, 8),              # r3 = data_end
    insn(0xbf, 4, 3),                 # r4 = data_end
    insn(0x1f, 4, 2),                 # r4 -= data
    insn(0xb7, 0, 0, 0, 1),           # r0 = XDP_DROP
    insn(0xa5, 4, 0, 17, 4),          # if r4 < 4 goto exit
    insn(0x81, 7, 2, 0),              # r7 = *(s32 *)(data + 0)   head delta
    insn(0x81, 8, 2, 0),              # r8 = same, tail delta
    insn(0x57, 7, 0, 0, 0x3ff),       # r7 &= 0x3ff
    insn(0x17, 7, 0, 0, 0x200),       # r7 -= 0x200
    insn(0xbf, 1, 6),                 # r1 = ctx
    insn(0xbf, 2, 7),                 # r2 = r7
    insn(0x85, 0, 0, 0, 44),          # xdp_adjust_head
    insn(0xbf, 1, 6),
    insn(0x67, 8, 0, 0, 52),          # r8 = (r8 << 52) s>> 54: small signed
    insn(0xc7, 8, 0, 0, 54),
    insn(0xbf, 2, 8),
    insn(0x85, 0, 0, 0, 65),          # xdp_adjust_tail
    insn(0x79, 2, 6, 0),              # r2 = data (re-read)
    insn(0x71, 5, 2, 1),              # r5 = data[1]: an offset to write at
    insn(0x0f, 2, 5),                 # r2 += r5 (unchecked)
    insn(0x72, 2, 0, 0, 0x5a),        # *(u8 *)r2 = 0x5a  (may fault)
    insn(0xb7, 0, 0, 0, 3),           # r0 = XDP_TX
    insn(0x95),
])


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.integers(0, 300), st.integers(0, 300))
def test_random_packets_stay_in_their_buffer(packet, headroom, tailroom):
    res = Program(PACKET_DRIVEN, []).run_xdp(packet, headroom=headroom, tailroom=tailroom)
    assert res.verdict in (0, 1, 3)
    assert res.fault in (0, -14)
    if res.verdict == 3:
        assert min(len(packet), 14) <= len(res.packet)
    # the program can only have moved within the buffer it was given
    assert len(res.packet) <= headroom + len(packet) + tailroom
