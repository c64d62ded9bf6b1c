/* policy.h - scheduling policies behind one interface.
 *
 * The unit of scheduling is a *turn*: the policy picks a tenant and the
 * loop runs its packets in slices, asking the policy before each slice
 * whether the turn goes on (take()). A slice is at most as many packets as
 * the tenant's handler can run in quantum_cycles by its static per-packet
 * bound (one packet when the handler has no bound), which caps the time
 * between two decisions.
 *
 * Each budget policy is fair queuing and a rate limit in one currency:
 * tenants take turns round-robin, a turn lasts one quantum of the currency
 * (cycles: quantum_cycles of time; pkt_rate: one packet; byte_rate: until
 * one MTU of bytes is reached, so up to a packet more, with no deficit
 * carried to the next turn), and a tenant whose bucket of that currency is
 * empty waits. So the experiments compare currencies and nothing else;
 * fifo, the baseline, serves packets in arrival order. A turn on lent time
 * (work-conserving mode) lasts one quantum too.
 *
 * The policy never reads the clock itself (the loop passes `now`), so the
 * same code runs under the virtual clock of dp_sched_simulate(). */
#ifndef ISOLANE_POLICY_H
#define ISOLANE_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "isolane_dp.h"

struct tenant;
struct sched;

/* what the current turn has used so far; cycles are measured, or for
 * bounded handlers run since the last clock reading, estimated from
 * their static bound (an upper estimate) */
struct turn {
	uint32_t pkts;
	uint32_t bytes;
	uint64_t cycles;
};

#define PKT_QUANTUM 1u     /* pkt_rate: packets per turn */
#define BYTE_QUANTUM 1514u /* byte_rate: bytes per turn, one Ethernet MTU */

struct sched_ops {
	const char *name;
	/**
	 * enqueued() - a packet of @t entered its queue. Called once per
	 * packet, in arrival order.
	 */
	void (*enqueued)(struct sched *s, struct tenant *t);
	/**
	 * pick() - the tenant whose turn it is, or NULL when no tenant may run.
	 * Sets *@lent when the turn runs on idle time lent to the tenant
	 * (work-conserving mode) rather than on its own budget.
	 */
	struct tenant *(*pick)(struct sched *s, bool *lent);
	/**
	 * take() - how many packets (0..@max) of @t, the tenant pick() chose,
	 * the next slice of its turn runs, given what the turn has @used so
	 * far (the first slice gets at least one); 0 ends the turn. The loop
	 * then pops exactly that many.
	 */
	uint32_t (*take)(struct sched *s, struct tenant *t, bool lent, const struct turn *used,
			 uint32_t max);
	/**
	 * charge() - @t consumed @cycles of the core on @pkts packets of
	 * @bytes bytes (pkts is 0 for work outside its handler, such as
	 * classifying a packet its full queue then dropped).
	 */
	void (*charge)(struct sched *s, struct tenant *t, uint64_t cycles, uint32_t pkts,
		       uint32_t bytes);
	/**
	 * turn_done() - @t's turn is over (and charged, unless @lent); the
	 * policy requeues @t if it still has backlog.
	 */
	void (*turn_done)(struct sched *s, struct tenant *t, bool lent);
	/**
	 * refill() - credit for the time since the last refill, at @now.
	 */
	void (*refill)(struct sched *s, uint64_t now);
};

/* a ring of tenant ids; fifo uses one slot per queued packet, the budget
 * policies one per backlogged tenant */
struct id_ring {
	uint32_t head, tail, mask;
	uint16_t *ids;
};

#define SCHED_ORDER_CAP DP_QUEUE_SLOTS /* fifo: one slot per queued packet */

struct sched {
	const struct sched_ops *ops;
	struct tenant **tenants; /* indexed by tenant id */
	uint16_t ids[DP_MAX_TENANTS]; /* the tenants present, for refill */
	uint32_t n_ids;
	uint32_t policy;
	bool work_conserving;
	uint64_t quantum_cycles; /* cycles: length of a turn */
	uint64_t refill_cycles;
	uint64_t last_refill;
	struct id_ring order;  /* fifo: tenant of every queued packet, oldest first */
	struct id_ring active; /* budget policies: funded tenants with backlog */
	struct id_ring broke;  /* budget policies: unfunded tenants with backlog */
};

int sched_init(struct sched *s, uint32_t policy, bool work_conserving, uint64_t quantum_cycles,
	       uint64_t refill_cycles, struct tenant **tenants, uint64_t now);
void sched_fini(struct sched *s);
/* a tenant joined (its slot in tenants[] is already set) */
void sched_tenant_added(struct sched *s, struct tenant *t);
/* a tenant leaves (its queue is being emptied, its slot cleared): its id
 * goes from the refill list and from every ring (fifo: one entry per queued
 * packet; budget policies: its place in the active or broke ring), the
 * others' entries keep their order */
void sched_tenant_removed(struct sched *s, struct tenant *t);
/* (re)derives a tenant's bucket from its config for the policy's currency;
 * fresh: start full, else keep the balance (and any debt) */
void sched_tenant_budget(struct sched *s, struct tenant *t, bool fresh);

extern const struct sched_ops sched_fifo_ops;
extern const struct sched_ops sched_bucket_ops;

#endif
