/* maps.h - userspace BPF maps with the kernel's semantics.
 *
 * Everything a map will ever hold is allocated when it is created, so the
 * run path (map helpers called by a program) never allocates: a HASH map
 * preallocates max_entries elements on a free list, an ARRAY map its whole
 * value area, a RINGBUF its ring.
 *
 * Value storage is one contiguous area per map of max_entries slots of
 * `stride` bytes (value_size rounded up to 8, as the kernel's
 * round_up(value_size, 8)); the interpreter bounds-checks a program's
 * access to map memory against exactly value_size bytes of one slot.
 *
 * Concurrency: one fast-path thread runs programs; the control plane may
 * read and update maps at the same time. Values are copied without locks
 * (as the kernel does for lookups from userspace), ring positions use
 * acquire/release. Hash insert/delete from two threads at once is not
 * supported (the control plane goes through the command ring for that).
 */
#ifndef ISOLANE_MAPS_H
#define ISOLANE_MAPS_H

#include <stdint.h>

#include "compiler.h"
#include "isolane_dp.h"

#define MAP_NIL UINT32_MAX

struct hash_elem {
	uint32_t next;   /* next element in the bucket chain, or the free list */
	uint32_t hash;
	uint32_t used;
	uint32_t _pad;
};

struct dp_map {
	uint32_t type;        /* enum dp_map_type */
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	uint32_t stride;      /* bytes between value slots */
	uint32_t rdonly_prog; /* programs may not write values (DEVMAP, XSKMAP) */
	uint64_t stride_magic;/* fastmod reciprocal of stride (see map_value_ok) */
	uint8_t *values;      /* max_entries * stride bytes */
	uint64_t values_len;
	/* HASH */
	uint8_t *keys;        /* max_entries * key_size */
	struct hash_elem *elems;
	uint32_t *buckets;    /* n_buckets heads, MAP_NIL when empty */
	uint32_t n_buckets;   /* power of two */
	uint32_t free_head;
	uint32_t count;
	/* ARRAY-like with empty slots (DEVMAP, XSKMAP) */
	uint8_t *present;
	/* RINGBUF: records of an 8-byte header (u32 length, u32 0) and the
	 * data, padded to 8 bytes; positions count bytes forever */
	uint8_t *ring;
	uint64_t ring_mask;
	uint64_t prod_pos;
	uint64_t cons_pos;
};

#define RINGBUF_HDR 8u

/* the run-path entry points the interpreter's helpers use */
void *map_lookup(struct dp_map *m, const void *key);
int map_update(struct dp_map *m, const void *key, const void *value, uint64_t flags);
int map_delete(struct dp_map *m, const void *key);
int map_ringbuf_output(struct dp_map *m, const void *data, uint64_t size);

/* 1 when [addr, addr+size) lies inside one value slot of m */
static always_inline int map_value_ok(const struct dp_map *m, uint64_t addr, uint64_t size)
{
	uint64_t off = addr - (uint64_t)(uintptr_t)m->values;
	uint32_t in_slot;

	if (off >= m->values_len || size > m->value_size)
		return 0;
	/* Lemire's fastmod: exact for 32-bit dividends and divisors */
	in_slot = (uint32_t)(((unsigned __int128)(m->stride_magic * (uint32_t)off) * m->stride) >> 64);
	return in_slot + size <= m->value_size;
}

#endif
