/* policy.c - the policies: fifo (arrival order, no isolation) and the
 * budget policies pkt_rate, byte_rate and cycles, which share one
 * signed-token-bucket scheduler and differ only in what a packet costs.
 *
 * Budget policies serve backlogged, funded tenants round-robin, a turn
 * each, turns being one quantum of the policy's currency (see policy.h):
 * under cycles a tenant waits for at most about one quantum of time of
 * each other tenant (the non-preemptive limit), however cheap its own
 * packets are. A tenant found broke moves to the broke ring
 * and is not looked at again until a refill funds it; in work-conserving
 * mode broke tenants are served, uncharged, only when no funded tenant has
 * backlog: time nobody else wanted is lent, never taken from a funded
 * tenant. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "tsc.h"

static int ring_init(struct id_ring *r, uint32_t size)
{
	r->ids = calloc(size, sizeof(*r->ids));
	r->head = r->tail = 0;
	r->mask = size - 1;
	return r->ids ? 0 : -ENOMEM;
}

static always_inline bool ring_empty(const struct id_ring *r)
{
	return r->head == r->tail;
}

static always_inline void ring_push(struct id_ring *r, uint16_t id)
{
	r->ids[r->tail++ & r->mask] = id;
}

static always_inline uint16_t ring_front(const struct id_ring *r)
{
	return r->ids[r->head & r->mask];
}

static always_inline uint16_t ring_pop(struct id_ring *r)
{
	return r->ids[r->head++ & r->mask];
}

/* drops every entry of id, keeping the others in order (in place: the
 * write index never passes the read index) */
static void ring_remove(struct id_ring *r, uint16_t id)
{
	uint32_t w = r->head;

	for (uint32_t i = r->head; i != r->tail; i++) {
		uint16_t v = r->ids[i & r->mask];

		if (v != id)
			r->ids[w++ & r->mask] = v;
	}
	r->tail = w;
}

/* ---- fifo: one arrival order over all tenants' queues ---- */

static void fifo_enqueued(struct sched *s, struct tenant *t)
{
	ring_push(&s->order, (uint16_t)t->id);
}

static struct tenant *fifo_pick(struct sched *s, bool *lent)
{
	*lent = false;
	return ring_empty(&s->order) ? NULL : s->tenants[ring_front(&s->order)];
}

/* the run of t's packets at the head of the arrival order */
static uint32_t fifo_take(struct sched *s, struct tenant *t, bool lent, const struct turn *used,
			  uint32_t max)
{
	uint32_t n = 0;

	while (n < max && !ring_empty(&s->order) && ring_front(&s->order) == t->id) {
		ring_pop(&s->order);
		n++;
	}
	return n;
}

static void fifo_charge(struct sched *s, struct tenant *t, uint64_t cycles, uint32_t pkts,
			uint32_t bytes)
{
}

static void fifo_turn_done(struct sched *s, struct tenant *t, bool lent)
{
}

static void fifo_refill(struct sched *s, uint64_t now)
{
	s->last_refill = now;
}

const struct sched_ops sched_fifo_ops = {
	.name = "fifo",
	.enqueued = fifo_enqueued,
	.pick = fifo_pick,
	.take = fifo_take,
	.charge = fifo_charge,
	.turn_done = fifo_turn_done,
	.refill = fifo_refill,
};

/* ---- budget policies ---- */

static void bucket_enqueued(struct sched *s, struct tenant *t)
{
	if (!t->listed) {
		t->listed = true;
		ring_push(&s->active, (uint16_t)t->id);
	}
}

static struct tenant *bucket_pick(struct sched *s, bool *lent)
{
	*lent = false;
	while (!ring_empty(&s->active)) {
		struct tenant *t = s->tenants[ring_front(&s->active)];

		if (likely(budget_funded(&t->bucket, &t->cache)))
			return t;
		/* broke with backlog: park it until a refill funds it */
		ring_pop(&s->active);
		ring_push(&s->broke, (uint16_t)t->id);
		t->st.throttles++;
	}
	if (s->work_conserving && !ring_empty(&s->broke)) {
		*lent = true;
		return s->tenants[ring_front(&s->broke)];
	}
	return NULL;
}

static void bucket_charge(struct sched *s, struct tenant *t, uint64_t cycles, uint32_t pkts,
			  uint32_t bytes)
{
	uint64_t units = s->policy == DP_POLICY_CYCLES ? cycles
			 : s->policy == DP_POLICY_PKT_RATE ? pkts
							   : bytes;
	budget_spend(&t->cache, units);
}

/* The turn goes on while it is under its quantum and the tenant is funded
 * (on lent time: while no funded tenant waits, which the loop learns only
 * at its next RX stage). A slice may overdraw the budget; the overrun is
 * debt, repaid later. */
static uint32_t bucket_take(struct sched *s, struct tenant *t, bool lent, const struct turn *used,
			    uint32_t max)
{
	switch (s->policy) {
	case DP_POLICY_CYCLES:
		if (used->pkts && used->cycles >= s->quantum_cycles)
			return 0;
		break;
	case DP_POLICY_PKT_RATE:
		if (used->pkts >= PKT_QUANTUM)
			return 0;
		max = MIN(max, PKT_QUANTUM - used->pkts);
		break;
	default: /* bytes: one packet a slice, sizes are known only once popped */
		if (used->bytes >= BYTE_QUANTUM)
			return 0;
		max = 1;
	}
	if (lent ? !ring_empty(&s->active) : !budget_funded(&t->bucket, &t->cache))
		return 0;
	return MIN(max, tq_len(&t->q));
}

/* the tenant served sits at the front of its ring: it rotates to the
 * back, or leaves the ring when its queue ran empty */
static void bucket_turn_done(struct sched *s, struct tenant *t, bool lent)
{
	struct id_ring *r = lent ? &s->broke : &s->active;

	ring_pop(r);
	if (tq_len(&t->q))
		ring_push(r, (uint16_t)t->id);
	else
		t->listed = false;
}

static void bucket_refill(struct sched *s, uint64_t now)
{
	uint64_t dt = now - s->last_refill;
	uint32_t n;

	s->last_refill = now;
	for (uint32_t i = 0; i < s->n_ids; i++) {
		struct tenant *t = s->tenants[s->ids[i]];

		t->st.forfeited += budget_refill(&t->bucket, t->cache.balance, dt);
	}
	/* broke tenants that are funded again rejoin the round-robin */
	n = s->broke.tail - s->broke.head;
	while (n--) {
		struct tenant *t = s->tenants[ring_pop(&s->broke)];

		if (!tq_len(&t->q))
			t->listed = false;
		else if (budget_funded(&t->bucket, &t->cache))
			ring_push(&s->active, (uint16_t)t->id);
		else
			ring_push(&s->broke, (uint16_t)t->id);
	}
}

const struct sched_ops sched_bucket_ops = {
	.name = "bucket",
	.enqueued = bucket_enqueued,
	.pick = bucket_pick,
	.take = bucket_take,
	.charge = bucket_charge,
	.turn_done = bucket_turn_done,
	.refill = bucket_refill,
};

void sched_tenant_added(struct sched *s, struct tenant *t)
{
	s->ids[s->n_ids++] = (uint16_t)t->id;
	sched_tenant_budget(s, t, true);
}

void sched_tenant_removed(struct sched *s, struct tenant *t)
{
	const uint16_t id = (uint16_t)t->id;

	for (uint32_t i = 0; i < s->n_ids; i++) {
		if (s->ids[i] == id) {
			s->ids[i] = s->ids[--s->n_ids];
			break;
		}
	}
	ring_remove(&s->order, id);
	ring_remove(&s->active, id);
	ring_remove(&s->broke, id);
	t->listed = false;
}

void sched_tenant_budget(struct sched *s, struct tenant *t, bool fresh)
{
	const struct dp_tenant_config *c = &t->cfg;
	double hz = tsc_hz();

	switch (s->policy) {
	case DP_POLICY_CYCLES:
		budget_config(&t->bucket, &t->cache, c->share, c->cap_us * hz / 1e6, fresh);
		break;
	case DP_POLICY_PKT_RATE:
		budget_config(&t->bucket, &t->cache, c->pkt_rate / hz, c->pkt_burst, fresh);
		break;
	case DP_POLICY_BYTE_RATE:
		budget_config(&t->bucket, &t->cache, c->byte_rate / hz, c->byte_burst, fresh);
		break;
	default:
		budget_config(&t->bucket, &t->cache, 0, 0, fresh);
	}
}

int sched_init(struct sched *s, uint32_t policy, bool work_conserving, uint64_t quantum_cycles,
	       uint64_t refill_cycles, struct tenant **tenants, uint64_t now)
{
	if (policy > DP_POLICY_CYCLES)
		return -EINVAL;
	s->ops = policy == DP_POLICY_FIFO ? &sched_fifo_ops : &sched_bucket_ops;
	s->tenants = tenants;
	s->n_ids = 0;
	s->policy = policy;
	s->work_conserving = work_conserving;
	s->quantum_cycles = quantum_cycles;
	s->refill_cycles = refill_cycles;
	s->last_refill = now;
	if (ring_init(&s->order, SCHED_ORDER_CAP) || ring_init(&s->active, DP_MAX_TENANTS) ||
	    ring_init(&s->broke, DP_MAX_TENANTS)) {
		sched_fini(s);
		return -ENOMEM;
	}
	return 0;
}

void sched_fini(struct sched *s)
{
	free(s->order.ids);
	free(s->active.ids);
	free(s->broke.ids);
	s->order.ids = s->active.ids = s->broke.ids = NULL;
}
