/* spsc.h - single-producer single-consumer ring of pointers.
 *
 * Producer and consumer each own one cache line: the index they publish
 * and their cached copy of the other side's index, so a burst touches the
 * shared line once (the shape of AF_XDP's rings and DPDK's rte_ring). */
#ifndef ISOLANE_SPSC_H
#define ISOLANE_SPSC_H

#include <stdint.h>
#include <stdlib.h>

#include "compiler.h"

struct spsc {
	uint32_t mask;
	void **slots;
	struct {
		uint32_t head;       /* published with release */
		uint32_t tail_cache; /* last tail seen */
	} prod cacheline_aligned;
	struct {
		uint32_t tail;
		uint32_t head_cache;
	} cons cacheline_aligned;
};

/* empties the ring; neither side may be using it */
static inline void spsc_reset(struct spsc *r)
{
	r->prod.head = r->prod.tail_cache = 0;
	r->cons.tail = r->cons.head_cache = 0;
}

/* size must be a power of two */
static inline int spsc_init(struct spsc *r, uint32_t size)
{
	if (size == 0 || (size & (size - 1)))
		return -22; /* -EINVAL */
	r->slots = calloc(size, sizeof(void *));
	if (!r->slots)
		return -12; /* -ENOMEM */
	r->mask = size - 1;
	spsc_reset(r);
	return 0;
}

/* free slots, as the producer sees them */
static inline uint32_t spsc_room(struct spsc *r)
{
	return r->mask + 1 - (r->prod.head - __atomic_load_n(&r->cons.tail, __ATOMIC_ACQUIRE));
}

static inline void spsc_fini(struct spsc *r)
{
	free(r->slots);
	r->slots = NULL;
}

static always_inline uint32_t spsc_push(struct spsc *r, void *const *items, uint32_t n)
{
	uint32_t head = r->prod.head;
	uint32_t room = r->mask + 1 - (head - r->prod.tail_cache);

	if (room < n) {
		r->prod.tail_cache = __atomic_load_n(&r->cons.tail, __ATOMIC_ACQUIRE);
		room = r->mask + 1 - (head - r->prod.tail_cache);
		n = MIN(n, room);
	}
	for (uint32_t i = 0; i < n; i++)
		r->slots[(head + i) & r->mask] = items[i];
	__atomic_store_n(&r->prod.head, head + n, __ATOMIC_RELEASE);
	return n;
}

static always_inline uint32_t spsc_pop(struct spsc *r, void **items, uint32_t n)
{
	uint32_t tail = r->cons.tail;
	uint32_t avail = r->cons.head_cache - tail;

	if (avail < n) {
		r->cons.head_cache = __atomic_load_n(&r->prod.head, __ATOMIC_ACQUIRE);
		avail = r->cons.head_cache - tail;
		n = MIN(n, avail);
	}
	for (uint32_t i = 0; i < n; i++)
		items[i] = r->slots[(tail + i) & r->mask];
	__atomic_store_n(&r->cons.tail, tail + n, __ATOMIC_RELEASE);
	return n;
}

#endif
