/* dp.c - the public API: create, configure, start, stop, read stats.
 *
 * Control calls may come from any Python thread. While the loop runs,
 * every change goes to it as a command (see dp_cmd in internal.h) and the
 * caller waits until the loop has applied it; stats are read directly
 * (64-bit counters written by one thread are never torn on x86-64). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "tsc.h"

int dp_pin_thread(pthread_t thread, int core)
{
	cpu_set_t set;

	if (core < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(core, &set);
	return -pthread_setaffinity_np(thread, sizeof(set), &set);
}

int dp_create(const struct dp_config *cfg, dp_t **out)
{
	struct dp *dp;
	int err;

	if (cfg->rx_batch == 0 || cfg->rx_batch > RX_BATCH_MAX || cfg->refill_us == 0 ||
	    (cfg->policy == DP_POLICY_CYCLES && !cfg->accounting))
		return -EINVAL;
	dp = calloc(1, sizeof(*dp));
	if (!dp)
		return -ENOMEM;
	dp->cfg = *cfg;
	dp->quantum_cycles = ns_to_cycles(cfg->quantum_ns);
	dp->stall_cycles = ns_to_cycles(STALL_NS);
	err = sched_init(&dp->sched, cfg->policy, cfg->work_conserving, dp->quantum_cycles,
			 ns_to_cycles(cfg->refill_us * 1000.0), dp->tenants, rdtsc());
	if (err) {
		free(dp);
		return err;
	}
	pthread_mutex_init(&dp->ctl_lock, NULL);
	pthread_mutex_init(&dp->sp_lock, NULL);
	pthread_mutex_init(&dp->stats_lock, NULL);
	*out = dp;
	return 0;
}

void dp_destroy(dp_t *dp)
{
	if (!dp)
		return;
	dp_stop(dp);
	if (dp->be)
		dp->be->ops->destroy(dp->be);
	for (uint32_t id = 0; id < DP_MAX_TENANTS; id++) {
		tenant_free(dp->tenants[id]);
		slowpath_free(dp->sp[id]);
	}
	classifier_free(dp->cls);
	sched_fini(&dp->sched);
	pthread_mutex_destroy(&dp->ctl_lock);
	pthread_mutex_destroy(&dp->sp_lock);
	pthread_mutex_destroy(&dp->stats_lock);
	free(dp);
}

/* hands a command to the loop and waits for it; applies it directly when
 * the loop is not running. Caller holds ctl_lock. */
static void submit(struct dp *dp, struct dp_cmd *cmd)
{
	const struct timespec pause = {.tv_nsec = 20000};

	if (!dp->running) {
		dp_apply_cmd(dp, cmd);
		return;
	}
	cmd->done = 0;
	__atomic_store_n(&dp->cmd, cmd, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&cmd->done, __ATOMIC_ACQUIRE))
		nanosleep(&pause, NULL);
}

int dp_tenant_add(dp_t *dp, uint32_t id, const struct dp_tenant_config *cfg)
{
	struct dp_cmd cmd = {.op = CMD_TENANT_ADD};
	int err = 0;

	pthread_mutex_lock(&dp->ctl_lock);
	if (id < DP_MAX_TENANTS && dp->tenants[id]) {
		err = -EEXIST;
		goto out;
	}
	if (id < DP_MAX_TENANTS && dp->queue_slots + cfg->queue_cap > SCHED_ORDER_CAP) {
		err = -ENOSPC;
		goto out;
	}
	cmd.tenant = tenant_new(id, cfg, &err);
	if (!cmd.tenant)
		goto out;
	dp->queue_slots += cfg->queue_cap;
	submit(dp, &cmd);
out:
	pthread_mutex_unlock(&dp->ctl_lock);
	return err;
}

int dp_tenant_set(dp_t *dp, uint32_t id, const struct dp_tenant_config *cfg)
{
	struct dp_cmd cmd = {.op = CMD_TENANT_SET, .cfg = *cfg};
	int err;

	pthread_mutex_lock(&dp->ctl_lock);
	err = id < DP_MAX_TENANTS && dp->tenants[id] ? tenant_config_check(cfg) : -ENOENT;
	if (!err && cfg->queue_cap != dp->tenants[id]->cfg.queue_cap)
		err = -EINVAL; /* a queue is not resized under the loop's feet */
	if (!err) {
		cmd.tenant = dp->tenants[id];
		submit(dp, &cmd);
	}
	pthread_mutex_unlock(&dp->ctl_lock);
	return err;
}

/* Deleting a tenant: refused while a rule of the installed classifier
 * names it (withdraw its rules first: then no packet the loop receives
 * can be classified to it, and the classifier never returns a deleted
 * id). Its slow path goes out of readers' and senders' reach, the loop
 * unlinks it (tenant_unlink), and once the loop has let go and no stats
 * reader holds it, it is freed and its queue slots return to the budget. */
int dp_tenant_del(dp_t *dp, uint32_t id)
{
	struct dp_cmd cmd = {.op = CMD_TENANT_DEL};
	struct slowpath *sp;
	struct tenant *t;
	int err = 0;

	pthread_mutex_lock(&dp->ctl_lock);
	t = id < DP_MAX_TENANTS ? dp->tenants[id] : NULL;
	err = !t ? -ENOENT : dp->rule_refs[id] ? -EBUSY : 0;
	if (err)
		goto out;
	pthread_mutex_lock(&dp->sp_lock);
	sp = dp->sp[id];
	dp->sp[id] = NULL;
	pthread_mutex_unlock(&dp->sp_lock);
	cmd.tenant = t;
	submit(dp, &cmd);
	/* a reader that found t before the loop cleared its slot is done */
	pthread_mutex_lock(&dp->stats_lock);
	pthread_mutex_unlock(&dp->stats_lock);
	dp->queue_slots -= t->cfg.queue_cap;
	tenant_free(t);
	slowpath_free(sp);
out:
	pthread_mutex_unlock(&dp->ctl_lock);
	return err;
}

/* caller holds ctl_lock */
static int set_handler_locked(struct dp *dp, uint32_t id, const struct handler *h)
{
	struct dp_cmd cmd = {.op = CMD_SET_HANDLER, .handler = *h};

	if (id >= DP_MAX_TENANTS || !dp->tenants[id])
		return -ENOENT;
	cmd.tenant = dp->tenants[id];
	submit(dp, &cmd);
	return 0;
}

int dp_set_handler(struct dp *dp, uint32_t id, const struct handler *h)
{
	int err;

	pthread_mutex_lock(&dp->ctl_lock);
	err = set_handler_locked(dp, id, h);
	pthread_mutex_unlock(&dp->ctl_lock);
	return err;
}

int dp_tenant_set_prog(dp_t *dp, uint32_t id, dp_prog_t *prog, uint32_t bound_ns)
{
	struct handler h;

	if (!prog)
		return -EINVAL;
	handler_init_ebpf(&h, prog, bound_ns);
	return dp_set_handler(dp, id, &h);
}

int dp_tenant_clear_prog(dp_t *dp, uint32_t id)
{
	struct handler h;
	struct tenant *t;
	int err;

	/* under the lock: the tenant's config is read from the tenant itself */
	pthread_mutex_lock(&dp->ctl_lock);
	t = id < DP_MAX_TENANTS ? dp->tenants[id] : NULL;
	err = t ? handler_init(&h, t->cfg.handler, t->cfg.spin_ns) : -ENOENT;
	if (!err)
		err = set_handler_locked(dp, id, &h);
	pthread_mutex_unlock(&dp->ctl_lock);
	return err;
}

int dp_rules_set(dp_t *dp, const struct dp_rule *rules, uint32_t n)
{
	struct dp_cmd cmd = {.op = CMD_RULES_SET};
	int err;

	cmd.cls = classifier_build(rules, n, &err);
	if (!cmd.cls)
		return err;
	pthread_mutex_lock(&dp->ctl_lock);
	submit(dp, &cmd);
	memset(dp->rule_refs, 0, sizeof(dp->rule_refs));
	for (uint32_t i = 0; i < n; i++)
		dp->rule_refs[rules[i].tenant]++; /* < DP_MAX_TENANTS: classifier_build checked */
	pthread_mutex_unlock(&dp->ctl_lock);
	classifier_free(cmd.cls); /* the one the loop gave back */
	return 0;
}

int dp_reset_stats(dp_t *dp)
{
	struct dp_cmd cmd = {.op = CMD_RESET_STATS};

	pthread_mutex_lock(&dp->ctl_lock);
	submit(dp, &cmd);
	pthread_mutex_unlock(&dp->ctl_lock);
	return 0;
}

int dp_start(dp_t *dp)
{
	int err;

	pthread_mutex_lock(&dp->ctl_lock);
	err = dp->running ? -EALREADY : dp->be ? 0 : -ENODEV;
	if (err)
		goto out;
	err = dp->be->ops->start(dp->be);
	if (err)
		goto out;
	dp->stop = 0;
	err = -pthread_create(&dp->thread, NULL, dp_loop, dp);
	if (err) {
		dp->be->ops->stop(dp->be);
		goto out;
	}
	dp_pin_thread(dp->thread, dp->cfg.core);
	dp->running = true;
out:
	pthread_mutex_unlock(&dp->ctl_lock);
	return err;
}

/* stops the loop, then gives every still-queued packet back to the backend */
int dp_stop(dp_t *dp)
{
	pthread_mutex_lock(&dp->ctl_lock);
	if (!dp->running) {
		pthread_mutex_unlock(&dp->ctl_lock);
		return 0;
	}
	__atomic_store_n(&dp->stop, 1, __ATOMIC_RELEASE);
	pthread_join(dp->thread, NULL);
	dp->running = false;
	for (uint32_t id = 0; id < DP_MAX_TENANTS; id++) {
		struct tenant *t = dp->tenants[id];

		while (t && tq_len(&t->q)) {
			struct pkt *p = tq_pop(&t->q);

			dp->be->ops->free_burst(dp->be, &p, 1);
		}
		if (t)
			t->listed = false;
	}
	dp->sched.order.head = dp->sched.order.tail;
	dp->sched.active.head = dp->sched.active.tail;
	dp->sched.broke.head = dp->sched.broke.tail;
	dp->be->ops->stop(dp->be);
	pthread_mutex_unlock(&dp->ctl_lock);
	return 0;
}

int dp_running(dp_t *dp)
{
	return dp->running;
}

/* the tenant in slot id for a stats reader; call with stats_lock held,
 * which keeps a tenant being deleted from being freed under the reader */
static struct tenant *stats_tenant(struct dp *dp, uint32_t id)
{
	return id < DP_MAX_TENANTS ? __atomic_load_n(&dp->tenants[id], __ATOMIC_ACQUIRE) : NULL;
}

int dp_tenant_stats(dp_t *dp, uint32_t id, struct dp_tenant_stats *out)
{
	struct tenant *t;
	int err = -ENOENT;

	pthread_mutex_lock(&dp->stats_lock);
	t = stats_tenant(dp, id);
	if (t) {
		*out = t->st;
		out->balance = (int64_t)budget_units(&t->bucket, &t->cache);
		out->queue_len = tq_len_racy(&t->q);
		err = 0;
	}
	pthread_mutex_unlock(&dp->stats_lock);
	return err;
}

int dp_tenant_hist(dp_t *dp, uint32_t id, uint64_t *buckets, uint32_t n)
{
	struct tenant *t;
	int err = -EINVAL;

	if (n != DP_HIST_BUCKETS)
		return -EINVAL;
	pthread_mutex_lock(&dp->stats_lock);
	t = stats_tenant(dp, id);
	err = t ? 0 : -ENOENT;
	if (t)
		memcpy(buckets, t->hist, n * sizeof(*buckets));
	pthread_mutex_unlock(&dp->stats_lock);
	return err;
}

int dp_global_stats(dp_t *dp, struct dp_global_stats *out)
{
	*out = dp->gst;
	return 0;
}

int dp_process_one(dp_t *dp, uint8_t *frame, uint32_t *len, uint32_t cap, uint32_t *tenant_out)
{
	struct pkt *p;
	int ret;

	if (*len > PKT_MAX_LEN)
		return -EMSGSIZE;
	p = pkt_scratch(frame, *len);
	if (!p)
		return -ENOMEM;
	/* the lock keeps the classifier and tenants from changing under us */
	pthread_mutex_lock(&dp->ctl_lock);
	if (dp->running) {
		pthread_mutex_unlock(&dp->ctl_lock);
		free(p);
		return -EBUSY;
	}
	ret = dp_handle_one(dp, p, tenant_out);
	pthread_mutex_unlock(&dp->ctl_lock);
	if (ret >= 0)
		ret = pkt_copy_out(p, frame, len, cap) ?: ret;
	free(p);
	return ret;
}

/* ---- slow path ---- */

/* hands the loop tenant id's new slow path (NULL: none); caller holds ctl_lock */
static void slowpath_submit(struct dp *dp, uint32_t id, struct slowpath *sp)
{
	struct dp_cmd cmd = {.op = CMD_SLOWPATH_SET, .tenant = dp->tenants[id], .sp = sp};

	submit(dp, &cmd);
}

int dp_slowpath_attach(dp_t *dp, uint32_t id, uint32_t depth)
{
	struct slowpath *sp;
	int err;

	pthread_mutex_lock(&dp->ctl_lock);
	if (id >= DP_MAX_TENANTS || !dp->tenants[id]) {
		err = -ENOENT;
		goto out;
	}
	if (dp->sp[id]) {
		err = -EEXIST;
		goto out;
	}
	sp = slowpath_new(depth, &err);
	if (!sp)
		goto out;
	/* readers and senders find it only once the loop has it */
	slowpath_submit(dp, id, sp);
	pthread_mutex_lock(&dp->sp_lock);
	dp->sp[id] = sp;
	pthread_mutex_unlock(&dp->sp_lock);
out:
	pthread_mutex_unlock(&dp->ctl_lock);
	return err;
}

int dp_slowpath_detach(dp_t *dp, uint32_t id)
{
	struct slowpath *sp;

	pthread_mutex_lock(&dp->ctl_lock);
	sp = id < DP_MAX_TENANTS ? dp->sp[id] : NULL;
	if (!sp) {
		pthread_mutex_unlock(&dp->ctl_lock);
		return -ENOENT;
	}
	/* out of readers' and senders' reach, then out of the loop's: freed
	 * when neither can touch it */
	pthread_mutex_lock(&dp->sp_lock);
	dp->sp[id] = NULL;
	pthread_mutex_unlock(&dp->sp_lock);
	slowpath_submit(dp, id, NULL);
	pthread_mutex_unlock(&dp->ctl_lock);
	slowpath_free(sp);
	return 0;
}

int dp_slowpath_read(dp_t *dp, uint32_t id, uint8_t *buf, uint32_t cap)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&dp->sp_lock);
	if (id < DP_MAX_TENANTS && dp->sp[id])
		ret = slowpath_read(dp->sp[id], buf, cap);
	pthread_mutex_unlock(&dp->sp_lock);
	return ret;
}

int dp_slowpath_send(dp_t *dp, uint32_t id, const uint8_t *frame, uint32_t len)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&dp->sp_lock);
	if (id < DP_MAX_TENANTS && dp->sp[id]) {
		/* the backend is only replaced under ctl_lock while stopped;
		 * reading its ops here is a hint, the loop checks again */
		struct backend *be = __atomic_load_n(&dp->be, __ATOMIC_ACQUIRE);

		ret = be && !be->ops->alloc_burst ? -EOPNOTSUPP
						  : slowpath_send(dp->sp[id], frame, len);
	}
	pthread_mutex_unlock(&dp->sp_lock);
	return ret;
}

int dp_slowpath_pending(dp_t *dp, uint32_t id, uint32_t *to_read, uint32_t *to_send)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&dp->sp_lock);
	if (id < DP_MAX_TENANTS && dp->sp[id]) {
		*to_read = sp_ring_count(&dp->sp[id]->rx);
		*to_send = sp_ring_count(&dp->sp[id]->tx);
		ret = 0;
	}
	pthread_mutex_unlock(&dp->sp_lock);
	return ret;
}
