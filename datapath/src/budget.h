/* budget.h - a signed token bucket, the one mechanism behind every
 * budget policy; only the currency differs (cycles, packets or bytes).
 *
 * The bucket is split the way Virtuoso splits it so a second fast-path
 * core can be added without changing the arithmetic: refill adds credit to
 * a shared pool; each core spends from its own cache and, once the cache
 * is used up, takes the whole pool with one atomic exchange. Balances are
 * fixed point (BAL_SHIFT fraction bits) so slow rates do not lose their
 * fractions at every refill. The cache may go negative: an overrun is debt
 * that later credit pays back, never forgiven. */
#ifndef ISOLANE_BUDGET_H
#define ISOLANE_BUDGET_H

#include <stdint.h>

#include "compiler.h"

#define BAL_SHIFT 16

struct budget_shared {
	int64_t credit;     /* refilled, not yet taken by a core (atomic) */
	int64_t cap;        /* most credit the tenant may hold, fixed point */
	uint64_t rate_q32;  /* units per TSC cycle, 32.32 fixed point */
};

struct budget_cache {
	int64_t balance; /* this core's, fixed point; may be negative */
};

/* A new bucket starts full; a reconfigured one keeps its balance (debt
 * included), clamped to the new cap. */
static inline void budget_config(struct budget_shared *b, struct budget_cache *c,
				 double units_per_cycle, double cap_units, int fresh)
{
	b->rate_q32 = (uint64_t)(units_per_cycle * 4294967296.0);
	b->cap = (int64_t)(cap_units * (double)(1 << BAL_SHIFT));
	if (fresh) {
		b->credit = 0;
		c->balance = b->cap;
	} else {
		c->balance = MIN(c->balance + b->credit, b->cap);
		b->credit = 0;
	}
}

/* Adds dt cycles' worth of credit. What would lift credit plus the cores'
 * balances over the cap is forfeited, in every mode: a tenant cannot bank
 * more than its cap (work-conserving mode lends idle *time*, not credit).
 * Returns the units forfeited, for the tenant's stats. */
static always_inline uint64_t budget_refill(struct budget_shared *b, int64_t cache_balances,
					    uint64_t dt)
{
	unsigned __int128 add = ((unsigned __int128)dt * b->rate_q32) >> (32 - BAL_SHIFT);
	int64_t credit = __atomic_load_n(&b->credit, __ATOMIC_RELAXED);
	int64_t room = b->cap - cache_balances - credit;
	uint64_t lost = 0;

	if (room < 0)
		room = 0;
	if (add > (unsigned __int128)room) {
		lost = (uint64_t)MIN(add - room, (unsigned __int128)INT64_MAX) >> BAL_SHIFT;
		add = room;
	}
	if (add)
		__atomic_fetch_add(&b->credit, (int64_t)add, __ATOMIC_RELAXED);
	return lost;
}

/* true when this core may spend for the tenant: its cache holds credit,
 * topped up from the shared pool when it had run dry */
static always_inline int budget_funded(struct budget_shared *b, struct budget_cache *c)
{
	if (likely(c->balance > 0))
		return 1;
	if (__atomic_load_n(&b->credit, __ATOMIC_RELAXED) > 0)
		c->balance += __atomic_exchange_n(&b->credit, 0, __ATOMIC_ACQ_REL);
	return c->balance > 0;
}

static always_inline void budget_spend(struct budget_cache *c, uint64_t units)
{
	c->balance -= (int64_t)(units << BAL_SHIFT);
}

/* balance of the tenant as a whole, in units */
static inline double budget_units(const struct budget_shared *b, const struct budget_cache *c)
{
	return (double)(c->balance + __atomic_load_n(&b->credit, __ATOMIC_RELAXED)) /
	       (double)(1 << BAL_SHIFT);
}

#endif
