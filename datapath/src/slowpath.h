/* slowpath.h - a tenant's slow path: the rings between the loop and a
 * reader/sender outside it (see the slow-path section of isolane_dp.h).
 *
 * Frames are copied, never handed over: a slow reader then holds slots of
 * its own, not the backend's frames, so it cannot starve the RX pool (an
 * AF_XDP fill ring) of other tenants, and nothing needs returning when the
 * slow path goes away. Each direction is two SPSC rings over one set of
 * slots: full slots one way, empty ones back. */
#ifndef ISOLANE_SLOWPATH_H
#define ISOLANE_SLOWPATH_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "compiler.h"
#include "pkt.h"
#include "spsc.h"

#define SP_TX_BATCH 32u /* frames one tenant sends per loop iteration at most */

struct sp_slot {
	uint32_t len;
	uint32_t _pad;
	uint8_t data[DP_SLOWPATH_FRAME_MAX];
};

struct slowpath {
	uint32_t depth;
	struct sp_slot *slots; /* 2 * depth: RX slots, then TX slots */
	struct spsc rx;        /* loop -> reader: passed packets */
	struct spsc rx_free;   /* reader -> loop: emptied RX slots */
	struct spsc tx;        /* sender -> loop: frames to transmit */
	struct spsc tx_free;   /* loop -> sender: emptied TX slots */
};

struct slowpath *slowpath_new(uint32_t depth, int *err);
void slowpath_free(struct slowpath *sp);

/* reader and sender side (one thread at a time: the caller serialises) */
int slowpath_read(struct slowpath *sp, uint8_t *buf, uint32_t cap);
int slowpath_send(struct slowpath *sp, const uint8_t *frame, uint32_t len);

/* entries a consumer would find in r (racy from any other thread) */
static inline uint32_t sp_ring_count(struct spsc *r)
{
	return __atomic_load_n(&r->prod.head, __ATOMIC_ACQUIRE) -
	       __atomic_load_n(&r->cons.tail, __ATOMIC_ACQUIRE);
}

/* loop side: copies a passed packet into the RX ring; false when it is full */
static always_inline bool slowpath_deliver(struct slowpath *sp, struct pkt *p)
{
	struct sp_slot *s;

	if (unlikely(!spsc_pop(&sp->rx_free, (void **)&s, 1)))
		return false;
	s->len = p->len;
	memcpy(s->data, pkt_data(p), p->len);
	spsc_push(&sp->rx, (void *const *)&s, 1);
	return true;
}

#endif
