/* policy.h - scheduling policies behind one interface.
 *
 * The loop asks the policy which tenant serves the next packet and tells it
 * what that packet cost; the policy never reads the clock itself (the loop
 * passes `now`), so the same code runs under the virtual clock of
 * dp_sched_simulate() in the property tests. */
#ifndef ISOLANE_POLICY_H
#define ISOLANE_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "isolane_dp.h"

struct tenant;
struct sched;

struct sched_ops {
	const char *name;
	/**
	 * enqueued() - a packet of @t entered its (previously possibly empty)
	 * queue. Called once per packet, in arrival order.
	 */
	void (*enqueued)(struct sched *s, struct tenant *t);
	/**
	 * pick() - the tenant whose head packet runs next, or NULL when no
	 * tenant may run. Sets *@lent when the tenant is served on idle time
	 * lent to it (work-conserving mode) rather than on its own budget.
	 */
	struct tenant *(*pick)(struct sched *s, bool *lent);
	/**
	 * charge() - @t consumed @cycles of the core on @pkts packets of
	 * @bytes bytes (pkts is 0 for batch work such as classification).
	 */
	void (*charge)(struct sched *s, struct tenant *t, uint64_t cycles, uint32_t pkts,
		       uint32_t bytes);
	/**
	 * served() - the packet that pick() chose has been handled in @cycles
	 * (0 without accounting); the policy decides whether @t's turn goes
	 * on and requeues it if it still has backlog.
	 */
	void (*served)(struct sched *s, struct tenant *t, bool lent, uint64_t cycles);
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

#define SCHED_ORDER_CAP 65536u /* sum of all tenants' queue capacities */
#define VISIT_MAX_PKTS 32u

struct sched {
	const struct sched_ops *ops;
	struct tenant **tenants; /* indexed by tenant id */
	uint16_t ids[DP_MAX_TENANTS]; /* the tenants present, for refill */
	uint32_t n_ids;
	uint32_t policy;
	bool work_conserving;
	uint64_t refill_cycles;
	uint64_t last_refill;
	/* a turn: the front tenant keeps the core until it has used
	 * quantum_cycles (or VISIT_MAX_PKTS packets), runs dry or goes broke,
	 * so turns are equal in time, not in packets */
	uint64_t quantum_cycles;
	uint64_t visit_cycles;
	uint32_t visit_pkts;
	int32_t visit_tenant;
	struct id_ring order;  /* fifo: tenant of every queued packet, oldest first */
	struct id_ring active; /* budget policies: funded tenants with backlog */
	struct id_ring broke;  /* budget policies: unfunded tenants with backlog */
};

int sched_init(struct sched *s, uint32_t policy, bool work_conserving, uint64_t refill_cycles,
	       uint64_t quantum_cycles, struct tenant **tenants, uint64_t now);
void sched_fini(struct sched *s);
/* a tenant joined (its slot in tenants[] is already set) */
void sched_tenant_added(struct sched *s, struct tenant *t);
/* (re)derives a tenant's bucket from its config for the policy's currency;
 * fresh: start full, else keep the balance (and any debt) */
void sched_tenant_budget(struct sched *s, struct tenant *t, bool fresh);

extern const struct sched_ops sched_fifo_ops;
extern const struct sched_ops sched_bucket_ops;

#endif
