/* tqueue.h - a tenant's bounded packet queue, owned by the fast-path thread
 * alone (no atomics). */
#ifndef ISOLANE_TQUEUE_H
#define ISOLANE_TQUEUE_H

#include <stdint.h>

#include "compiler.h"
#include "pkt.h"

struct tqueue {
	uint32_t head, tail, mask;
	struct pkt **slots;
};

static always_inline uint32_t tq_len(const struct tqueue *q)
{
	return q->tail - q->head;
}

static always_inline int tq_push(struct tqueue *q, struct pkt *p)
{
	if (unlikely(q->tail - q->head > q->mask))
		return -1;
	q->slots[q->tail++ & q->mask] = p;
	return 0;
}

/* the length as another thread sees it: head first, so a concurrent pop
 * cannot make it look negative (it may be stale, never absurd) */
static inline uint32_t tq_len_racy(const struct tqueue *q)
{
	uint32_t head = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
	uint32_t len = __atomic_load_n(&q->tail, __ATOMIC_RELAXED) - head;

	return len > q->mask + 1 ? q->mask + 1 : len;
}

static always_inline struct pkt *tq_pop(struct tqueue *q)
{
	return q->slots[q->head++ & q->mask];
}

#endif
