/* ebpf_vm.h - the eBPF interpreter's internals, for the fast path.
 *
 * dp_prog_load (ebpf_vm.c) validates a program and pre-decodes it into
 * struct vm_insn, one per original instruction so that instruction
 * indexes (jump targets, fault_pc) stay those of the bytecode. The
 * interpreter then runs it with every memory access bounds-checked
 * against the regions a run allows (see struct ebpf_mem). Nothing on the
 * run path allocates, prints or makes a system call.
 */
#ifndef ISOLANE_EBPF_VM_H
#define ISOLANE_EBPF_VM_H

#include <stdint.h>

#include "compiler.h"
#include "isolane_dp.h"
#include "maps.h"
#include "pkt.h"

/* BPF helper ids (include/uapi/linux/bpf.h) */
enum ebpf_helper {
	BPF_FUNC_map_lookup_elem = 1,
	BPF_FUNC_map_update_elem = 2,
	BPF_FUNC_map_delete_elem = 3,
	BPF_FUNC_ktime_get_ns = 5,
	BPF_FUNC_csum_diff = 28,
	BPF_FUNC_xdp_adjust_head = 44,
	BPF_FUNC_redirect_map = 51,
	BPF_FUNC_xdp_adjust_tail = 65,
	BPF_FUNC_ringbuf_output = 130,
};

/* a pre-decoded instruction: op is the interpreter's own dense opcode
 * (enum vm_op in ebpf_vm.c), off the memory offset or the absolute jump
 * or call target, imm the immediate already extended the way the
 * instruction uses it (or LD_IMM64's full, relocated value) */
struct vm_insn {
	uint8_t op;
	uint8_t dst;
	uint8_t src;
	uint8_t _pad;
	int32_t off;
	uint64_t imm;
};
_Static_assert(sizeof(struct vm_insn) == 16, "two insns per cache line quarter");

struct dp_prog {
	struct vm_insn *insns;
	uint32_t n_insns;
	uint32_t n_maps;
	uint64_t insn_budget;
	uint64_t ns_mult;          /* ktime_get_ns: ns = tsc * ns_mult >> 32 */
	/* a program's map "pointer" (LD_IMM64 src 1) is the address of its
	 * slot here, so a helper can check it in O(1) */
	struct dp_map *maps[DP_BPF_MAX_MAPS];
};

/* The memory a run may touch besides its stack. XDP mode: r1 = &ctx; the
 * packet is [ctx.data, ctx.data_end), which bpf_xdp_adjust_head/tail move
 * within [buf_lo, buf_hi). Raw mode: r1 = ctx.data, r2 = its length, no
 * context and no head/tail adjustment. */
struct ebpf_mem {
	struct dp_xdp_ctx ctx;
	uint64_t buf_lo;
	uint64_t buf_hi;
	uint32_t xdp;
	uint32_t _pad;
};

/* Runs p; returns r0 (0 on a fault) and fills res (r0, insns, fault,
 * fault_pc, redirect; data_off/len are the caller's to fill). */
uint64_t ebpf_exec(const struct dp_prog *p, struct ebpf_mem *m, struct dp_prog_result *res);

/* Runs p on a frame of the fast path (pkt.h) in XDP mode: the headroom
 * floor is the end of the 64-byte metadata, the tail limit the frame end.
 * Updates p->off and p->len after head/tail adjustment and returns the
 * verdict: XDP_ABORTED on a fault or an action the kernel does not know. */
uint32_t ebpf_run_pkt(const struct dp_prog *prog, struct pkt *p, struct dp_prog_result *res);

/* helpers shared with the jointly compiled engine (aot.c) */
int64_t ebpf_redirect_map(struct dp_map *map, uint64_t key, uint64_t flags, uint32_t *target);
uint64_t ebpf_csum_diff(const uint8_t *from, uint32_t from_size, const uint8_t *to,
			uint32_t to_size, uint32_t seed);

#endif
