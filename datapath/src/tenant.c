/* tenant.c - a tenant's private state: queue, handler, budget, stats. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "internal.h"

int tenant_config_check(const struct dp_tenant_config *c)
{
	uint32_t q = c->queue_cap;

	if (q < 2 || q > DP_QUEUE_SLOTS || (q & (q - 1)))
		return -EINVAL;
	if (!(c->share >= 0 && c->share <= 1) || !(c->cap_us >= 0) || !(c->pkt_rate >= 0) ||
	    !(c->pkt_burst >= 0) || !(c->byte_rate >= 0) || !(c->byte_burst >= 0))
		return -EINVAL; /* written so that NaN fails too */
	if (c->cap_us > 1e7 || c->pkt_burst > 1e9 || c->byte_burst > 1e12)
		return -ERANGE;
	if (c->handler == DP_HANDLER_EBPF || c->handler == DP_HANDLER_AOT ||
	    c->handler > DP_HANDLER_UDP_ECHO || c->spin_ns > DP_SPIN_MAX_NS)
		return -EINVAL;
	return 0;
}

struct tenant *tenant_new(uint32_t id, const struct dp_tenant_config *cfg, int *err)
{
	struct tenant *t;

	*err = id >= DP_MAX_TENANTS ? -EINVAL : tenant_config_check(cfg);
	if (*err)
		return NULL;
	*err = -ENOMEM;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->id = id;
	t->cfg = *cfg;
	t->q.mask = cfg->queue_cap - 1;
	t->q.slots = calloc(cfg->queue_cap, sizeof(*t->q.slots));
	t->hist = calloc(DP_HIST_BUCKETS, sizeof(*t->hist));
	if (!t->q.slots || !t->hist) {
		tenant_free(t);
		return NULL;
	}
	*err = handler_init(&t->handler, cfg->handler, cfg->spin_ns);
	if (*err) {
		tenant_free(t);
		return NULL;
	}
	return t;
}

void tenant_free(struct tenant *t)
{
	if (!t)
		return;
	free(t->q.slots);
	free(t->hist);
	free(t);
}

/* Runs on the loop thread between iterations (on the caller's when the loop
 * is stopped), so no turn, window or flush holds t: every reference the
 * loop has is here. The classifier no longer names t (dp_tenant_del). */
void tenant_unlink(struct dp *dp, struct tenant *t)
{
	struct pkt *burst[RX_BATCH_MAX];

	sched_tenant_removed(&dp->sched, t);
	for (uint32_t i = 0; i < dp->n_sp; i++) {
		if (dp->sp_tenants[i] == t) {
			dp->sp_tenants[i] = dp->sp_tenants[--dp->n_sp];
			break;
		}
	}
	t->sp = NULL;
	/* its backlog goes back to the backend's pool, unsent */
	while (tq_len(&t->q)) {
		uint32_t n = 0;

		while (n < RX_BATCH_MAX && tq_len(&t->q))
			burst[n++] = tq_pop(&t->q);
		dp->be->ops->free_burst(dp->be, burst, n);
	}
	__atomic_store_n(&dp->tenants[t->id], NULL, __ATOMIC_RELEASE);
}
