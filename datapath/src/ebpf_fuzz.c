/* ebpf_fuzz.c - random programs and packets thrown at the loader and the
 * interpreter, in C so that 100,000 programs take seconds (Python would
 * spend its time in cffi calls).
 *
 * A quarter of the programs are random words (the loader's rejections);
 * the rest are structured: a prologue that loads data/data_end, then
 * random instructions of every class biased towards what can run (memory
 * accesses based on the stack, packet, context and map-value pointers
 * with offsets near the region edges, helper calls with set-up
 * arguments, short jumps, local calls), then `r0 = verdict; exit`; some
 * get a word mutated afterwards. Each program that loads runs twice in XDP
 * mode on random packets (lengths 0..200, so also below an Ethernet
 * header) and once in raw mode. Every buffer sits between guard bytes that
 * must survive the run; run under `make test-asan` the stack and map
 * accesses are checked too.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ebpf_vm.h"

#define FUZZ_ROOM 256u
#define FUZZ_MAX_PKT 200u
#define FUZZ_GUARD 64u
#define FUZZ_GUARD_BYTE 0xa5
#define FUZZ_BUDGET 4096u
#define FUZZ_N_MAPS 4

struct rng {
	uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545f4914f6cdd1dull;
}

static uint32_t below(struct rng *r, uint32_t n)
{
	return (uint32_t)(((rnd(r) >> 32) * n) >> 32);
}

static uint64_t enc(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
	return code | (uint64_t)(dst & 0xf) << 8 | (uint64_t)(src & 0xf) << 12 |
	       (uint64_t)(uint16_t)off << 16 | (uint64_t)(uint32_t)imm << 32;
}

static const uint8_t alu_ops[] = { 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60,
				   0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0 };
static const uint8_t jmp_ops[] = { 0x10, 0x20, 0x30, 0x40, 0x50, 0x60,
				   0x70, 0xa0, 0xb0, 0xc0, 0xd0 };
static const uint8_t ldx_codes[] = { 0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91 };
static const uint8_t st_codes[] = { 0x62, 0x6a, 0x72, 0x7a, 0x63, 0x6b, 0x73, 0x7b };
static const int32_t atomic_imms[] = { 0x00, 0x40, 0x50, 0xa0, 0x01, 0x41,
				       0x51, 0xa1, 0xe1, 0xf1 };
static const int32_t helpers[] = { 1, 2, 3, 5, 28, 44, 51, 65, 130 };
/* registers that tend to hold pointers: r2 data, r3 data_end, r6 ctx,
 * r10 stack, r0 a lookup result, r7 a stack pointer */
static const uint8_t ptr_regs[] = { 2, 3, 6, 10, 0, 7, 2, 10 };

static int16_t edge_off(struct rng *r)
{
	static const int16_t edges[] = { 0, -1, -2, -4, -8, -512, -513, -520, 8, 12, 14, 16,
					 24, 28, 32, 36, 40, 60, 64, 200, -256, -257 };

	if (below(r, 2))
		return edges[below(r, ARRAY_SIZE(edges))];
	return (int16_t)((int)below(r, 600) - 530);
}

static int32_t rand_imm(struct rng *r)
{
	switch (below(r, 4)) {
	case 0: return (int32_t)rnd(r);
	case 1: return (int32_t)below(r, 70) - 3;
	case 2: return below(r, 2) ? INT32_MIN : -1;
	default: return (int32_t)below(r, 16);
	}
}

/* one random step of a structured program; returns the words written */
static uint32_t gen_step(struct rng *r, uint64_t *w, uint32_t room, uint32_t pc)
{
	uint32_t k = below(r, 100);
	uint8_t dst = below(r, 64) ? below(r, 10) : 10, src = below(r, 11);

	if (k < 30) { /* ALU */
		uint8_t cls = below(r, 2) ? 0x07 : 0x04, op = alu_ops[below(r, ARRAY_SIZE(alu_ops))];
		uint8_t x = below(r, 2) ? 0x08 : 0;
		int16_t off = 0;
		int32_t imm = rand_imm(r);

		if (op == 0x30 || op == 0x90)
			off = below(r, 2);
		else if (op == 0xb0 && x && below(r, 3) == 0)
			off = (int16_t[]){ 8, 16, 32 }[below(r, 3)];
		else if (op == 0xd0)
			imm = (int32_t[]){ 16, 32, 64 }[below(r, 3)];
		if (op == 0x80)
			x = 0;
		w[0] = enc(cls | op | x, dst, x ? src : 0, off, imm);
		return 1;
	}
	if (k < 45) { /* conditional or unconditional jump, mostly forward */
		uint8_t cls = below(r, 2) ? 0x05 : 0x06, x = below(r, 2) ? 0x08 : 0;
		int16_t off = (int16_t)((int)below(r, 12) - 3);

		if (below(r, 10) == 0) {
			w[0] = cls == 0x05 ? enc(0x05, 0, 0, off, 0) : enc(0x06, 0, 0, 0, off);
			return 1;
		}
		w[0] = enc(cls | jmp_ops[below(r, ARRAY_SIZE(jmp_ops))] | x, below(r, 10),
			   x ? src : 0, off, rand_imm(r));
		return 1;
	}
	if (k < 68) { /* load or store near a region's edge */
		uint8_t base = ptr_regs[below(r, ARRAY_SIZE(ptr_regs))];

		if (below(r, 2))
			w[0] = enc(ldx_codes[below(r, ARRAY_SIZE(ldx_codes))], below(r, 10), base,
				   edge_off(r), 0);
		else
			w[0] = enc(st_codes[below(r, ARRAY_SIZE(st_codes))], base, src, edge_off(r),
				   rand_imm(r));
		return 1;
	}
	if (k < 73) { /* atomic */
		uint8_t base = ptr_regs[below(r, ARRAY_SIZE(ptr_regs))];

		w[0] = enc(below(r, 2) ? 0xdb : 0xc3, base, below(r, 10), edge_off(r) & ~3,
			   atomic_imms[below(r, ARRAY_SIZE(atomic_imms))]);
		return 1;
	}
	if (k < 85 && room >= 8) { /* helper call with plausible arguments */
		int32_t id = helpers[below(r, ARRAY_SIZE(helpers))];
		uint32_t n = 0;

		if (id == 44 || id == 65) {
			w[n++] = enc(0xbf, 1, 6, 0, 0);                   /* r1 = ctx */
			w[n++] = enc(0xb7, 2, 0, 0, (int32_t)below(r, 600) - 300);
		} else if (id == 28) {
			w[n++] = enc(0xbf, 1, below(r, 2) ? 2 : 10, 0, 0);
			w[n++] = enc(0x07, 1, 0, 0, below(r, 2) ? -16 : 0);
			w[n++] = enc(0xb7, 2, 0, 0, 4 * below(r, 5));
			w[n++] = enc(0xbf, 3, 10, 0, 0);
			w[n++] = enc(0x07, 3, 0, 0, -32);
			w[n++] = enc(0xb7, 4, 0, 0, 4 * below(r, 9));
		} else {
			w[n++] = enc(0x18, 1, 1, 0, below(r, FUZZ_N_MAPS * 8 + 1) / 8); /* r1 = map */
			w[n++] = 0;
			w[n++] = enc(0xbf, 2, 10, 0, 0);                   /* r2 = key */
			w[n++] = enc(0x07, 2, 0, 0, -8 * (int)(1 + below(r, 4)));
			w[n++] = enc(0xbf, 3, 10, 0, 0);                   /* r3 = value */
			w[n++] = enc(0x07, 3, 0, 0, -8 * (int)(1 + below(r, 8)));
			w[n++] = enc(0xb7, 4, 0, 0, below(r, 4));
		}
		w[n++] = enc(0x85, 0, 0, 0, id);
		return n;
	}
	if (k < 88) { /* local call, often recursive */
		w[0] = enc(0x85, 0, 1, 0, (int32_t)below(r, 8) - (int32_t)MIN(pc, 6u) - 1);
		return 1;
	}
	if (k < 93 && room >= 2) { /* LD_IMM64: plain, map or map value */
		uint8_t kind = below(r, 3);

		w[0] = enc(0x18, below(r, 10), kind, 0, kind ? (int32_t)below(r, FUZZ_N_MAPS) : rand_imm(r));
		w[1] = enc(0, 0, 0, 0, kind == 2 ? (int32_t)below(r, 80) : kind ? 0 : rand_imm(r));
		return 2;
	}
	/* a pointer into the stack in r7, or r0 = r7 as a fake lookup result */
	w[0] = below(r, 2) ? enc(0xbf, 7, 10, 0, 0) : enc(0x07, 7, 0, 0, -8 * (int)below(r, 70));
	return 1;
}

static uint32_t gen_prog(struct rng *r, uint64_t *w, uint32_t max)
{
	uint32_t n = 0, body;

	if (below(r, 4) == 0) { /* random words */
		n = 1 + below(r, max);
		for (uint32_t i = 0; i < n; i++)
			w[i] = rnd(r);
		if (below(r, 2))
			w[n - 1] = enc(0x95, 0, 0, 0, 0);
		return n;
	}
	w[n++] = enc(0xbf, 6, 1, 0, 0);       /* r6 = ctx */
	w[n++] = enc(0x79, 2, 1, 0, 0);       /* r2 = data */
	w[n++] = enc(0x79, 3, 1, 8, 0);       /* r3 = data_end */
	body = below(r, max > 5 ? max - 5 : 1);
	while (n < 3 + body) {
		uint32_t room = max - 2 - n;

		if (room < 1)
			break;
		n += gen_step(r, w + n, room, n);
		if (n > max - 2)
			n = max - 2;
	}
	w[n++] = enc(0xb7, 0, 0, 0, below(r, 6));
	w[n++] = enc(0x95, 0, 0, 0, 0);
	if (below(r, 10) == 0) /* a mutation */
		w[below(r, n)] ^= 1ull << below(r, 64);
	return n;
}

static int guards_ok(const uint8_t *g, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (g[i] != FUZZ_GUARD_BYTE)
			return 0;
	return 1;
}

static void count_fault(struct dp_fuzz_stats *st, int fault)
{
	switch (fault) {
	case 0: st->ok++; break;
	case -EFAULT: st->fault_efault++; break;
	case -E2BIG: st->fault_e2big++; break;
	case -EINVAL: st->fault_einval++; break;
	case -ENOSPC: st->fault_enospc++; break;
	}
}

int dp_fuzz_batch(uint64_t seed, uint32_t n_programs, uint32_t max_insns,
		  struct dp_fuzz_stats *out)
{
	static const struct dp_map_def defs[FUZZ_N_MAPS] = {
		{ DP_MAP_ARRAY, 4, 16, 4 },
		{ DP_MAP_HASH, 8, 16, 8 },
		{ DP_MAP_RINGBUF, 0, 0, 256 },
		{ DP_MAP_DEVMAP, 4, 4, 4 },
	};
	const uint32_t buf_len = FUZZ_ROOM + FUZZ_MAX_PKT + FUZZ_ROOM;
	const uint32_t area_len = FUZZ_GUARD + buf_len + FUZZ_GUARD;
	struct rng r = { seed * 0x9e3779b97f4a7c15ull + 1 };
	dp_map_t *maps[FUZZ_N_MAPS] = { 0 };
	struct dp_prog_result res;
	uint8_t *area = NULL, *buf, rb[256];
	uint64_t *words = NULL;
	char err[128];
	int ret = -ENOMEM;

	if (!max_insns || max_insns > DP_BPF_MAX_INSNS)
		return -EINVAL;
	if (max_insns < 8)
		max_insns = 8;
	memset(out, 0, sizeof(*out));
	words = malloc(sizeof(*words) * max_insns);
	area = malloc(area_len);
	if (!words || !area)
		goto out;
	buf = area + FUZZ_GUARD;
	for (int i = 0; i < FUZZ_N_MAPS; i++) {
		ret = dp_map_create(&defs[i], &maps[i]);
		if (ret)
			goto out;
	}
	{
		uint32_t key = 1, val = 7;

		dp_map_update(maps[3], &key, &val, 0);
	}

	for (uint32_t i = 0; i < n_programs; i++) {
		uint32_t n = gen_prog(&r, words, max_insns);
		dp_prog_t *p;

		out->programs++;
		if (dp_prog_load(words, n, maps, FUZZ_N_MAPS, FUZZ_BUDGET, err, sizeof(err), &p))
			continue;
		out->loaded++;
		for (int run = 0; run < 3; run++) {
			uint32_t len = below(&r, FUZZ_MAX_PKT + 1);

			memset(area, FUZZ_GUARD_BYTE, area_len);
			for (uint32_t j = 0; j < len; j++)
				buf[FUZZ_ROOM + j] = (uint8_t)rnd(&r);
			if (run < 2) {
				dp_prog_run_xdp(p, buf, buf_len, FUZZ_ROOM, len, 1, 0, &res);
				if (res.data_off > buf_len || res.len > buf_len - res.data_off ||
				    (!res.fault && res.len < MIN(len, 14u)))
					out->bad_results++;
			} else {
				dp_prog_run_raw(p, buf + FUZZ_ROOM, len, &res);
				/* raw mode may only touch mem itself */
				if (!guards_ok(buf, FUZZ_ROOM) ||
				    !guards_ok(buf + FUZZ_ROOM + len, buf_len - FUZZ_ROOM - len))
					out->guard_violations++;
			}
			if (!guards_ok(area, FUZZ_GUARD) || !guards_ok(buf + buf_len, FUZZ_GUARD))
				out->guard_violations++;
			out->runs++;
			out->insns += res.insns;
			count_fault(out, res.fault);
		}
		/* keep the ring from filling up for good */
		while (dp_ringbuf_read(maps[2], rb, sizeof(rb)) > 0)
			;
		dp_prog_free(p);
	}
	ret = 0;
out:
	for (int i = 0; i < FUZZ_N_MAPS; i++)
		dp_map_free(maps[i]);
	free(area);
	free(words);
	return ret;
}
