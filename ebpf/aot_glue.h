/* aot_glue.h - the handler glue every jointly compiled (aot) tenant program
 * is compiled with (ebpf/aot.py): memory access macros, the run state and
 * the run-time checks of checked mode, which are the interpreter's
 * (datapath/src/ebpf_vm.c: mem_ok, map_arg, call_helper) line for line.
 *
 * It is compiled into each generated shared object, never into the
 * datapath; maps.h (datapath/src) gives the map layout the checks and
 * BPF_PSEUDO_MAP_VALUE need. Its text is part of the aot cache key.
 */
#ifndef ISOLANE_AOT_GLUE_H
#define ISOLANE_AOT_GLUE_H

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "isolane_dp.h"
#include "handler.h" /* the fast path's handler and frame (name_run) */
#include "maps.h"

#define AOT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define AOT_LIKELY(x) __builtin_expect(!!(x), 1)
#define AOT_INLINE static inline __attribute__((__always_inline__))

#define AOT_LD(T, a) ({ T _v; __builtin_memcpy(&_v, (const void *)(uintptr_t)(a), sizeof(T)); _v; })
#define AOT_ST(T, a, v) do { T _v = (T)(v); \
	__builtin_memcpy((void *)(uintptr_t)(a), &_v, sizeof(T)); } while (0)

/* unchecked mode: base register + constant offset as pointer arithmetic, so
 * the compiler sees accesses through one base at known distances (and can
 * merge byte loads and stores into wide ones) */
#define AOT_PTR(b, o) ((uint8_t *)(uintptr_t)(b) + (o))
#define AOT_LDP(T, b, o) ({ T _v; __builtin_memcpy(&_v, AOT_PTR(b, o), sizeof(T)); _v; })
#define AOT_STP(T, b, o, v) do { T _v = (T)(v); \
	__builtin_memcpy(AOT_PTR(b, o), &_v, sizeof(T)); } while (0)

#define AOT_ETH_HLEN 14
#define AOT_XDP_REDIRECT 4
#define AOT_FAULT_VERDICT 255u

#define AOT_ACC_READ 0
#define AOT_ACC_WRITE 1
#define AOT_ACC_ATOMIC 2
#define AOT_ACC_HELPER 3

/* what a run may touch besides its registers: the interpreter's ebpf_mem
 * and vm_run in one */
struct aot_run {
	struct dp_xdp_ctx ctx;      /* raw mode: data/data_end are the memory */
	uint64_t buf_lo, buf_hi;    /* XDP: where adjust_head/tail may move the packet */
	uint64_t stack_lo, stack_hi;/* checked: the current frame's bottom, frame 0's top */
	const struct dp_aot_env *env;
	uint32_t xdp;
	uint32_t redirect;
};

AOT_INLINE uint64_t aot_errret(int64_t e)
{
	return (uint64_t)e;
}

AOT_INLINE int aot_in_range(uint64_t addr, uint64_t size, uint64_t lo, uint64_t hi)
{
	uint64_t off = addr - lo;

	return off < hi - lo && size <= hi - lo - off;
}

static __attribute__((__noinline__)) int aot_mem_ok_slow(const struct aot_run *s, uint64_t addr,
						     uint64_t size, int acc)
{
	uint64_t ctx = (uint64_t)(uintptr_t)&s->ctx;

	if (acc == AOT_ACC_READ && s->xdp && addr - ctx < sizeof(struct dp_xdp_ctx)) {
		uint64_t off = addr - ctx;

		return (size == 8 && off <= 16 && !(off & 7)) ||
		       (size == 4 && off >= 24 && off <= 32 && !(off & 3));
	}
	for (uint32_t i = 0; i < s->env->n_maps; i++) {
		const struct dp_map *m = s->env->maps[i];

		if (m->values && map_value_ok(m, addr, size))
			return acc == AOT_ACC_READ || acc == AOT_ACC_HELPER || !m->rdonly_prog;
	}
	return 0;
}

AOT_INLINE int aot_mem_ok(const struct aot_run *s, uint64_t addr, uint64_t size, int acc)
{
	if (AOT_LIKELY(aot_in_range(addr, size, s->stack_lo, s->stack_hi)))
		return 1;
	if (aot_in_range(addr, size, s->ctx.data, s->ctx.data_end) && (acc != AOT_ACC_ATOMIC || !s->xdp))
		return 1;
	return aot_mem_ok_slow(s, addr, size, acc);
}

/* a program's map "pointer" (LD_IMM64 src 1) is the address of its slot in env->maps */
AOT_INLINE struct dp_map *aot_map_arg(const struct aot_run *s, uint64_t v)
{
	uint64_t off = v - (uint64_t)(uintptr_t)s->env->maps;

	if (off >= (uint64_t)s->env->n_maps * sizeof(s->env->maps[0]) || (off & 7))
		return NULL;
	return s->env->maps[off / sizeof(s->env->maps[0])];
}

AOT_INLINE struct dp_map *aot_map_of(uint64_t v)
{
	return *(struct dp_map *const *)(uintptr_t)v;
}

/* ---- XDP head/tail adjustment (both modes: the limits are the datapath's) */

AOT_INLINE uint64_t aot_adjust_head_s(uint64_t *data, uint64_t *end, uint64_t *meta,
				      uint64_t buf_lo, uint64_t buf_hi, int32_t delta)
{
	int64_t off = (int64_t)(*data - buf_lo) + delta;

	if (off < 0 || off > (int64_t)(*end - buf_lo) - AOT_ETH_HLEN)
		return aot_errret(-EINVAL);
	*data = buf_lo + off;
	*meta = *data;
	return 0;
}

AOT_INLINE uint64_t aot_adjust_tail_s(uint64_t *data, uint64_t *end, uint64_t *meta,
				      uint64_t buf_lo, uint64_t buf_hi, int32_t d)
{
	int64_t delta = d;

	if (delta > (int64_t)(buf_hi - *end) || delta < -(int64_t)(*end - *data) + AOT_ETH_HLEN)
		return aot_errret(-EINVAL);
	if (delta > 0)
		memset((void *)(uintptr_t)*end, 0, delta);
	*end += delta;
	return 0;
}

AOT_INLINE uint64_t aot_adjust_head(struct aot_run *s, int32_t delta)
{
	int64_t off = (int64_t)(s->ctx.data - s->buf_lo) + delta;

	if (off < 0 || off > (int64_t)(s->ctx.data_end - s->buf_lo) - AOT_ETH_HLEN)
		return aot_errret(-EINVAL);
	s->ctx.data = s->buf_lo + off;
	s->ctx.data_meta = s->ctx.data;
	return 0;
}

AOT_INLINE uint64_t aot_adjust_tail(struct aot_run *s, int32_t d)
{
	int64_t delta = d;

	if (delta > (int64_t)(s->buf_hi - s->ctx.data_end) ||
	    delta < -(int64_t)(s->ctx.data_end - s->ctx.data) + AOT_ETH_HLEN)
		return aot_errret(-EINVAL);
	if (delta > 0)
		memset((void *)(uintptr_t)s->ctx.data_end, 0, delta);
	s->ctx.data_end += delta;
	return 0;
}

/* ---- checked helpers: the interpreter's call_helper; *fault on a bad argument */

static __attribute__((__noinline__)) uint64_t aot_call_checked(struct aot_run *s, int32_t id,
							   const uint64_t *r, int32_t *fault)
{
	const struct dp_aot_env *env = s->env;
	struct dp_map *map;

	switch (id) {
	case 1: case 2: case 3:
		map = aot_map_arg(s, r[1]);
		if (!map)
			goto bad_call;
		if (map->type == DP_MAP_RINGBUF)
			return id == 1 ? 0 : aot_errret(-EINVAL);
		if (!aot_mem_ok(s, r[2], map->key_size, AOT_ACC_HELPER))
			goto bad_mem;
		if (id == 1)
			return (uint64_t)(uintptr_t)env->map_lookup(map, (const void *)(uintptr_t)r[2]);
		if (map->rdonly_prog)
			return aot_errret(-EINVAL);
		if (id == 3)
			return aot_errret(env->map_delete(map, (const void *)(uintptr_t)r[2]));
		if (!aot_mem_ok(s, r[3], map->value_size, AOT_ACC_HELPER))
			goto bad_mem;
		return aot_errret(env->map_update(map, (const void *)(uintptr_t)r[2],
						  (const void *)(uintptr_t)r[3], r[4]));
	case 5:
		return env->ktime_get_ns();
	case 28: {
		uint32_t from_size = (uint32_t)r[2], to_size = (uint32_t)r[4];

		if ((from_size && !aot_mem_ok(s, r[1], from_size, AOT_ACC_HELPER)) ||
		    (to_size && !aot_mem_ok(s, r[3], to_size, AOT_ACC_HELPER)))
			goto bad_mem;
		return env->csum_diff((const uint8_t *)(uintptr_t)r[1], from_size,
				      (const uint8_t *)(uintptr_t)r[3], to_size, (uint32_t)r[5]);
	}
	case 44:
		if (!s->xdp || r[1] != (uint64_t)(uintptr_t)&s->ctx)
			goto bad_call;
		return aot_adjust_head(s, (int32_t)r[2]);
	case 65:
		if (!s->xdp || r[1] != (uint64_t)(uintptr_t)&s->ctx)
			goto bad_call;
		return aot_adjust_tail(s, (int32_t)r[2]);
	case 51:
		map = aot_map_arg(s, r[1]);
		if (!map)
			goto bad_call;
		return (uint64_t)env->redirect_map(map, r[2], r[3], &s->redirect);
	case 130:
		map = aot_map_arg(s, r[1]);
		if (!map)
			goto bad_call;
		if (r[3] && !aot_mem_ok(s, r[2], r[3], AOT_ACC_HELPER))
			goto bad_mem;
		return aot_errret(env->ringbuf_output(map, (const void *)(uintptr_t)r[2], r[3], r[4]));
	}
bad_call:
	*fault = -EINVAL;
	return 0;
bad_mem:
	*fault = -EFAULT;
	return 0;
}

#endif
