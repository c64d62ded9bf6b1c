"""The toolchain's pure parts on hand-written bytecode (no root): map
relocation, the context rewrite, validate() and the static bound. The last
tests build real tenants (root) and check relocation against bcc's maps."""
from __future__ import annotations

import pytest

from ebpf import BoundError, CostModel, RelocationError, ValidationError, bound, validate
from ebpf.insn import (ADD, ALU64, JLT, LD_IMM64, LDX, MODE_MEM, PSEUDO_MAP_FD, SIZE_B,
                       SIZE_DW, SIZE_H, SIZE_W, Insn, alu64_imm, call, decode, encode, exit_, ja,
                       jmp_imm, ld_imm64, ld_map, ldx, mov64_imm, mov64_reg, st_imm, stx)
from ebpf.relocate import relocate_maps, rewrite_ctx

R0, R1, R2, R3, R4, R6, R10 = 0, 1, 2, 3, 4, 6, 10


def flat(*parts) -> list[Insn]:
    out = []
    for p in parts:
        out.extend(p if isinstance(p, list) else [p])
    return out


# ------------------------------------------------------------------ maps

@pytest.mark.unit
def test_relocate_maps_fds_to_indexes():
    prog = flat(ld_map(R1, 7), ld_map(R2, 9), ld_imm64(R3, 7), mov64_imm(R0, 0), exit_())
    out = relocate_maps(prog, {9: 0, 7: 1})
    assert (out[0].src, out[0].imm) == (PSEUDO_MAP_FD, 1)
    assert (out[2].src, out[2].imm) == (PSEUDO_MAP_FD, 0)
    assert out[4].imm == 7 and out[4].src == 0  # a plain 64-bit constant is left alone
    assert out[1] == prog[1]  # second slots untouched


@pytest.mark.unit
def test_relocate_maps_unknown_fd():
    with pytest.raises(RelocationError, match="map fd 5"):
        relocate_maps(flat(ld_map(R1, 5), mov64_imm(R0, 0), exit_()), {7: 0})


# ------------------------------------------------------------------ context

def _ctx_load(prog, at):
    out = rewrite_ctx(prog)
    return out[at]


@pytest.mark.unit
@pytest.mark.parametrize("off,new_code,new_off", [
    (0, LDX | MODE_MEM | SIZE_DW, 0),    # data
    (4, LDX | MODE_MEM | SIZE_DW, 8),    # data_end
    (8, LDX | MODE_MEM | SIZE_DW, 16),   # data_meta
    (12, LDX | MODE_MEM | SIZE_W, 24),   # ingress_ifindex
    (16, LDX | MODE_MEM | SIZE_W, 28),   # rx_queue_index
    (20, LDX | MODE_MEM | SIZE_W, 32),   # egress_ifindex
])
def test_ctx_direct(off, new_code, new_off):
    ins = _ctx_load([ldx(SIZE_W, R0, R1, off), exit_()], 0)
    assert (ins.code, ins.dst, ins.src, ins.off) == (new_code, R0, R1, new_off)


@pytest.mark.unit
def test_ctx_narrow_load_of_u32_field():
    ins = _ctx_load([ldx(SIZE_H, R0, R1, 14), exit_()], 0)  # upper half of ingress_ifindex
    assert (ins.code & 0x18, ins.off) == (SIZE_H, 26)


@pytest.mark.unit
def test_ctx_via_copied_register():
    prog = [mov64_reg(R6, R1), mov64_imm(R1, 0), ldx(SIZE_W, R2, R6, 4), ldx(SIZE_W, R0, R1, 4),
            exit_()]
    out = rewrite_ctx(prog)
    assert (out[2].code & 0x18, out[2].off) == (SIZE_DW, 8)
    assert out[3] == prog[3]  # r1 is a scalar by then: not a context load


@pytest.mark.unit
def test_ctx_via_stack_spill():
    prog = [stx(SIZE_DW, R10, R1, -16), mov64_imm(R1, 0), call(5),
            ldx(SIZE_DW, R3, R10, -16), ldx(SIZE_W, R0, R3, 0), exit_()]
    out = rewrite_ctx(prog)
    assert (out[4].code & 0x18, out[4].off) == (SIZE_DW, 0)
    assert out[3] == prog[3]  # the reload itself is a stack load


@pytest.mark.unit
def test_ctx_spill_through_stack_pointer_copy():
    prog = [mov64_reg(R2, R10), alu64_imm(ADD, R2, -8), stx(SIZE_DW, R2, R1, 0),
            ldx(SIZE_DW, R4, R10, -8), ldx(SIZE_W, R0, R4, 16), exit_()]
    assert rewrite_ctx(prog)[4].off == 28


@pytest.mark.unit
def test_ctx_spill_overwritten_is_not_ctx():
    prog = [stx(SIZE_DW, R10, R1, -8), st_imm(SIZE_W, R10, -8, 0),
            ldx(SIZE_DW, R3, R10, -8), ldx(SIZE_W, R0, R3, 0), exit_()]
    out = rewrite_ctx(prog)
    assert out[3] == prog[3]


@pytest.mark.unit
def test_ctx_maybe_rejected():
    # r3 = ctx on one path, a stack pointer on the other; then a load through r3
    prog = [mov64_reg(R3, R1),
            jmp_imm(0x10, R2, 0, 1),          # if r2 == 0 goto +1   (r2 is unknown)
            mov64_reg(R3, R10),
            ldx(SIZE_W, R0, R3, 0),
            exit_()]
    with pytest.raises(RelocationError, match="some paths only") as exc:
        rewrite_ctx(prog)
    assert exc.value.insn == 3


@pytest.mark.unit
def test_ctx_through_maybe_clobbered_spill_rejected():
    # a store through a stack pointer with a variable offset may hit the spilled ctx
    prog = [stx(SIZE_DW, R10, R1, -8), mov64_reg(R2, R10),
            Insn(ALU64 | ADD | 0x08, R2, R4),  # r2 += r4: fp + unknown
            st_imm(SIZE_DW, R2, 0, 0),
            ldx(SIZE_DW, R3, R10, -8), ldx(SIZE_W, R0, R3, 0), exit_()]
    with pytest.raises(RelocationError, match="some paths only") as exc:
        rewrite_ctx(prog)
    assert exc.value.insn == 5


@pytest.mark.unit
def test_ctx_store_through_packet_pointer_keeps_spill():
    prog = [stx(SIZE_DW, R10, R1, -8), ldx(SIZE_W, R2, R1, 0),  # r2 = data (packet)
            st_imm(SIZE_DW, R2, 0, 0),
            ldx(SIZE_DW, R3, R10, -8), ldx(SIZE_W, R0, R3, 4), exit_()]
    assert rewrite_ctx(prog)[4].off == 8


@pytest.mark.unit
def test_ctx_store_rejected():
    with pytest.raises(RelocationError, match="store to the context"):
        rewrite_ctx([st_imm(SIZE_W, R1, 0, 0), mov64_imm(R0, 0), exit_()])


@pytest.mark.unit
def test_ctx_bad_field_rejected():
    with pytest.raises(RelocationError, match="not a struct xdp_md field"):
        rewrite_ctx([ldx(SIZE_W, R0, R1, 24), exit_()])
    with pytest.raises(RelocationError, match="size 1"):
        rewrite_ctx([ldx(SIZE_B, R0, R1, 0), exit_()])


@pytest.mark.unit
def test_ctx_loop_keeps_must_info():
    # ctx stays in r6 across a loop; the load inside the loop is rewritten
    prog = [mov64_reg(R6, R1), mov64_imm(R2, 0),
            ldx(SIZE_W, R3, R6, 16),          # 2: loop head
            alu64_imm(ADD, R2, 1),
            jmp_imm(JLT, R2, 4, -3),          # 4: back to 2
            mov64_imm(R0, 2), exit_()]
    assert rewrite_ctx(prog)[2].off == 28


# ------------------------------------------------------------------ validate

GOOD = flat(ld_map(R1, 0), mov64_imm(R0, 2), call(1), mov64_imm(R0, 2), exit_())


@pytest.mark.unit
def test_validate_accepts():
    assert len(validate(encode(GOOD), n_maps=1)) == len(GOOD)


@pytest.mark.unit
@pytest.mark.parametrize("prog,n_maps,match", [
    ([Insn(0xFF), exit_()], 0, "unknown opcode 0xff"),
    ([Insn(0x20), exit_()], 0, "unknown opcode 0x20"),  # LD_ABS: legacy, not XDP
    ([call(6), exit_()], 0, "helper 6 is not allowed"),  # trace_printk
    ([ja(5), exit_()], 0, "jump target 6 out of range"),
    ([ja(-3), exit_()], 0, "out of range"),
    (flat(ja(1), ld_imm64(R1, 5), exit_()), 0, "inside an LD_IMM64"),
    ([Insn(ALU64 | 0xB0, 11, 0, 0, 0), exit_()], 0, "register r11"),
    ([mov64_imm(R10, 0), exit_()], 0, "write to r10"),
    ([ldx(SIZE_DW, R10, R1, 0), exit_()], 0, "write to r10"),
    ([Insn(LD_IMM64, R1, 0, 0, 1), exit_()], 0, "malformed LD_IMM64"),
    ([Insn(LD_IMM64, R1, 0, 0, 1)], 0, "without its second slot"),
    (flat(ld_map(R1, 3), exit_()), 1, "map index 3 out of range"),
    (flat(Insn(LD_IMM64, R1, 2, 0, 0), Insn(0), exit_()), 1, "src_reg=2"),
    ([mov64_imm(R0, 1)], 0, "fall off its end"),
    ([], 0, "empty"),
])
def test_validate_rejects(prog, n_maps, match):
    with pytest.raises(ValidationError, match=match):
        validate(encode(prog), n_maps)


# ------------------------------------------------------------------ bound

@pytest.mark.unit
def test_bound_straight_line():
    b = bound(flat(mov64_imm(R0, 1), ld_imm64(R1, 3), alu64_imm(ADD, R0, 1), exit_()))
    assert (b.insns, b.longest_path, b.back_edges) == (4, 4, 0)  # LD_IMM64 counts once


@pytest.mark.unit
def test_bound_loop_free_is_longest_path():
    prog = [jmp_imm(0x10, R1, 0, 3),      # 0: if r1 == 0 goto 4
            mov64_imm(R0, 1),             # 1
            alu64_imm(ADD, R0, 1),        # 2
            alu64_imm(ADD, R0, 1),        # 3
            mov64_imm(R0, 2),             # 4
            exit_()]                      # 5
    b = bound(prog)
    assert b.insns == 6  # 0,1,2,3,4,5 (the short path is 0,4,5)


@pytest.mark.unit
def test_bound_loop_needs_budget():
    loop = [mov64_imm(R0, 0), alu64_imm(ADD, R0, 1), jmp_imm(JLT, R0, 10, -2), exit_()]
    with pytest.raises(BoundError, match="loop_budget"):
        bound(loop)


@pytest.mark.unit
def test_bound_with_loop_budget_is_exact_on_a_counted_loop():
    # 0: r0 = 0; 1: r0 += 1; 2: if r0 < 10 goto 1; 3: exit -> 9 back edges, 22 insns
    loop = [mov64_imm(R0, 0), alu64_imm(ADD, R0, 1), jmp_imm(JLT, R0, 10, -2), exit_()]
    b = bound(loop, loop_budget=9)
    assert (b.insns, b.back_edges, b.loop_budget, b.longest_path) == (22, 1, 9, 4)
    # E(0)=4, J(0)=3, J(h)=2, E(h)=3: 3 + 8*2 + 3
    assert bound(loop, loop_budget=0).insns == 4
    assert bound(loop, loop_budget=100).insns == 3 + 99 * 2 + 3


@pytest.mark.unit
def test_bound_budget_is_at_most_longest_times_budget_plus_one():
    prog = [mov64_imm(R0, 0),
            jmp_imm(0x10, R1, 0, 2),      # 1: head; if r1 == 0 goto 4
            alu64_imm(ADD, R0, 1),        # 2
            alu64_imm(ADD, R0, 1),        # 3
            alu64_imm(ADD, R0, 1),        # 4
            jmp_imm(JLT, R0, 50, -5),     # 5: back to 1
            exit_()]
    b = bound(prog, loop_budget=7)
    assert b.insns <= b.longest_path * 8
    assert b.insns == 6 + 6 * 5 + 6  # J(0)=6, J(h)=5, last piece max(E(h)=6, J(h)=5)


@pytest.mark.unit
def test_bound_cycles_from_cost_model():
    prog = flat(ld_map(R1, 0), call(1), mov64_imm(R0, 2), ldx(SIZE_W, R2, R1, 0), exit_())
    cost = CostModel(alu=1, load=3, ld_imm64=2, exit=1, helpers={1: 100})
    assert bound(prog, cost=cost).cycles == 2 + 100 + 1 + 3 + 1
    calibrated = CostModel.from_dict({"alu": 0.5, "helpers": {"1": 42}})
    assert calibrated.cycles(call(1)) == 42 and calibrated.cycles(mov64_imm(R0, 1)) == 0.5
    assert calibrated.cycles(call(5)) == CostModel().helpers[5]
    assert CostModel(call=77, helpers={}).cycles(call(65)) == 77


# ------------------------------------------------------------------ real programs (root)

@pytest.mark.integration
def test_relocation_of_a_bcc_program(tmp_path):
    from ebpf import build
    from ebpf.insn import slot_starts

    src = tmp_path / "handler.c"
    src.write_text("""#include <isolane.h>
BPF_ARRAY(counts, __u64, 4);
BPF_HASH(seen, __u32, __u32, 64);
int f(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index & 3, ifx = ctx->ingress_ifindex;
	__u64 *c = counts.lookup(&q);
	if (c)
		__sync_fetch_and_add(c, 1);
	seen.update(&ifx, &q);
	return XDP_PASS;
}
""")
    prog = build(src)
    assert sorted((m.name, m.type_name, m.key_size, m.value_size, m.max_entries)
                  for m in prog.maps) == [("counts", "array", 4, 8, 4), ("seen", "hash", 4, 4, 64)]
    slots = decode(prog.insns)
    starts = slot_starts(slots)
    refs = {s.imm for i, s in enumerate(slots)
            if starts[i] and s.code == LD_IMM64 and s.src == PSEUDO_MAP_FD}
    assert refs == {0, 1}  # indexes, not fds
    ctx_loads = [s for s in slots if s.code & 0x07 == LDX and s.src == R1 and s.off in (28, 24)]
    assert ctx_loads, "rx_queue_index / ingress_ifindex loads were not moved to dp_xdp_ctx"
    kernel_slots = decode(prog.kernel_insns)
    assert [s.off for s in kernel_slots if s.code & 0x07 == LDX and s.src == R1] != [
        s.off for s in slots if s.code & 0x07 == LDX and s.src == R1]
    assert prog.n_insns == sum(starts)


@pytest.mark.integration
def test_build_uses_tenant_toml_function(tmp_path):
    from ebpf import CompileError, build

    (tmp_path / "handler.c").write_text("""#include <isolane.h>
int one(struct xdp_md *ctx) { return XDP_PASS; }
int two(struct xdp_md *ctx) { return XDP_DROP; }
""")
    with pytest.raises(CompileError, match="cannot tell the handler"):
        build(tmp_path)
    (tmp_path / "tenant.toml").write_text('name = "pair"\nfunction = "two"\n')
    prog = build(tmp_path)
    assert (prog.name, prog.function) == ("pair", "two")
    assert build(tmp_path, name="one").function == "one"
