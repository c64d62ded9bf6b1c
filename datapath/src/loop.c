/* loop.c - the run-to-completion fast path.
 *
 * One thread, pinned to its core, repeats four stages:
 *
 *   rx_stage     receive a burst, classify it, queue each packet with its
 *                tenant (intervention point: the burst's cost is shared
 *                out to the tenants whose packets it carried)
 *   run_stage    let the policy pick tenants and run their handlers, each
 *                timed with rdtsc and charged (intervention point); stops
 *                after quantum_ns so RX is polled again promptly
 *   flush_stage  carry out the verdicts: transmit, free, record completion
 *                latency (intervention point: the TX work is charged)
 *   ctl_poll     refill budgets on time, apply a pending control command
 *
 * Nothing here allocates, locks, logs or makes a syscall. */
#include <errno.h>
#include <string.h>

#include "hist.h"
#include "internal.h"
#include "tsc.h"

#define STALL_NS 20000 /* an iteration this much longer than its handlers */

struct done_batch {
	uint32_t n;
	uint64_t run_cycles; /* time spent in handlers (accounting on) */
	struct pkt *pkts[RUN_BATCH];
};

static always_inline void charge(struct dp *dp, struct tenant *t, uint64_t cycles, uint32_t pkts,
				 uint32_t bytes)
{
	dp->sched.ops->charge(&dp->sched, t, cycles, pkts, bytes);
	t->st.cycles += cycles;
}

/* shares a batch's measured cost out evenly over the tenants of its packets */
static always_inline void charge_batch(struct dp *dp, struct tenant **owners, uint32_t n,
				       uint64_t cycles)
{
	uint64_t each = cycles / n;

	for (uint32_t i = 0; i < n; i++)
		charge(dp, owners[i], each, 0, 0);
}

static noinline uint32_t rx_stage(struct dp *dp)
{
	struct pkt *pkts[RX_BATCH_MAX], *drops[RX_BATCH_MAX];
	struct tenant *owners[RX_BATCH_MAX];
	const bool acct = dp->cfg.accounting;
	uint32_t n, n_drop = 0, n_owned = 0;
	uint64_t t0;

	n = dp->be->ops->rx_burst(dp->be, pkts, dp->cfg.rx_batch);
	if (!n)
		return 0;
	t0 = acct ? rdtsc() : 0;

	/* classify every packet and queue it behind its tenant's backlog */
	for (uint32_t i = 0; i < n; i++) {
		struct pkt *p = pkts[i];
		int id = dp->cls ? classify(dp->cls, pkt_data(p), p->len) : -ENOENT;
		struct tenant *t = id >= 0 ? dp->tenants[id] : NULL;

		if (unlikely(!t)) {
			dp->gst.drops[id == -EBADMSG ? DP_GDROP_MALFORMED : DP_GDROP_UNKNOWN]++;
			drops[n_drop++] = p;
			continue;
		}
		p->tenant = (uint16_t)id;
		t->st.rx++;
		owners[n_owned++] = t;
		if (unlikely(tq_push(&t->q, p))) {
			t->st.drops[DP_DROP_QUEUE_FULL]++;
			drops[n_drop++] = p;
			continue;
		}
		dp->sched.ops->enqueued(&dp->sched, t);
	}
	if (n_drop)
		dp->be->ops->free_burst(dp->be, drops, n_drop);

	/* intervention point: RX and classification, charged per packet */
	if (acct && n_owned)
		charge_batch(dp, owners, n_owned, rdtsc() - t0);
	dp->gst.rx += n;
	return n;
}

static noinline uint32_t run_stage(struct dp *dp, struct done_batch *done)
{
	struct sched *s = &dp->sched;
	const bool acct = dp->cfg.accounting;
	uint64_t start = acct ? rdtsc() : 0, now = start, cycles = 0;

	while (done->n < RUN_BATCH) {
		struct tenant *t;
		struct pkt *p;
		bool lent;

		t = s->ops->pick(s, &lent);
		if (!t)
			break;
		p = tq_pop(&t->q);
		p->verdict = (uint8_t)t->handler.run(&t->handler, p);
		done->pkts[done->n++] = p;

		/* intervention point: the handler's measured cycles */
		if (acct) {
			uint64_t t1 = rdtsc();

			cycles = t1 - now;
			now = t1;
		}
		if (unlikely(lent))
			t->st.lent_cycles += cycles;
		else
			charge(dp, t, cycles, 1, p->len);
		s->ops->served(s, t, lent, cycles);
		if (acct && now - start >= dp->quantum_cycles)
			break;
	}
	done->run_cycles = now - start;
	return done->n;
}

static noinline void flush_stage(struct dp *dp, struct done_batch *done)
{
	struct pkt *tx[RUN_BATCH], *drops[RUN_BATCH];
	struct tenant *owners[RUN_BATCH];
	uint32_t n_tx = 0, n_drop = 0, sent;
	uint64_t now = rdtsc();

	/* sort by verdict; a dropped verdict is carried out, so it completes */
	for (uint32_t i = 0; i < done->n; i++) {
		struct pkt *p = done->pkts[i];
		struct tenant *t = dp->tenants[p->tenant];

		owners[i] = t;
		switch (p->verdict) {
		case DP_XDP_TX:
			tx[n_tx++] = p;
			continue;
		case DP_XDP_DROP:
		case DP_XDP_ABORTED:
			t->st.drop_verdict++;
			t->st.completed++;
			hist_record(t->hist, now - p->ts_intended);
			break;
		case DP_XDP_PASS:
			t->st.passed++;
			t->st.drops[DP_DROP_NO_SLOWPATH]++;
			break;
		default:
			t->st.drops[DP_DROP_FAULT]++;
		}
		drops[n_drop++] = p;
	}

	/* transmit; what the backend cannot take is dropped, not completed */
	sent = n_tx ? dp->be->ops->tx_burst(dp->be, tx, n_tx) : 0;
	for (uint32_t i = 0; i < n_tx; i++) {
		struct tenant *t = dp->tenants[tx[i]->tenant];

		if (likely(i < sent)) {
			t->st.tx++;
			t->st.completed++;
			hist_record(t->hist, now - tx[i]->ts_intended);
		} else {
			t->st.drops[DP_DROP_TX_FULL]++;
			drops[n_drop++] = tx[i];
		}
	}
	if (n_drop)
		dp->be->ops->free_burst(dp->be, drops, n_drop);

	/* intervention point: TX work done on the tenants' behalf */
	if (dp->cfg.accounting)
		charge_batch(dp, owners, done->n, rdtsc() - now);
}

static void reset_stats(struct dp *dp)
{
	memset(&dp->gst, 0, sizeof(dp->gst));
	for (uint32_t id = 0; id < DP_MAX_TENANTS; id++) {
		struct tenant *t = dp->tenants[id];

		if (!t)
			continue;
		memset(&t->st, 0, sizeof(t->st));
		memset(t->hist, 0, DP_HIST_BUCKETS * sizeof(*t->hist));
	}
}

/* runs on the loop thread while running, on the caller's when stopped */
void dp_apply_cmd(struct dp *dp, struct dp_cmd *cmd)
{
	struct classifier *old;
	struct tenant *t;

	switch (cmd->op) {
	case CMD_TENANT_ADD:
		t = cmd->tenant;
		__atomic_store_n(&dp->tenants[t->id], t, __ATOMIC_RELEASE);
		sched_tenant_added(&dp->sched, t);
		break;
	case CMD_TENANT_SET:
		t = dp->tenants[cmd->tenant->id];
		t->cfg = cmd->cfg;
		handler_init(&t->handler, cmd->cfg.handler, cmd->cfg.spin_ns);
		sched_tenant_budget(&dp->sched, t, false);
		break;
	case CMD_RULES_SET:
		old = dp->cls;
		dp->cls = cmd->cls;
		cmd->cls = old;
		break;
	case CMD_RESET_STATS:
		reset_stats(dp);
		break;
	}
	cmd->result = 0;
	__atomic_store_n(&cmd->done, 1, __ATOMIC_RELEASE);
}

static always_inline void ctl_poll(struct dp *dp, uint64_t now)
{
	struct dp_cmd *cmd;

	if (now - dp->sched.last_refill >= dp->sched.refill_cycles)
		dp->sched.ops->refill(&dp->sched, now);
	cmd = __atomic_load_n(&dp->cmd, __ATOMIC_ACQUIRE);
	if (unlikely(cmd != NULL)) {
		__atomic_store_n(&dp->cmd, NULL, __ATOMIC_RELAXED);
		dp_apply_cmd(dp, cmd);
	}
}

void *dp_loop(void *arg)
{
	struct dp *dp = arg;
	struct done_batch done;
	const uint64_t stall_cycles = ns_to_cycles(STALL_NS);
	uint64_t prev = rdtsc(), now;
	uint32_t work = 0;

	dp->sched.last_refill = prev;
	while (!__atomic_load_n(&dp->stop, __ATOMIC_ACQUIRE)) {
		work = rx_stage(dp);
		done.n = 0;
		done.run_cycles = 0;
		if (run_stage(dp, &done)) {
			flush_stage(dp, &done);
			work = 1;
		}
		now = rdtsc();
		dp->gst.loops++;
		dp->gst.total_cycles += now - prev;
		if (work) {
			dp->gst.busy_loops++;
			dp->gst.busy_cycles += now - prev;
		}
		/* an iteration far longer than its handlers: the core was taken */
		if (unlikely(now - prev - done.run_cycles > stall_cycles)) {
			dp->gst.stalls++;
			dp->gst.stall_cycles += now - prev - done.run_cycles;
		}
		prev = now;
		ctl_poll(dp, now);
	}
	return NULL;
}

/* one packet through classify and handler, with no backend (tests, tools) */
int dp_handle_one(struct dp *dp, struct pkt *p, uint32_t *tenant)
{
	int id = dp->cls ? classify(dp->cls, pkt_data(p), p->len) : -ENOENT;

	if (id >= 0 && !dp->tenants[id])
		id = -ENOENT;
	if (id < 0)
		return id;
	*tenant = (uint32_t)id;
	return (int)dp->tenants[id]->handler.run(&dp->tenants[id]->handler, p);
}
