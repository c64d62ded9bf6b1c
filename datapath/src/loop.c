/* loop.c - the run-to-completion fast path.
 *
 * One thread, pinned to its core, repeats four stages:
 *
 *   rx_stage     receive a burst, classify it, queue each packet with its
 *                tenant (intervention point: the burst's cost is shared
 *                out to the tenants whose packets it carried)
 *   run_stage    let the policy pick tenants and run their handlers in
 *                turns; the time of every turn is measured with rdtsc and
 *                charged to its tenant (intervention point); stops after
 *                about quantum_ns so RX is polled again promptly
 *   flush_stage  carry out the verdicts: transmit, copy passed packets to
 *                their tenant's slow path, free, record completion latency
 *                (intervention point: the TX work is charged)
 *   slowpath_stage  (only with a slow path attached) transmit the frames
 *                tenants sent through their slow path (intervention point:
 *                the time is charged to the tenant)
 *   ctl_poll     refill budgets on time, apply a pending control command
 *
 * Nothing here allocates, locks, logs or makes a syscall.
 *
 * Time: each TSC read waits for the cache misses in flight (the rings and
 * frames cross cores), which here costs hundreds of cycles, so the loop
 * reads the clock as seldom as exact charging allows. One read ends every
 * iteration and starts the next; the flush is stamped with one more. With
 * accounting, run_stage reads at the edges of charge windows (see there),
 * and one RX burst in RX_SAMPLE is timed. */
#include <errno.h>
#include <string.h>

#include "hist.h"
#include "internal.h"
#include "tsc.h"

#define RX_SAMPLE 16   /* RX bursts per timed RX burst */

struct done_batch {
	uint32_t n;
	uint64_t run_cycles; /* time measured in run_stage (accounting on) */
	struct pkt *pkts[RUN_BATCH];
};

/* cycles from mark to now; 0 when mark was an estimate that ran ahead */
static always_inline uint64_t since(uint64_t now, uint64_t mark)
{
	return now > mark ? now - mark : 0;
}

static always_inline void charge(struct dp *dp, struct tenant *t, uint64_t cycles, uint32_t pkts,
				 uint32_t bytes)
{
	dp->sched.ops->charge(&dp->sched, t, cycles, pkts, bytes);
	t->st.cycles += cycles;
}

static noinline uint32_t rx_stage(struct dp *dp, uint64_t *now)
{
	struct pkt *pkts[RX_BATCH_MAX], *drops[RX_BATCH_MAX];
	struct tenant *overflowed[RX_BATCH_MAX];
	const bool acct = dp->cfg.accounting;
	uint32_t n, n_drop = 0, n_over = 0;
	uint64_t t0, t1;
	bool sampled;

	n = dp->be->ops->rx_burst(dp->be, pkts, dp->cfg.rx_batch);
	if (!n)
		return 0;
	sampled = acct && ++dp->rx_bursts % RX_SAMPLE == 0;
	t0 = sampled ? rdtsc() : 0;

	/* prefetch every packet's metadata and headers for writing: another
	 * core wrote them, and the handlers will write them too, so fetch
	 * them owned now rather than upgrade them one store at a time (the
	 * headers are where backends put them; a miss here is only a hint) */
	for (uint32_t i = 0; i < n; i++) {
		prefetchw(pkts[i]);
		prefetchw((uint8_t *)pkts[i] + PKT_DATA_OFF);
	}

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
		p->rx_cycles = (uint32_t)dp->rx_cycles_per_pkt;
		t->st.rx++;
		if (unlikely(tq_push(&t->q, p))) {
			t->st.drops[DP_DROP_QUEUE_FULL]++;
			overflowed[n_over++] = t;
			drops[n_drop++] = p;
			continue;
		}
		dp->sched.ops->enqueued(&dp->sched, t);
	}
	if (n_drop)
		dp->be->ops->free_burst(dp->be, drops, n_drop);

	/* intervention point: RX and classification. It is the same code for
	 * every tenant, so its cost per packet is measured on one burst in
	 * RX_SAMPLE and each packet carries the running estimate, charged with
	 * its handler; a tenant whose queue overflowed pays for it now. A
	 * sample far above the estimate had the core taken away: it moves the
	 * estimate by at most 4x, so a stall is not billed to the tenants. */
	if (acct) {
		if (unlikely(sampled)) {
			uint64_t est = dp->rx_cycles_per_pkt, sample;

			t1 = rdtsc();
			sample = since(t1, t0) / n;
			if (est && sample > 4 * est)
				sample = 4 * est;
			dp->rx_cycles_per_pkt = (7 * est + sample) / 8;
			*now = t1;
		} else {
			*now += n * dp->rx_cycles_per_pkt;
		}
		for (uint32_t i = 0; i < n_over; i++)
			charge(dp, overflowed[i], dp->rx_cycles_per_pkt, 0, 0);
	}
	dp->gst.rx += n;
	return n;
}

/*
 * Charge windows. Cycles are charged per *window*: the time between two
 * clock readings, all of it spent on one tenant's turns. The clock is read
 * when the tenant changes, after every slice of a handler without a static
 * bound (its cost is only known by timing it), and when the run stage ends;
 * a tenant that keeps the core for several turns is timed once. A window
 * also charges its packets' share of RX work and the last flush's TX cost
 * per packet. Packets and bytes need no clock: they are charged after each
 * slice, so pkt_rate and byte_rate decide on exact balances; cycles reach
 * the balance when the window closes, at most one run stage (RUN_BATCH
 * packets of bounded handlers) late.
 */
struct window {
	struct tenant *t; /* NULL: closed */
	bool lent;
	uint32_t pkts;
	uint64_t rx_cycles;
	uint64_t bound;   /* its packets' static bounds: the most they can take */
};

/* A window of bounded handlers that took far longer than their bounds
 * allow had the core taken away (host, kernel): that time is a stall, not
 * the tenant's work, so the tenant pays its bound and the stall is counted.
 * (An unbounded handler's time cannot be told from a stall: it pays all.) */
static always_inline void window_close(struct dp *dp, struct window *w, uint64_t cycles)
{
	if (!w->t)
		return;
	if (unlikely(w->bound && cycles > w->bound + dp->stall_cycles)) {
		dp->gst.stalls++;
		dp->gst.stall_cycles += cycles - w->bound;
		cycles = w->bound;
	}
	cycles += w->rx_cycles + w->pkts * dp->tx_cycles_per_pkt;
	if (unlikely(w->lent))
		w->t->st.lent_cycles += cycles;
	else
		charge(dp, w->t, cycles, 0, 0);
	w->t = NULL;
}

/* runs one slice of t's turn: n packets back to back; returns their bytes */
static always_inline uint32_t run_slice(struct tenant *t, uint32_t n, struct done_batch *done,
					struct window *w)
{
	uint32_t bytes = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct pkt *p = tq_pop(&t->q);

		p->verdict = (uint8_t)t->handler.run(&t->handler, p);
		bytes += p->len;
		w->rx_cycles += p->rx_cycles;
		done->pkts[done->n++] = p;
	}
	w->pkts += n;
	return bytes;
}

/*
 * Runs turns until RUN_BATCH packets are done or a quantum has passed.
 * Elapsed time is the last reading plus, for bounded handlers run since,
 * their static bound: an upper estimate, so a turn or the stage ends early
 * rather than late. *clock is the last reading on entry and on exit; a
 * window still open on exit is closed by the loop's next reading.
 */
static noinline uint32_t run_stage(struct dp *dp, struct done_batch *done, uint64_t *clock,
				   struct window *w)
{
	struct sched *s = &dp->sched;
	const bool acct = dp->cfg.accounting;
	const uint64_t start = *clock;
	uint64_t mark = start, est = 0; /* elapsed: since(mark, start) + est */

	while (done->n < RUN_BATCH) {
		struct turn used = {0};
		uint64_t turn_start = 0;
		struct tenant *t;
		uint32_t n, bytes;
		bool lent;

		t = s->ops->pick(s, &lent);
		if (!t)
			break;
		/* the turn: slices for as long as the policy lets it go on */
		while (done->n < RUN_BATCH &&
		       (n = s->ops->take(s, t, lent, &used, MIN(t->slice_pkts, RUN_BATCH - done->n)))) {
			const uint64_t bound = t->handler.bound_cycles;

			if (acct && (w->t != t || w->lent != lent || !bound)) {
				/* intervention point: the previous tenant's window */
				if (w->t) {
					uint64_t now = rdtsc();

					window_close(dp, w, since(now, mark));
					mark = now;
					est = 0;
				}
				*w = (struct window){.t = t, .lent = lent};
			}
			if (!used.pkts)
				turn_start = since(mark, start) + est;
			bytes = run_slice(t, n, done, w);
			if (!lent)
				charge(dp, t, 0, n, bytes);
			if (acct && bound) {
				est += n * bound;
				w->bound += n * bound;
			} else if (acct) {
				/* intervention point: an unbounded handler, timed now */
				uint64_t now = rdtsc();

				window_close(dp, w, since(now, mark));
				mark = now;
				est = 0;
			}
			used.pkts += n;
			used.bytes += bytes;
			used.cycles = since(since(mark, start) + est, turn_start);
		}
		s->ops->turn_done(s, t, lent);
		/* poll RX again after a quantum, counting unread bounded work at
		 * its bound: an expensive bounded handler must not run turn after
		 * turn while packets of other tenants wait in the RX ring */
		if (acct && since(mark, start) + est >= dp->quantum_cycles)
			break;
	}
	if (!acct)
		*w = (struct window){0}; /* nothing is timed */
	done->run_cycles = since(mark, start);
	*clock = mark;
	return done->n;
}

/* carries out the verdicts; `now` is the packets' completion time */
static noinline void flush_stage(struct dp *dp, struct done_batch *done, uint64_t now)
{
	struct pkt *tx[RUN_BATCH], *drops[RUN_BATCH];
	uint32_t n_tx = 0, n_drop = 0, sent;

	/* sort by verdict; a dropped verdict is carried out, so it completes */
	for (uint32_t i = 0; i < done->n; i++) {
		struct pkt *p = done->pkts[i];
		struct tenant *t = dp->tenants[p->tenant];

		switch (p->verdict) {
		case DP_XDP_TX:
			tx[n_tx++] = p;
			continue;
		case DP_XDP_DROP:
		case DP_XDP_ABORTED:
			t->st.drop_verdict++;
			t->st.completed++;
			hist_record(t->hist, since(now, p->ts_intended));
			break;
		case DP_XDP_PASS:
			t->st.passed++;
			if (!t->sp) {
				t->st.drops[DP_DROP_NO_SLOWPATH]++;
			} else if (unlikely(!slowpath_deliver(t->sp, p))) {
				t->st.drops[DP_DROP_SLOWPATH_FULL]++;
			} else {
				t->st.sp_delivered++;
				t->st.completed++;
				hist_record(t->hist, since(now, p->ts_intended));
			}
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
			hist_record(t->hist, since(now, tx[i]->ts_intended));
		} else {
			t->st.drops[DP_DROP_TX_FULL]++;
			drops[n_drop++] = tx[i];
		}
	}
	if (n_drop)
		dp->be->ops->free_burst(dp->be, drops, n_drop);

}

/*
 * Sends what tenants queued on their slow paths: per tenant, as many frames
 * as the backend has free frames for (up to SP_TX_BATCH), copied in and
 * transmitted in one burst. Intervention point: the time from the tenant's
 * first frame to its burst's end is charged to it, with the packets and
 * bytes; under a budget policy a broke tenant's frames wait in its ring for
 * credit. Returns the frames sent; *now is the last clock reading.
 */
static noinline uint32_t slowpath_stage(struct dp *dp, uint64_t *now)
{
	const bool acct = dp->cfg.accounting;
	const bool budgets = dp->cfg.policy != DP_POLICY_FIFO;
	struct backend *be = dp->be;
	uint32_t total = 0;

	if (unlikely(!be->ops->alloc_burst))
		return 0;
	for (uint32_t i = 0; i < dp->n_sp; i++) {
		struct tenant *t = dp->sp_tenants[i];
		struct slowpath *sp = t->sp;
		struct pkt *pkts[SP_TX_BATCH];
		struct sp_slot *slots[SP_TX_BATCH];
		uint32_t want = sp_ring_count(&sp->tx), n, sent, bytes = 0;
		uint64_t t0 = 0;

		if (!want || (budgets && !budget_funded(&t->bucket, &t->cache)))
			continue;
		if (acct)
			t0 = rdtsc();
		n = be->ops->alloc_burst(be, pkts, MIN(want, SP_TX_BATCH));
		n = spsc_pop(&sp->tx, (void **)slots, n); /* all n: only we consume */
		if (unlikely(!n))
			continue; /* no free frame: the frames wait, nothing to charge */
		for (uint32_t k = 0; k < n; k++) {
			struct pkt *p = pkts[k];

			p->len = slots[k]->len;
			p->tenant = (uint16_t)t->id;
			p->ts_intended = t0;
			memcpy(pkt_data(p), slots[k]->data, p->len);
			bytes += p->len;
		}
		spsc_push(&sp->tx_free, (void *const *)slots, n);
		sent = be->ops->tx_burst(be, pkts, n);
		if (unlikely(sent < n)) {
			t->st.drops[DP_DROP_TX_FULL] += n - sent;
			be->ops->free_burst(be, pkts + sent, n - sent);
		}
		t->st.sp_sent += sent;
		total += sent;
		if (acct) {
			*now = rdtsc();
			charge(dp, t, since(*now, t0), n, bytes);
		} else {
			charge(dp, t, 0, n, bytes);
		}
	}
	return total;
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
		t->slice_pkts = handler_slice_pkts(&t->handler, dp->quantum_cycles, RUN_BATCH);
		__atomic_store_n(&dp->tenants[t->id], t, __ATOMIC_RELEASE);
		sched_tenant_added(&dp->sched, t);
		break;
	case CMD_TENANT_SET:
		t = dp->tenants[cmd->tenant->id];
		t->cfg = cmd->cfg;
		/* the config names a native handler; an installed program stays */
		if (t->handler.kind < DP_HANDLER_EBPF)
			handler_init(&t->handler, cmd->cfg.handler, cmd->cfg.spin_ns);
		t->slice_pkts = handler_slice_pkts(&t->handler, dp->quantum_cycles, RUN_BATCH);
		sched_tenant_budget(&dp->sched, t, false);
		break;
	case CMD_SET_HANDLER:
		t = dp->tenants[cmd->tenant->id];
		t->handler = cmd->handler;
		t->slice_pkts = handler_slice_pkts(&t->handler, dp->quantum_cycles, RUN_BATCH);
		break;
	case CMD_SLOWPATH_SET:
		t = dp->tenants[cmd->tenant->id];
		if (cmd->sp && !t->sp) {
			dp->sp_tenants[dp->n_sp++] = t;
		} else if (!cmd->sp && t->sp) {
			for (uint32_t i = 0; i < dp->n_sp; i++) {
				if (dp->sp_tenants[i] == t) {
					dp->sp_tenants[i] = dp->sp_tenants[--dp->n_sp];
					break;
				}
			}
		}
		t->sp = cmd->sp;
		break;
	case CMD_RULES_SET:
		old = dp->cls;
		dp->cls = cmd->cls;
		cmd->cls = old;
		break;
	case CMD_RESET_STATS:
		reset_stats(dp);
		break;
	case CMD_TENANT_DEL:
		tenant_unlink(dp, cmd->tenant);
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

/* intervention point: TX. The flush's cost per packet (AF_XDP copy mode:
 * the kernel's transmit, run inside the kick) is kept as a running
 * estimate, charged to the packets of the next windows. It follows a
 * cheaper flush at once (halfway) but a dearer one slowly, by an eighth of
 * at most 4x: a flush that had the core taken away (or the first one, with
 * its cold caches) is not billed in full to the tenants that come next.
 * Returns the part of the flush that counts as work, not stall. */
static always_inline uint64_t tx_estimate(struct dp *dp, uint64_t flush, uint32_t n)
{
	uint64_t est = dp->tx_cycles_per_pkt, sample = flush / n;

	if (sample < est)
		dp->tx_cycles_per_pkt = (est + sample) / 2;
	else
		dp->tx_cycles_per_pkt = (7 * est + MIN(sample, 4 * est + 64)) / 8;
	return MIN(flush, (4 * est + 64) * n);
}

void *dp_loop(void *arg)
{
	struct dp *dp = arg;
	struct done_batch done;
	struct window w = {0};
	const uint64_t stall_cycles = dp->stall_cycles;
	const bool acct = dp->cfg.accounting;
	uint64_t prev = rdtsc(), now = prev, flush_start = 0;
	uint32_t work = 0;

	dp->sched.last_refill = prev;
	while (!__atomic_load_n(&dp->stop, __ATOMIC_ACQUIRE)) {
		work = rx_stage(dp, &now);
		if (unlikely(dp->n_sp))
			work |= slowpath_stage(dp, &now);
		done.n = 0;
		done.run_cycles = 0;
		if (run_stage(dp, &done, &now, &w)) {
			flush_start = rdtsc();

			/* intervention point: the last window of the run stage */
			window_close(dp, &w, since(flush_start, now));
			done.run_cycles += since(flush_start, now);
			flush_stage(dp, &done, flush_start);
			work = 1;
		}
		now = rdtsc();
		if (acct && done.n)
			done.run_cycles += tx_estimate(dp, since(now, flush_start), done.n);
		dp->gst.loops++;
		dp->gst.total_cycles += now - prev;
		if (work) {
			dp->gst.busy_loops++;
			dp->gst.busy_cycles += now - prev;
		}
		/* an iteration far longer than its handlers: the core was taken
		 * (measurable with accounting only: without, nothing is timed) */
		if (unlikely(acct && now - prev - done.run_cycles > stall_cycles)) {
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
