/* ebpf_vm.c - the eBPF interpreter: loader, run loop and XDP helpers.
 *
 * Semantics are the kernel's (Documentation/bpf/standardization/
 * instruction-set.rst and the kernel's interpreter, kernel/bpf/core.c):
 * 32-bit ALU results zero-extend; shift counts are masked (& 31, & 63);
 * division by zero gives 0 and modulo by zero leaves dst (32-bit:
 * truncated); signed division by -1 negates (INT_MIN / -1 = INT_MIN) and
 * signed modulo by -1 gives 0, as the verifier's rewrite makes them.
 *
 * The kernel verifier has already proven the program safe, but this engine
 * does not rely on it: every load, store, atomic and helper pointer is
 * checked at run time against the regions a run allows (struct vm_run),
 * every executed instruction spends the budget, and the call depth is
 * bounded. A violation ends the run with a fault and XDP_ABORTED.
 *
 * Dispatch is a computed goto over pre-decoded instructions (struct
 * vm_insn), whose dense opcodes are listed once in VM_OPS.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ebpf_vm.h"
#include "tsc.h"

/* ------------------------------------------------------------ encoding */

#define BPF_CLASS(code) ((code) & 0x07)
#define BPF_LD 0x00
#define BPF_LDX 0x01
#define BPF_ST 0x02
#define BPF_STX 0x03
#define BPF_ALU 0x04
#define BPF_JMP 0x05
#define BPF_JMP32 0x06
#define BPF_ALU64 0x07

#define BPF_SIZE(code) ((code) & 0x18)
#define BPF_W 0x00
#define BPF_H 0x08
#define BPF_B 0x10
#define BPF_DW 0x18

#define BPF_MODE(code) ((code) & 0xe0)
#define BPF_IMM 0x00
#define BPF_ABS 0x20
#define BPF_IND 0x40
#define BPF_MEM 0x60
#define BPF_MEMSX 0x80
#define BPF_ATOMIC 0xc0

#define BPF_OP(code) ((code) & 0xf0)
#define BPF_SRC(code) ((code) & 0x08)
#define BPF_K 0x00
#define BPF_X 0x08

#define BPF_ADD 0x00
#define BPF_SUB 0x10
#define BPF_MUL 0x20
#define BPF_DIV 0x30
#define BPF_OR 0x40
#define BPF_AND 0x50
#define BPF_LSH 0x60
#define BPF_RSH 0x70
#define BPF_NEG 0x80
#define BPF_MOD 0x90
#define BPF_XOR 0xa0
#define BPF_MOV 0xb0
#define BPF_ARSH 0xc0
#define BPF_END 0xd0

#define BPF_JA 0x00
#define BPF_CALL 0x80
#define BPF_EXIT 0x90

#define BPF_FETCH 0x01
#define BPF_XCHG (0xe0 | BPF_FETCH)
#define BPF_CMPXCHG (0xf0 | BPF_FETCH)

#define BPF_PSEUDO_MAP_FD 1
#define BPF_PSEUDO_MAP_VALUE 2
#define BPF_PSEUDO_CALL 1

#define XDP_ABORTED 0
#define XDP_REDIRECT 4
#define ETH_HLEN 14

#define BPF_F_BROADCAST (1u << 3)
#define BPF_F_EXCLUDE_INGRESS (1u << 4)

#define DEFAULT_BUDGET (1ull << 20)
#define STACK_BYTES (DP_BPF_STACK * DP_BPF_MAX_CALL_DEPTH)

/* The interpreter's opcodes: ALU ops in their K and X forms, 64 and 32
 * bit; jumps likewise; memory ops by size. */
#define VM_ALU_OPS(X, W)                                                   \
	X(ADD##W##_K) X(ADD##W##_X) X(SUB##W##_K) X(SUB##W##_X)            \
	X(MUL##W##_K) X(MUL##W##_X) X(DIV##W##_K) X(DIV##W##_X)            \
	X(SDIV##W##_K) X(SDIV##W##_X) X(MOD##W##_K) X(MOD##W##_X)          \
	X(SMOD##W##_K) X(SMOD##W##_X) X(OR##W##_K) X(OR##W##_X)            \
	X(AND##W##_K) X(AND##W##_X) X(XOR##W##_K) X(XOR##W##_X)            \
	X(LSH##W##_K) X(LSH##W##_X) X(RSH##W##_K) X(RSH##W##_X)            \
	X(ARSH##W##_K) X(ARSH##W##_X) X(NEG##W) X(MOV##W##_K) X(MOV##W##_X) \
	X(MOVSX8_##W) X(MOVSX16_##W)
#define VM_JMP_OPS(X, W)                                                   \
	X(JEQ##W##_K) X(JEQ##W##_X) X(JGT##W##_K) X(JGT##W##_X)            \
	X(JGE##W##_K) X(JGE##W##_X) X(JSET##W##_K) X(JSET##W##_X)          \
	X(JNE##W##_K) X(JNE##W##_X) X(JSGT##W##_K) X(JSGT##W##_X)          \
	X(JSGE##W##_K) X(JSGE##W##_X) X(JLT##W##_K) X(JLT##W##_X)          \
	X(JLE##W##_K) X(JLE##W##_X) X(JSLT##W##_K) X(JSLT##W##_X)          \
	X(JSLE##W##_K) X(JSLE##W##_X)
#define VM_OPS(X)                                                          \
	X(INVALID)                                                         \
	VM_ALU_OPS(X, 64) VM_ALU_OPS(X, 32) X(MOVSX32_64)                  \
	X(LE16) X(LE32) X(LE64) X(BE16) X(BE32) X(BE64)                    \
	VM_JMP_OPS(X, 64) VM_JMP_OPS(X, 32)                                \
	X(JA) X(CALL) X(CALL_LOCAL) X(EXIT) X(LDDW)                        \
	X(LDXB) X(LDXH) X(LDXW) X(LDXDW) X(LDXSB) X(LDXSH) X(LDXSW)        \
	X(STB) X(STH) X(STW) X(STDW) X(STXB) X(STXH) X(STXW) X(STXDW)      \
	X(ATOMIC_W) X(ATOMIC_DW)

#define VM_ENUM(name) OP_##name,
enum vm_op { VM_OPS(VM_ENUM) OP_COUNT };
_Static_assert(OP_COUNT <= 256, "opcodes fit a byte");

/* ------------------------------------------------------------ loader */

static int load_err(char *err, uint32_t err_len, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return ret;
}

static int helper_known(int32_t id)
{
	switch (id) {
	case BPF_FUNC_map_lookup_elem:
	case BPF_FUNC_map_update_elem:
	case BPF_FUNC_map_delete_elem:
	case BPF_FUNC_ktime_get_ns:
	case BPF_FUNC_csum_diff:
	case BPF_FUNC_xdp_adjust_head:
	case BPF_FUNC_redirect_map:
	case BPF_FUNC_xdp_adjust_tail:
	case BPF_FUNC_ringbuf_output:
		return 1;
	}
	return 0;
}

/* ALU opcode (BPF_OP) -> interpreter op, K form; X form is +1 */
static int alu_base(uint8_t op, int is64, int16_t off)
{
	static const uint8_t base64[16] = {
		[BPF_ADD >> 4] = OP_ADD64_K, [BPF_SUB >> 4] = OP_SUB64_K,
		[BPF_MUL >> 4] = OP_MUL64_K, [BPF_DIV >> 4] = OP_DIV64_K,
		[BPF_OR >> 4] = OP_OR64_K, [BPF_AND >> 4] = OP_AND64_K,
		[BPF_LSH >> 4] = OP_LSH64_K, [BPF_RSH >> 4] = OP_RSH64_K,
		[BPF_MOD >> 4] = OP_MOD64_K, [BPF_XOR >> 4] = OP_XOR64_K,
		[BPF_MOV >> 4] = OP_MOV64_K, [BPF_ARSH >> 4] = OP_ARSH64_K,
	};
	static const uint8_t base32[16] = {
		[BPF_ADD >> 4] = OP_ADD32_K, [BPF_SUB >> 4] = OP_SUB32_K,
		[BPF_MUL >> 4] = OP_MUL32_K, [BPF_DIV >> 4] = OP_DIV32_K,
		[BPF_OR >> 4] = OP_OR32_K, [BPF_AND >> 4] = OP_AND32_K,
		[BPF_LSH >> 4] = OP_LSH32_K, [BPF_RSH >> 4] = OP_RSH32_K,
		[BPF_MOD >> 4] = OP_MOD32_K, [BPF_XOR >> 4] = OP_XOR32_K,
		[BPF_MOV >> 4] = OP_MOV32_K, [BPF_ARSH >> 4] = OP_ARSH32_K,
	};
	int b = (is64 ? base64 : base32)[op >> 4];

	if (!b)
		return -1;
	if (op == BPF_DIV || op == BPF_MOD) {
		if (off == 1) /* signed: SDIV/SMOD follow DIV/MOD's K,X pair */
			return b + 2;
		return off == 0 ? b : -1;
	}
	return off == 0 || op == BPF_MOV ? b : -1;
}

static const uint8_t jmp_base64[16] = {
	[0x1] = OP_JEQ64_K, [0x2] = OP_JGT64_K, [0x3] = OP_JGE64_K, [0x4] = OP_JSET64_K,
	[0x5] = OP_JNE64_K, [0x6] = OP_JSGT64_K, [0x7] = OP_JSGE64_K, [0xa] = OP_JLT64_K,
	[0xb] = OP_JLE64_K, [0xc] = OP_JSLT64_K, [0xd] = OP_JSLE64_K,
};
static const uint8_t jmp_base32[16] = {
	[0x1] = OP_JEQ32_K, [0x2] = OP_JGT32_K, [0x3] = OP_JGE32_K, [0x4] = OP_JSET32_K,
	[0x5] = OP_JNE32_K, [0x6] = OP_JSGT32_K, [0x7] = OP_JSGE32_K, [0xa] = OP_JLT32_K,
	[0xb] = OP_JLE32_K, [0xc] = OP_JSLT32_K, [0xd] = OP_JSLE32_K,
};

struct raw_insn {
	uint8_t code, dst, src;
	int16_t off;
	int32_t imm;
};

static struct raw_insn decode(uint64_t w)
{
	struct raw_insn r = {
		.code = (uint8_t)w,
		.dst = (uint8_t)(w >> 8) & 0xf,
		.src = (uint8_t)(w >> 12) & 0xf,
		.off = (int16_t)(uint16_t)(w >> 16),
		.imm = (int32_t)(uint32_t)(w >> 32),
	};
	return r;
}

/* Decodes insns[pc] into *o. Returns 0, or -EINVAL with err written. */
static int load_one(const uint64_t *insns, uint32_t n, uint32_t pc, const uint8_t *second,
		    struct dp_prog *p, struct vm_insn *o, char *err, uint32_t err_len)
{
	struct raw_insn r = decode(insns[pc]);
	uint8_t cls = BPF_CLASS(r.code);
	int writes_dst = 0, op;
	int64_t target;

	o->dst = r.dst;
	o->src = r.src;
	o->off = r.off;
	o->imm = (uint64_t)(int64_t)r.imm;
	if (r.dst > 10 || r.src > 10)
		return load_err(err, err_len, -EINVAL, "invalid register at insn %u", pc);

	switch (cls) {
	case BPF_ALU:
	case BPF_ALU64: {
		int is64 = cls == BPF_ALU64;
		uint8_t aop = BPF_OP(r.code);

		writes_dst = 1;
		if (aop == BPF_END) {
			if (r.imm != 16 && r.imm != 32 && r.imm != 64)
				goto bad_op;
			if (is64 && BPF_SRC(r.code))
				goto bad_op;
			/* ALU64 END is the unconditional bswap: BE on this host */
			op = (is64 || BPF_SRC(r.code)) ? OP_BE16 : OP_LE16;
			o->op = op + (r.imm == 16 ? 0 : r.imm == 32 ? 1 : 2);
			break;
		}
		if (aop == BPF_NEG) {
			if (BPF_SRC(r.code) || r.off)
				goto bad_op;
			o->op = is64 ? OP_NEG64 : OP_NEG32;
			break;
		}
		op = alu_base(aop, is64, r.off);
		if (op < 0)
			goto bad_op;
		if (aop == BPF_MOV && r.off) {
			if (BPF_SRC(r.code) != BPF_X)
				goto bad_op;
			if (r.off == 8)
				op = is64 ? OP_MOVSX8_64 : OP_MOVSX8_32;
			else if (r.off == 16)
				op = is64 ? OP_MOVSX16_64 : OP_MOVSX16_32;
			else if (r.off == 32 && is64)
				op = OP_MOVSX32_64;
			else
				goto bad_op;
			o->op = op;
			break;
		}
		o->op = op + (BPF_SRC(r.code) == BPF_X);
		if (!is64)
			o->imm = (uint32_t)r.imm;
		break;
	}
	case BPF_JMP:
	case BPF_JMP32: {
		uint8_t jop = BPF_OP(r.code);

		if (jop == BPF_JA) {
			if (BPF_SRC(r.code))
				goto bad_op;
			target = (int64_t)pc + 1 + (cls == BPF_JMP ? r.off : r.imm);
			o->op = OP_JA;
			goto check_target;
		}
		if (jop == BPF_CALL || jop == BPF_EXIT) {
			if (cls != BPF_JMP || BPF_SRC(r.code))
				goto bad_op;
			if (jop == BPF_EXIT) {
				o->op = OP_EXIT;
				break;
			}
			if (r.src == BPF_PSEUDO_CALL) {
				target = (int64_t)pc + 1 + r.imm;
				o->op = OP_CALL_LOCAL;
				if (target < 0 || target >= n || second[target])
					return load_err(err, err_len, -EINVAL,
							"invalid call target at insn %u", pc);
				o->off = (int32_t)target;
				break;
			}
			if (r.src != 0)
				return load_err(err, err_len, -EINVAL,
						"unsupported call kind %u at insn %u", r.src, pc);
			if (!helper_known(r.imm))
				return load_err(err, err_len, -EINVAL,
						"unknown helper %d at insn %u", r.imm, pc);
			o->op = OP_CALL;
			break;
		}
		op = (cls == BPF_JMP ? jmp_base64 : jmp_base32)[jop >> 4];
		if (!op)
			goto bad_op;
		o->op = op + (BPF_SRC(r.code) == BPF_X);
		target = (int64_t)pc + 1 + r.off;
check_target:
		if (target < 0 || target >= n || second[target])
			return load_err(err, err_len, -EINVAL, "invalid jump target at insn %u", pc);
		o->off = (int32_t)target;
		break;
	}
	case BPF_LD: {
		struct raw_insn hi;

		if (r.code != (BPF_LD | BPF_IMM | BPF_DW)) {
			if (BPF_MODE(r.code) == BPF_ABS || BPF_MODE(r.code) == BPF_IND)
				return load_err(err, err_len, -EINVAL,
						"LD_ABS/LD_IND not supported at insn %u", pc);
			goto bad_op;
		}
		if (pc + 1 >= n)
			return load_err(err, err_len, -EINVAL, "incomplete LD_IMM64 at insn %u", pc);
		hi = decode(insns[pc + 1]);
		if (hi.code || hi.dst || hi.src || hi.off)
			return load_err(err, err_len, -EINVAL, "invalid LD_IMM64 second half at insn %u",
					pc + 1);
		writes_dst = 1;
		o->op = OP_LDDW;
		if (r.src == 0) {
			o->imm = (uint32_t)r.imm | ((uint64_t)(uint32_t)hi.imm << 32);
		} else if (r.src == BPF_PSEUDO_MAP_FD || r.src == BPF_PSEUDO_MAP_VALUE) {
			struct dp_map *m;

			if ((uint32_t)r.imm >= p->n_maps)
				return load_err(err, err_len, -EINVAL, "invalid map index %u at insn %u",
						(uint32_t)r.imm, pc);
			m = p->maps[r.imm];
			if (r.src == BPF_PSEUDO_MAP_FD) {
				if (hi.imm)
					return load_err(err, err_len, -EINVAL,
							"invalid LD_IMM64 second half at insn %u", pc + 1);
				o->imm = (uint64_t)(uintptr_t)&p->maps[r.imm];
			} else {
				uint32_t voff = (uint32_t)hi.imm;

				if (m->type != DP_MAP_ARRAY || voff >= m->values_len ||
				    !map_value_ok(m, (uintptr_t)m->values + voff, 1))
					return load_err(err, err_len, -EINVAL,
							"invalid map value offset %u at insn %u", voff, pc);
				o->imm = (uint64_t)(uintptr_t)m->values + voff;
			}
		} else {
			return load_err(err, err_len, -EINVAL,
					"unsupported LD_IMM64 kind %u at insn %u", r.src, pc);
		}
		break;
	}
	case BPF_LDX: {
		static const uint8_t ld[4] = { OP_LDXW, OP_LDXH, OP_LDXB, OP_LDXDW };
		static const uint8_t ldsx[4] = { OP_LDXSW, OP_LDXSH, OP_LDXSB, 0 };

		writes_dst = 1;
		if (BPF_MODE(r.code) == BPF_MEM)
			o->op = ld[BPF_SIZE(r.code) >> 3];
		else if (BPF_MODE(r.code) == BPF_MEMSX && ldsx[BPF_SIZE(r.code) >> 3])
			o->op = ldsx[BPF_SIZE(r.code) >> 3];
		else
			goto bad_op;
		break;
	}
	case BPF_ST:
	case BPF_STX: {
		static const uint8_t st[4] = { OP_STW, OP_STH, OP_STB, OP_STDW };
		static const uint8_t stx[4] = { OP_STXW, OP_STXH, OP_STXB, OP_STXDW };

		if (BPF_MODE(r.code) == BPF_MEM) {
			o->op = (cls == BPF_ST ? st : stx)[BPF_SIZE(r.code) >> 3];
			break;
		}
		if (cls != BPF_STX || BPF_MODE(r.code) != BPF_ATOMIC ||
		    (BPF_SIZE(r.code) != BPF_W && BPF_SIZE(r.code) != BPF_DW))
			goto bad_op;
		switch (r.imm) {
		case BPF_ADD: case BPF_OR: case BPF_AND: case BPF_XOR:
			break;
		case BPF_ADD | BPF_FETCH: case BPF_OR | BPF_FETCH:
		case BPF_AND | BPF_FETCH: case BPF_XOR | BPF_FETCH: case BPF_XCHG:
			if (r.src == 10)
				return load_err(err, err_len, -EINVAL, "r10 is read-only at insn %u", pc);
			break;
		case BPF_CMPXCHG:
			break;
		default:
			return load_err(err, err_len, -EINVAL, "invalid atomic operation at insn %u", pc);
		}
		o->op = BPF_SIZE(r.code) == BPF_W ? OP_ATOMIC_W : OP_ATOMIC_DW;
		o->imm = (uint32_t)r.imm;
		break;
	}
	default:
		goto bad_op;
	}
	if (writes_dst && r.dst == 10)
		return load_err(err, err_len, -EINVAL, "r10 is read-only at insn %u", pc);
	return 0;

bad_op:
	return load_err(err, err_len, -EINVAL, "invalid opcode 0x%02x at insn %u", r.code, pc);
}

int dp_prog_load(const uint64_t *insns, uint32_t n, dp_map_t *const *maps, uint32_t n_maps,
		 uint64_t insn_budget, char *err, uint32_t err_len, dp_prog_t **out)
{
	struct dp_prog *p;
	uint8_t *second = NULL;
	int ret = -EINVAL;
	uint8_t last;

	if (err && err_len)
		err[0] = 0;
	if (!n || n > DP_BPF_MAX_INSNS)
		return load_err(err, err_len, -EINVAL, "program of %u instructions (1..%u)", n,
				DP_BPF_MAX_INSNS);
	if (n_maps > DP_BPF_MAX_MAPS)
		return load_err(err, err_len, -EINVAL, "%u maps, at most %u", n_maps, DP_BPF_MAX_MAPS);
	for (uint32_t i = 0; i < n_maps; i++)
		if (!maps[i])
			return load_err(err, err_len, -EINVAL, "map %u is NULL", i);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->insns = calloc(n, sizeof(*p->insns));
	second = calloc(n, 1);
	if (!p->insns || !second) {
		ret = -ENOMEM;
		goto out_prog;
	}
	p->n_insns = n;
	p->n_maps = n_maps;
	memcpy(p->maps, maps, sizeof(*maps) * n_maps);
	p->insn_budget = insn_budget ? insn_budget : DEFAULT_BUDGET;
	p->ns_mult = (uint64_t)(1e9 * 4294967296.0 / tsc_hz());

	/* pass 1: where the second halves of LD_IMM64 are (not jump targets) */
	for (uint32_t pc = 0; pc < n; pc++)
		if ((uint8_t)insns[pc] == (BPF_LD | BPF_IMM | BPF_DW) && pc + 1 < n)
			second[++pc] = 1;
	/* pass 2: validate and decode */
	for (uint32_t pc = 0; pc < n; pc++) {
		ret = load_one(insns, n, pc, second, p, &p->insns[pc], err, err_len);
		if (ret)
			goto out_prog;
		if (p->insns[pc].op == OP_LDDW)
			p->insns[++pc].op = OP_INVALID;
	}
	/* no falling off the end */
	last = p->insns[n - 1].op;
	if (last != OP_EXIT && last != OP_JA) {
		ret = load_err(err, err_len, -EINVAL, "last insn %u is not exit or jump", n - 1);
		goto out_prog;
	}
	free(second);
	*out = p;
	return 0;

out_prog:
	free(second);
	free(p->insns);
	free(p);
	return ret;
}

void dp_prog_free(dp_prog_t *p)
{
	if (!p)
		return;
	free(p->insns);
	free(p);
}

/* ------------------------------------------------------------ run state */

struct vm_frame {
	uint64_t r6_9[4];
	uint64_t frame_lo;
	uint32_t ret_pc;
};

struct vm_run {
	const struct dp_prog *p;
	struct ebpf_mem *m;
	uint64_t stack_lo;   /* bottom of the current frame */
	uint64_t stack_hi;   /* top of frame 0 */
	uint32_t redirect;
};

#define ACC_READ 0
#define ACC_WRITE 1
#define ACC_ATOMIC 2
#define ACC_HELPER 3   /* helper argument: read or write, never the context */

static always_inline int in_range(uint64_t addr, uint64_t size, uint64_t lo, uint64_t hi)
{
	uint64_t off = addr - lo;

	return off < hi - lo && size <= hi - lo - off;
}

/* the rarer regions: the context and map values */
static noinline int mem_ok_slow(const struct vm_run *s, uint64_t addr, uint64_t size, int acc)
{
	const struct dp_prog *p = s->p;
	uint64_t ctx = (uint64_t)(uintptr_t)&s->m->ctx;

	if (acc == ACC_READ && s->m->xdp && addr - ctx < sizeof(struct dp_xdp_ctx)) {
		uint64_t off = addr - ctx;

		/* whole fields only: the three pointers, the three u32s */
		return (size == 8 && off <= 16 && !(off & 7)) ||
		       (size == 4 && off >= 24 && off <= 32 && !(off & 3));
	}
	for (uint32_t i = 0; i < p->n_maps; i++) {
		const struct dp_map *m = p->maps[i];

		if (m->values && map_value_ok(m, addr, size))
			return acc == ACC_READ || acc == ACC_HELPER || !m->rdonly_prog;
	}
	return 0;
}

/* stack (all frames of the call chain) and packet first: the hot cases */
static always_inline int mem_ok(const struct vm_run *s, uint64_t addr, uint64_t size, int acc)
{
	if (likely(in_range(addr, size, s->stack_lo, s->stack_hi)))
		return 1;
	/* (no atomics on packet data, as the verifier says; raw mode's mem
	 * is plain memory) */
	if (in_range(addr, size, s->m->ctx.data, s->m->ctx.data_end) &&
	    (acc != ACC_ATOMIC || !s->m->xdp))
		return 1;
	return mem_ok_slow(s, addr, size, acc);
}

/* ------------------------------------------------------------ helpers */

static always_inline struct dp_map *map_arg(const struct vm_run *s, uint64_t v)
{
	uint64_t off = v - (uint64_t)(uintptr_t)s->p->maps;

	if (off >= (uint64_t)s->p->n_maps * sizeof(s->p->maps[0]) || (off & 7))
		return NULL;
	return s->p->maps[off / sizeof(s->p->maps[0])];
}

static uint64_t csum_partial32(const uint8_t *buf, uint32_t len, uint32_t seed)
{
	uint64_t sum = seed;
	uint32_t w;

	for (; len >= 4; buf += 4, len -= 4) {
		memcpy(&w, buf, 4);
		sum += w;
	}
	if (len) {
		w = 0;
		memcpy(&w, buf, len);
		sum += w;
	}
	while (sum >> 32)
		sum = (sum & 0xffffffffu) + (sum >> 32);
	return sum;
}

static uint32_t csum_add32(uint32_t a, uint32_t b)
{
	uint32_t r = a + b;

	return r + (r < b);
}

/* bpf_redirect_map on isolane's devmap/xskmap: XDP_REDIRECT and the slot's
 * target, or the flags' low bits when the slot is empty (the kernel's) */
int64_t ebpf_redirect_map(struct dp_map *map, uint64_t key64, uint64_t flags, uint32_t *target)
{
	uint64_t mask = 3; /* lower bits: the verdict on a miss */
	uint32_t key = (uint32_t)key64;
	void *v;

	if (map->type != DP_MAP_DEVMAP && map->type != DP_MAP_XSKMAP)
		return XDP_ABORTED;
	if (map->type == DP_MAP_DEVMAP)
		mask |= BPF_F_EXCLUDE_INGRESS; /* meaningless without broadcast */
	if (flags & ~mask) /* BPF_F_BROADCAST is not supported here */
		return XDP_ABORTED;
	v = map_lookup(map, &key);
	if (!v) {
		*target = 0;
		return flags & 3;
	}
	memcpy(target, v, 4);
	return XDP_REDIRECT;
}

/* bpf_csum_diff as in Linux 6.13+ (net/core/filter.c): the 32-bit
 * one's-complement sum of `to` less that of `from`, seeded, folded to 16
 * bits (csum_from32to16, not complemented) */
uint64_t ebpf_csum_diff(const uint8_t *from, uint32_t from_size, const uint8_t *to,
				 uint32_t to_size, uint32_t seed)
{
	uint32_t ret = seed;

	if (from_size && to_size)
		ret = csum_add32((uint32_t)csum_partial32(to, to_size, ret),
				 ~(uint32_t)csum_partial32(from, from_size, 0));
	else if (to_size)
		ret = (uint32_t)csum_partial32(to, to_size, ret);
	else if (from_size)
		ret = ~(uint32_t)csum_partial32(from, from_size, ~ret);
	ret += (ret >> 16) | (ret << 16);
	return ret >> 16;
}

static always_inline uint64_t errret(int e)
{
	return (uint64_t)(int64_t)e;
}

/* Runs helper `id` with r1..r5; sets *fault on a bad argument. */
static noinline uint64_t call_helper(struct vm_run *s, int32_t id, const uint64_t *r, int *fault)
{
	struct ebpf_mem *m = s->m;
	struct dp_map *map;

	switch (id) {
	case BPF_FUNC_map_lookup_elem:
	case BPF_FUNC_map_update_elem:
	case BPF_FUNC_map_delete_elem: {
		void *v;

		map = map_arg(s, r[1]);
		if (!map)
			goto bad_call;
		if (map->type == DP_MAP_RINGBUF)
			return id == BPF_FUNC_map_lookup_elem ? 0 : errret(-EINVAL);
		if (!mem_ok(s, r[2], map->key_size, ACC_HELPER))
			goto bad_mem;
		if (id == BPF_FUNC_map_lookup_elem) {
			v = map_lookup(map, (const void *)(uintptr_t)r[2]);
			return (uint64_t)(uintptr_t)v;
		}
		if (map->rdonly_prog)
			return errret(-EINVAL);
		if (id == BPF_FUNC_map_delete_elem)
			return errret(map_delete(map, (const void *)(uintptr_t)r[2]));
		if (!mem_ok(s, r[3], map->value_size, ACC_HELPER))
			goto bad_mem;
		return errret(map_update(map, (const void *)(uintptr_t)r[2],
					 (const void *)(uintptr_t)r[3], r[4]));
	}
	case BPF_FUNC_ktime_get_ns:
		return (uint64_t)(((unsigned __int128)rdtsc() * s->p->ns_mult) >> 32);
	case BPF_FUNC_csum_diff: {
		uint32_t from_size = (uint32_t)r[2], to_size = (uint32_t)r[4];

		if ((from_size && !mem_ok(s, r[1], from_size, ACC_HELPER)) ||
		    (to_size && !mem_ok(s, r[3], to_size, ACC_HELPER)))
			goto bad_mem;
		return ebpf_csum_diff((const uint8_t *)(uintptr_t)r[1], from_size,
					(const uint8_t *)(uintptr_t)r[3], to_size, (uint32_t)r[5]);
	}
	case BPF_FUNC_xdp_adjust_head: {
		int64_t off = (int64_t)(m->ctx.data - m->buf_lo) + (int32_t)r[2];

		if (!m->xdp || r[1] != (uint64_t)(uintptr_t)&m->ctx)
			goto bad_call;
		/* the headroom floor, and at least an Ethernet header left */
		if (off < 0 || off > (int64_t)(m->ctx.data_end - m->buf_lo) - ETH_HLEN)
			return errret(-EINVAL);
		m->ctx.data = m->buf_lo + off;
		m->ctx.data_meta = m->ctx.data;
		return 0;
	}
	case BPF_FUNC_xdp_adjust_tail: {
		int64_t delta = (int32_t)r[2];
		uint64_t end = m->ctx.data_end + delta;

		if (!m->xdp || r[1] != (uint64_t)(uintptr_t)&m->ctx)
			goto bad_call;
		if (delta > (int64_t)(m->buf_hi - m->ctx.data_end) ||
		    delta < -(int64_t)(m->ctx.data_end - m->ctx.data) + ETH_HLEN)
			return errret(-EINVAL);
		if (delta > 0) /* the kernel clears what the packet grows into */
			memset((void *)(uintptr_t)m->ctx.data_end, 0, delta);
		m->ctx.data_end = end;
		return 0;
	}
	case BPF_FUNC_redirect_map:
		map = map_arg(s, r[1]);
		if (!map)
			goto bad_call;
		return (uint64_t)ebpf_redirect_map(map, r[2], r[3], &s->redirect);
	case BPF_FUNC_ringbuf_output:
		map = map_arg(s, r[1]);
		if (!map)
			goto bad_call;
		if (r[3] && !mem_ok(s, r[2], r[3], ACC_HELPER))
			goto bad_mem;
		return errret(map_ringbuf_output(map, (const void *)(uintptr_t)r[2], r[3]));
	}
bad_call:
	*fault = -EINVAL;
	return 0;
bad_mem:
	*fault = -EFAULT;
	return 0;
}

/* ------------------------------------------------------------ the loop */

static always_inline uint64_t ld(uint64_t addr, int size)
{
	uint8_t b; uint16_t h; uint32_t w; uint64_t d;

	switch (size) {
	case 1: memcpy(&b, (void *)(uintptr_t)addr, 1); return b;
	case 2: memcpy(&h, (void *)(uintptr_t)addr, 2); return h;
	case 4: memcpy(&w, (void *)(uintptr_t)addr, 4); return w;
	default: memcpy(&d, (void *)(uintptr_t)addr, 8); return d;
	}
}

static always_inline void st(uint64_t addr, int size, uint64_t v)
{
	uint8_t b = v; uint16_t h = v; uint32_t w = v;

	switch (size) {
	case 1: memcpy((void *)(uintptr_t)addr, &b, 1); break;
	case 2: memcpy((void *)(uintptr_t)addr, &h, 2); break;
	case 4: memcpy((void *)(uintptr_t)addr, &w, 4); break;
	default: memcpy((void *)(uintptr_t)addr, &v, 8); break;
	}
}

static always_inline uint64_t atomic_op(uint64_t addr, int is64, uint32_t aop, uint64_t *src,
					uint64_t *r0)
{
	if (is64) {
		uint64_t *a = (uint64_t *)(uintptr_t)addr, old = 0;

		switch (aop & ~BPF_FETCH) {
		case BPF_ADD: old = __atomic_fetch_add(a, *src, __ATOMIC_SEQ_CST); break;
		case BPF_OR: old = __atomic_fetch_or(a, *src, __ATOMIC_SEQ_CST); break;
		case BPF_AND: old = __atomic_fetch_and(a, *src, __ATOMIC_SEQ_CST); break;
		case BPF_XOR: old = __atomic_fetch_xor(a, *src, __ATOMIC_SEQ_CST); break;
		case BPF_XCHG & ~BPF_FETCH: old = __atomic_exchange_n(a, *src, __ATOMIC_SEQ_CST); break;
		case BPF_CMPXCHG & ~BPF_FETCH:
			old = *r0;
			__atomic_compare_exchange_n(a, &old, *src, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
			*r0 = old;
			return 0;
		}
		if (aop & BPF_FETCH)
			*src = old;
	} else {
		uint32_t *a = (uint32_t *)(uintptr_t)addr, old = 0, v = (uint32_t)*src;

		switch (aop & ~BPF_FETCH) {
		case BPF_ADD: old = __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); break;
		case BPF_OR: old = __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); break;
		case BPF_AND: old = __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); break;
		case BPF_XOR: old = __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); break;
		case BPF_XCHG & ~BPF_FETCH: old = __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); break;
		case BPF_CMPXCHG & ~BPF_FETCH:
			old = (uint32_t)*r0;
			__atomic_compare_exchange_n(a, &old, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
			*r0 = old;
			return 0;
		}
		if (aop & BPF_FETCH)
			*src = old;
	}
	return 0;
}

uint64_t ebpf_exec(const struct dp_prog *p, struct ebpf_mem *m, struct dp_prog_result *res)
{
#define VM_LABEL(name) [OP_##name] = &&L_##name,
	static const void *const labels[256] = { VM_OPS(VM_LABEL) };
	uint8_t stack[STACK_BYTES] __attribute__((aligned(16)));
	struct vm_frame frames[DP_BPF_MAX_CALL_DEPTH];
	const struct vm_insn *code = p->insns, *in;
	uint64_t reg[11], budget = p->insn_budget, count = 0, addr;
	struct vm_run s = { .p = p, .m = m };
	uint32_t pc = 0, depth = 0;
	int fault = 0;

	s.stack_hi = (uint64_t)(uintptr_t)(stack + STACK_BYTES);
	s.stack_lo = s.stack_hi - DP_BPF_STACK;
	memset((void *)(uintptr_t)s.stack_lo, 0, DP_BPF_STACK);
	memset(reg, 0, sizeof(reg));
	if (m->xdp) {
		reg[1] = (uint64_t)(uintptr_t)&m->ctx;
	} else {
		reg[1] = m->ctx.data;
		reg[2] = m->ctx.data_end - m->ctx.data;
	}
	reg[10] = s.stack_hi;

#define DST reg[in->dst]
#define SRC reg[in->src]
#define IMM in->imm
/* each handler ends in its own copy of the dispatch: one indirect branch
 * per handler predicts better than one shared by all */
#define DISPATCH do {                                                      \
		if (unlikely(count == budget))                             \
			FAULT(-E2BIG);                                     \
		count++;                                                   \
		in = &code[pc];                                            \
		goto *labels[in->op];                                      \
	} while (0)
#define NEXT do { pc++; DISPATCH; } while (0)
#define JUMP_IF(cond) do { if (cond) { pc = in->off; DISPATCH; } NEXT; } while (0)
#define FAULT(e) do { fault = (e); goto out_fault; } while (0)

	DISPATCH;

#define ALU64_PAIR(NAME, EXPR_K, EXPR_X)                                   \
	L_##NAME##64_K: { uint64_t v = IMM; (void)v; DST = (EXPR_K); NEXT; }  \
	L_##NAME##64_X: { uint64_t v = SRC; (void)v; DST = (EXPR_X); NEXT; }
#define ALU32_PAIR(NAME, EXPR_K, EXPR_X)                                   \
	L_##NAME##32_K: { uint32_t v = (uint32_t)IMM, d = (uint32_t)DST; (void)v; (void)d; \
		DST = (uint32_t)(EXPR_K); NEXT; }                                  \
	L_##NAME##32_X: { uint32_t v = (uint32_t)SRC, d = (uint32_t)DST; (void)v; (void)d; \
		DST = (uint32_t)(EXPR_X); NEXT; }
#define ALU64(NAME, EXPR) ALU64_PAIR(NAME, EXPR, EXPR)
#define ALU32(NAME, EXPR) ALU32_PAIR(NAME, EXPR, EXPR)

	ALU64(ADD, DST + v)
	ALU64(SUB, DST - v)
	ALU64(MUL, DST * v)
	ALU64(DIV, v ? DST / v : 0)
	ALU64(SDIV, v == 0 ? 0 : (int64_t)v == -1 ? -DST : (uint64_t)((int64_t)DST / (int64_t)v))
	ALU64(MOD, v ? DST % v : DST)
	ALU64(SMOD, v == 0 ? DST : (int64_t)v == -1 ? 0 : (uint64_t)((int64_t)DST % (int64_t)v))
	ALU64(OR, DST | v)
	ALU64(AND, DST & v)
	ALU64(XOR, DST ^ v)
	ALU64(LSH, DST << (v & 63))
	ALU64(RSH, DST >> (v & 63))
	ALU64(ARSH, (uint64_t)((int64_t)DST >> (v & 63)))
	ALU64(MOV, v)

	ALU32(ADD, d + v)
	ALU32(SUB, d - v)
	ALU32(MUL, d * v)
	ALU32(DIV, v ? d / v : 0)
	ALU32(SDIV, v == 0 ? 0 : (int32_t)v == -1 ? -d : (uint32_t)((int32_t)d / (int32_t)v))
	ALU32(MOD, v ? d % v : d)
	ALU32(SMOD, v == 0 ? d : (int32_t)v == -1 ? 0 : (uint32_t)((int32_t)d % (int32_t)v))
	ALU32(OR, d | v)
	ALU32(AND, d & v)
	ALU32(XOR, d ^ v)
	ALU32(LSH, d << (v & 31))
	ALU32(RSH, d >> (v & 31))
	ALU32(ARSH, (uint32_t)((int32_t)d >> (v & 31)))
	ALU32(MOV, v)

L_NEG64: DST = -DST; NEXT;
L_NEG32: DST = (uint32_t)-(uint32_t)DST; NEXT;
L_MOVSX8_64: DST = (uint64_t)(int64_t)(int8_t)SRC; NEXT;
L_MOVSX16_64: DST = (uint64_t)(int64_t)(int16_t)SRC; NEXT;
L_MOVSX32_64: DST = (uint64_t)(int64_t)(int32_t)SRC; NEXT;
L_MOVSX8_32: DST = (uint32_t)(int32_t)(int8_t)SRC; NEXT;
L_MOVSX16_32: DST = (uint32_t)(int32_t)(int16_t)SRC; NEXT;
L_LE16: DST = (uint16_t)DST; NEXT;
L_LE32: DST = (uint32_t)DST; NEXT;
L_LE64: NEXT;
L_BE16: DST = __builtin_bswap16((uint16_t)DST); NEXT;
L_BE32: DST = __builtin_bswap32((uint32_t)DST); NEXT;
L_BE64: DST = __builtin_bswap64(DST); NEXT;

#define JMP64(NAME, OP, T)                                                 \
	L_##NAME##64_K: JUMP_IF((T)DST OP (T)IMM);                          \
	L_##NAME##64_X: JUMP_IF((T)DST OP (T)SRC);
#define JMP32(NAME, OP, T)                                                 \
	L_##NAME##32_K: JUMP_IF((T)(uint32_t)DST OP (T)(uint32_t)IMM);      \
	L_##NAME##32_X: JUMP_IF((T)(uint32_t)DST OP (T)(uint32_t)SRC);
#define JMPS(NAME, OP, T64, T32) JMP64(NAME, OP, T64) JMP32(NAME, OP, T32)

	JMPS(JEQ, ==, uint64_t, uint32_t)
	JMPS(JNE, !=, uint64_t, uint32_t)
	JMPS(JGT, >, uint64_t, uint32_t)
	JMPS(JGE, >=, uint64_t, uint32_t)
	JMPS(JLT, <, uint64_t, uint32_t)
	JMPS(JLE, <=, uint64_t, uint32_t)
	JMPS(JSGT, >, int64_t, int32_t)
	JMPS(JSGE, >=, int64_t, int32_t)
	JMPS(JSLT, <, int64_t, int32_t)
	JMPS(JSLE, <=, int64_t, int32_t)
L_JSET64_K: JUMP_IF(DST & IMM);
L_JSET64_X: JUMP_IF(DST & SRC);
L_JSET32_K: JUMP_IF((uint32_t)DST & (uint32_t)IMM);
L_JSET32_X: JUMP_IF((uint32_t)DST & (uint32_t)SRC);
L_JA: pc = in->off; DISPATCH;

L_LDDW: DST = IMM; pc += 2; DISPATCH;

#define LOAD(NAME, SIZE, CAST)                                             \
	L_##NAME: addr = SRC + in->off;                                     \
		if (unlikely(!mem_ok(&s, addr, SIZE, ACC_READ)))            \
			FAULT(-EFAULT);                                     \
		DST = (uint64_t)(CAST)ld(addr, SIZE); NEXT;
	LOAD(LDXB, 1, uint8_t)
	LOAD(LDXH, 2, uint16_t)
	LOAD(LDXW, 4, uint32_t)
	LOAD(LDXDW, 8, uint64_t)
	LOAD(LDXSB, 1, int8_t)
	LOAD(LDXSH, 2, int16_t)
	LOAD(LDXSW, 4, int32_t)

#define STORE(NAME, SIZE, VAL)                                             \
	L_##NAME: addr = DST + in->off;                                     \
		if (unlikely(!mem_ok(&s, addr, SIZE, ACC_WRITE)))           \
			FAULT(-EFAULT);                                     \
		st(addr, SIZE, VAL); NEXT;
	STORE(STB, 1, IMM)
	STORE(STH, 2, IMM)
	STORE(STW, 4, IMM)
	STORE(STDW, 8, IMM)
	STORE(STXB, 1, SRC)
	STORE(STXH, 2, SRC)
	STORE(STXW, 4, SRC)
	STORE(STXDW, 8, SRC)

L_ATOMIC_W:
	addr = DST + in->off;
	if (unlikely((addr & 3) || !mem_ok(&s, addr, 4, ACC_ATOMIC)))
		FAULT(-EFAULT);
	atomic_op(addr, 0, (uint32_t)IMM, &SRC, &reg[0]);
	NEXT;
L_ATOMIC_DW:
	addr = DST + in->off;
	if (unlikely((addr & 7) || !mem_ok(&s, addr, 8, ACC_ATOMIC)))
		FAULT(-EFAULT);
	atomic_op(addr, 1, (uint32_t)IMM, &SRC, &reg[0]);
	NEXT;

L_CALL:
	reg[0] = call_helper(&s, (int32_t)IMM, reg, &fault);
	if (unlikely(fault))
		goto out_fault;
	NEXT;

L_CALL_LOCAL:
	if (unlikely(depth + 1 >= DP_BPF_MAX_CALL_DEPTH))
		FAULT(-ENOSPC);
	memcpy(frames[depth].r6_9, &reg[6], sizeof(frames[depth].r6_9));
	frames[depth].frame_lo = s.stack_lo;
	frames[depth].ret_pc = pc + 1;
	depth++;
	s.stack_lo -= DP_BPF_STACK;
	memset((void *)(uintptr_t)s.stack_lo, 0, DP_BPF_STACK);
	reg[10] = s.stack_lo + DP_BPF_STACK;
	pc = in->off;
	DISPATCH;

L_EXIT:
	if (depth) {
		depth--;
		memcpy(&reg[6], frames[depth].r6_9, sizeof(frames[depth].r6_9));
		s.stack_lo = frames[depth].frame_lo;
		reg[10] = s.stack_lo + DP_BPF_STACK;
		pc = frames[depth].ret_pc;
		DISPATCH;
	}
	res->r0 = reg[0];
	res->insns = count;
	res->fault = 0;
	res->fault_pc = 0;
	res->redirect = s.redirect;
	return reg[0];

L_INVALID:
	FAULT(-EINVAL); /* unreachable: the loader rejects these */

out_fault:
	res->r0 = 0;
	res->insns = count;
	res->fault = fault;
	res->fault_pc = pc;
	res->redirect = s.redirect;
	return 0;
#undef DST
#undef SRC
#undef IMM
#undef NEXT
#undef DISPATCH
#undef JUMP_IF
#undef FAULT
}

/* ------------------------------------------------------------ entry points */

static always_inline uint32_t xdp_verdict(const struct dp_prog_result *res)
{
	uint32_t act = (uint32_t)res->r0;

	return res->fault || act > XDP_REDIRECT ? XDP_ABORTED : act;
}

static always_inline void xdp_mem(struct ebpf_mem *m, uint8_t *lo, uint8_t *hi, uint8_t *data,
				  uint32_t len, uint32_t ifindex, uint32_t rxq)
{
	m->ctx.data = (uint64_t)(uintptr_t)data;
	m->ctx.data_end = m->ctx.data + len;
	m->ctx.data_meta = m->ctx.data;
	m->ctx.ingress_ifindex = ifindex;
	m->ctx.rx_queue_index = rxq;
	m->ctx.egress_ifindex = 0;
	m->ctx._pad = 0;
	m->buf_lo = (uint64_t)(uintptr_t)lo;
	m->buf_hi = (uint64_t)(uintptr_t)hi;
	m->xdp = 1;
}

uint32_t ebpf_run_pkt(const struct dp_prog *prog, struct pkt *p, struct dp_prog_result *res)
{
	uint8_t *frame = (uint8_t *)p;
	struct ebpf_mem m;

	xdp_mem(&m, frame + PKT_META_SIZE, frame + FRAME_SIZE, frame + p->off, p->len, 0, 0);
	ebpf_exec(prog, &m, res);
	p->off = (uint32_t)(m.ctx.data - (uint64_t)(uintptr_t)frame);
	p->len = (uint32_t)(m.ctx.data_end - m.ctx.data);
	res->data_off = p->off;
	res->len = p->len;
	return xdp_verdict(res);
}

int dp_prog_run_xdp(dp_prog_t *p, uint8_t *buf, uint32_t buf_len, uint32_t headroom,
		    uint32_t len, uint32_t ingress_ifindex, uint32_t rx_queue,
		    struct dp_prog_result *res)
{
	struct ebpf_mem m;

	if ((uint64_t)headroom + len > buf_len)
		return -EINVAL;
	xdp_mem(&m, buf, buf + buf_len, buf + headroom, len, ingress_ifindex, rx_queue);
	ebpf_exec(p, &m, res);
	res->data_off = (uint32_t)(m.ctx.data - (uint64_t)(uintptr_t)buf);
	res->len = (uint32_t)(m.ctx.data_end - m.ctx.data);
	return (int)xdp_verdict(res);
}

int dp_prog_run_raw(dp_prog_t *p, uint8_t *mem, uint32_t len, struct dp_prog_result *res)
{
	struct ebpf_mem m;

	memset(&m, 0, sizeof(m));
	m.ctx.data = (uint64_t)(uintptr_t)mem;
	m.ctx.data_end = m.ctx.data + len;
	ebpf_exec(p, &m, res);
	res->data_off = 0;
	res->len = len;
	return res->fault;
}

#define BENCH_ROOM 256u

int64_t dp_prog_bench_xdp(dp_prog_t *p, const uint8_t *pkt, uint32_t len, uint64_t repeat,
			  struct dp_prog_result *last)
{
	uint32_t buf_len = BENCH_ROOM + len + BENCH_ROOM;
	struct dp_prog_result res;
	uint64_t t0, t1;
	uint8_t *buf;

	if (!repeat || len > DP_MAX_FRAME_LEN)
		return -EINVAL;
	buf = aligned_alloc(64, (buf_len + 63) & ~63u);
	if (!buf)
		return -ENOMEM;
	memset(buf, 0, buf_len);
	memcpy(buf + BENCH_ROOM, pkt, len);
	/* in place, as BPF_PROG_TEST_RUN and dp_handler_bench run: the start
	 * and length are reset every run, what the program wrote stays */
	t0 = rdtsc();
	for (uint64_t i = 0; i < repeat; i++)
		dp_prog_run_xdp(p, buf, buf_len, BENCH_ROOM, len, 0, 0, &res);
	t1 = rdtsc();
	free(buf);
	if (last)
		*last = res;
	return (int64_t)MAX(t1 - t0, 1);
}
