/* sim.c - drives the real scheduling policies on a virtual clock, without
 * packets or threads, so tests can check their properties exactly.
 *
 * Turns run as in loop.c's run_stage, with one difference: every slice is
 * charged at once and exactly (its cost is known), where the loop charges
 * cycles when a charge window closes, up to one run stage later. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static struct pkt sim_pkt = {.len = 64};

#define SIM_BACKLOG 64 /* packets kept queued for a backlogged tenant */

static bool backlogged(const uint64_t *from, const uint64_t *until, uint32_t i, uint64_t now)
{
	return now >= from[i] && now < until[i];
}

/* keeps every backlogged tenant's queue topped up (to its capacity at most) */
static void top_up(struct sched *s, struct tenant **ts, uint32_t n, const uint64_t *from,
		   const uint64_t *until, uint64_t now)
{
	for (uint32_t i = 0; i < n; i++) {
		while (backlogged(from, until, i, now) && tq_len(&ts[i]->q) < SIM_BACKLOG &&
		       !tq_push(&ts[i]->q, &sim_pkt))
			s->ops->enqueued(s, ts[i]);
	}
}

/* the next instant at which something can change while nobody runs */
static uint64_t next_event(const struct sched *s, const uint64_t *from, uint32_t n, uint64_t now)
{
	uint64_t next = s->last_refill + s->refill_cycles;

	for (uint32_t i = 0; i < n; i++)
		if (from[i] > now && from[i] < next)
			next = from[i];
	return next > now ? next : now + 1;
}

int dp_sched_simulate(uint32_t policy, uint32_t work_conserving, uint32_t quantum_cycles,
		      uint32_t refill_cycles, const struct dp_tenant_config *cfgs, uint32_t n,
		      const uint64_t *cost, const uint64_t *from, const uint64_t *until,
		      uint64_t horizon, struct dp_sim_event *trace, uint32_t trace_cap)
{
	struct tenant *by_id[DP_MAX_TENANTS] = {0}, *ts[DP_MAX_TENANTS];
	struct sched s;
	uint64_t now = 0;
	uint32_t n_ev = 0;
	int err;

	if (n == 0 || n > DP_MAX_TENANTS || refill_cycles == 0)
		return -EINVAL;
	err = sched_init(&s, policy, work_conserving, quantum_cycles, refill_cycles, by_id, 0);
	if (err)
		return err;
	for (uint32_t i = 0; i < n; i++) {
		ts[i] = by_id[i] = tenant_new(i, &cfgs[i], &err);
		if (!ts[i]) {
			n = i;
			goto out;
		}
		/* the simulated handler's bound is its exact cost */
		ts[i]->handler.bound_cycles = cost[i];
		ts[i]->slice_pkts = handler_slice_pkts(&ts[i]->handler, quantum_cycles, SIM_BACKLOG);
		sched_tenant_added(&s, ts[i]);
	}

	while (now < horizon && n_ev < trace_cap) {
		struct dp_sim_event *ev = &trace[n_ev++];
		struct turn used = {0};
		struct tenant *t;
		uint32_t k;
		bool lent;

		if (now - s.last_refill >= s.refill_cycles)
			s.ops->refill(&s, now);
		top_up(&s, ts, n, from, until, now);
		t = s.ops->pick(&s, &lent);
		if (!t) {
			*ev = (struct dp_sim_event){UINT32_MAX, 0, 0, 0, now, next_event(&s, from, n, now)};
			now = ev->end;
			continue;
		}
		/* a turn of slices, as run_stage() runs it */
		*ev = (struct dp_sim_event){t->id, lent, 0, 0, now, now};
		while (ev->pkts < RUN_BATCH &&
		       (k = s.ops->take(&s, t, lent, &used, MIN(t->slice_pkts, RUN_BATCH - ev->pkts)))) {
			for (uint32_t j = 0; j < k; j++)
				tq_pop(&t->q);
			ev->pkts += k;
			ev->end += k * cost[t->id];
			used = (struct turn){ev->pkts, ev->pkts * sim_pkt.len, ev->end - ev->start};
			if (!lent)
				s.ops->charge(&s, t, k * cost[t->id], k, k * sim_pkt.len);
			top_up(&s, ts, n, from, until, ev->start);
		}
		s.ops->turn_done(&s, t, lent);
		now = ev->end;
	}
	err = (int)n_ev;
out:
	for (uint32_t i = 0; i < n; i++)
		tenant_free(ts[i]);
	sched_fini(&s);
	return err;
}
