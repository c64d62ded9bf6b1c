/* backend_mem.c - the in-memory backend: an open-loop traffic generator.
 *
 * A generator thread, pinned to its own core, produces each flow's
 * arrivals (Poisson, on/off Poisson, uniform, or as fast as the ring takes
 * them), stamps every packet with the TSC at which it was *meant* to be
 * sent, and pushes it into the RX ring. Frames come back through one
 * return ring whether the datapath transmitted or dropped them: the "wire"
 * ends at the generator. An arrival that finds the RX ring full or no free
 * frame is lost, as at a NIC, and counted against its flow: it never
 * completes, so it counts as infinitely late.
 *
 * Without flows there is no generator thread: the loop runs on an idle
 * backend (a daemon without a NIC), and its spare frames still carry the
 * tenants' slow-path sends. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "arrivals.h"
#include "internal.h"
#include "spsc.h"
#include "tsc.h"

#define GEN_BATCH 32u
#define LATE_NS 20000 /* an arrival emitted this late counts as late */
#define MEM_SPARE 64u /* frames beyond n_frames for the datapath's own packets */

struct mem_flow {
	uint8_t *tmpl;
	uint32_t len;
	struct arrivals arr;
	struct dp_flow_stats st;
};

struct mem_backend {
	struct backend be;
	struct dp_mem_config cfg;
	uint8_t *frames;
	struct spsc rx;  /* generator -> datapath */
	struct spsc ret; /* datapath -> generator: transmitted or dropped */
	struct mem_flow *flows;
	uint32_t n_flows;
	pthread_t thread;
	uint32_t stop, done;
	bool started;

	/* datapath-private: the spare frames its own packets (slow-path sends)
	 * are made in; they end at the "wire" and come straight back here */
	struct pkt *spare[MEM_SPARE];
	uint32_t n_spare;
	uint32_t spare_out; /* handed out by alloc_burst, not yet back */

	/* generator-private */
	struct pkt **free;
	uint32_t n_free;
	uint32_t cursor; /* next flow to look at */
	uint64_t rng;
};

static inline struct mem_backend *to_mem(struct backend *b)
{
	return (struct mem_backend *)b;
}

static uint32_t mem_rx_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	return spsc_pop(&to_mem(b)->rx, (void **)pkts, n);
}

/* frames back to the generator through the return ring, which holds every
 * frame, so it always takes them; spare frames (only while some are out:
 * one branch per burst otherwise) back to the spare stack */
static always_inline void mem_return(struct mem_backend *m, struct pkt **pkts, uint32_t n)
{
	if (likely(!m->spare_out)) {
		spsc_push(&m->ret, (void *const *)pkts, n);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (pkts[i]->frame >= m->cfg.n_frames) {
			m->spare[m->n_spare++] = pkts[i];
			m->spare_out--;
		} else {
			spsc_push(&m->ret, (void *const *)&pkts[i], 1);
		}
	}
}

static uint32_t mem_tx_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	mem_return(to_mem(b), pkts, n);
	return n;
}

static void mem_free_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	mem_return(to_mem(b), pkts, n);
}

static uint32_t mem_alloc_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	struct mem_backend *m = to_mem(b);

	n = MIN(n, m->n_spare);
	for (uint32_t i = 0; i < n; i++) {
		struct pkt *p = m->spare[--m->n_spare];

		p->off = PKT_DATA_OFF;
		p->len = 0;
		p->flow = 0;
		pkts[i] = p;
	}
	m->spare_out += n;
	return n;
}

static always_inline void emit(struct mem_flow *f, struct pkt *p, uint16_t flow, uint64_t now)
{
	p->off = PKT_DATA_OFF;
	p->len = f->len;
	p->flow = flow;
	p->ts_intended = f->arr.kind == DP_ARRIVAL_SATURATE ? now : f->arr.next;
	memcpy(pkt_data(p), f->tmpl, f->len);
}

static void *generator(void *arg)
{
	struct mem_backend *m = arg;
	const uint64_t start = rdtsc();
	const uint64_t end = start + (uint64_t)(m->cfg.duration_s * tsc_hz());
	const uint64_t late_cycles = ns_to_cycles(LATE_NS);
	struct pkt *batch[GEN_BATCH];

	for (uint32_t i = 0; i < m->n_flows; i++)
		arrivals_start(&m->flows[i].arr, &m->rng, start);
	while (!__atomic_load_n(&m->stop, __ATOMIC_ACQUIRE)) {
		uint32_t nb = 0, pushed, limit = GEN_BATCH;
		uint64_t now;
		bool progress = true;

		/* reclaim frames the datapath is done with */
		m->n_free += spsc_pop(&m->ret, (void **)(m->free + m->n_free),
				      m->cfg.n_frames - m->n_free);
		now = rdtsc();
		if (now >= end)
			break;

		/* due arrivals, one per flow per round so flows interleave; a
		 * saturating flow only fills what the ring can take */
		for (uint32_t i = 0; i < m->n_flows; i++) {
			if (m->flows[i].arr.kind == DP_ARRIVAL_SATURATE) {
				uint32_t room = spsc_room(&m->rx); /* once: MIN() reads twice */

				limit = MIN(GEN_BATCH, room);
				break;
			}
		}
		while (progress && nb < limit) {
			progress = false;
			for (uint32_t k = 0; k < m->n_flows && nb < limit; k++) {
				/* start where the last burst stopped: no flow starves */
				uint32_t i = m->cursor;
				struct mem_flow *f = &m->flows[i];

				m->cursor = i + 1 == m->n_flows ? 0 : i + 1;
				if (f->arr.next > now)
					continue;
				progress = true;
				__atomic_store_n(&f->st.sent, f->st.sent + 1, __ATOMIC_RELAXED);
				if (unlikely(now - f->arr.next > late_cycles))
					__atomic_store_n(&f->st.late, f->st.late + 1, __ATOMIC_RELAXED);
				if (unlikely(!m->n_free)) {
					__atomic_store_n(&f->st.dropped, f->st.dropped + 1,
							 __ATOMIC_RELAXED);
				} else {
					batch[nb] = m->free[--m->n_free];
					emit(f, batch[nb++], (uint16_t)i, now);
				}
				arrivals_advance(&f->arr, &m->rng, now);
			}
		}
		if (!nb)
			continue;

		/* a full RX ring loses the rest of the burst, as a NIC would */
		pushed = spsc_push(&m->rx, (void *const *)batch, nb);
		for (uint32_t i = pushed; i < nb; i++) {
			struct mem_flow *f = &m->flows[batch[i]->flow];

			__atomic_store_n(&f->st.dropped, f->st.dropped + 1, __ATOMIC_RELAXED);
			m->free[m->n_free++] = batch[i];
		}
	}
	__atomic_store_n(&m->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int mem_start(struct backend *b)
{
	struct mem_backend *m = to_mem(b);
	int err;

	/* every frame starts free, owned by the generator */
	m->n_free = 0;
	spsc_reset(&m->rx);
	spsc_reset(&m->ret);
	m->n_spare = m->spare_out = 0;
	for (uint32_t i = 0; i < m->cfg.n_frames + MEM_SPARE; i++) {
		struct pkt *p = (struct pkt *)(m->frames + (size_t)i * FRAME_SIZE);

		p->frame = i;
		if (i < m->cfg.n_frames)
			m->free[m->n_free++] = p;
		else
			m->spare[m->n_spare++] = p;
	}
	for (uint32_t i = 0; i < m->n_flows; i++)
		memset(&m->flows[i].st, 0, sizeof(m->flows[i].st));
	m->stop = m->done = 0;
	if (!m->n_flows) {
		m->done = 1; /* nothing to generate: no thread */
		return 0;
	}
	err = -pthread_create(&m->thread, NULL, generator, m);
	if (err)
		return err;
	dp_pin_thread(m->thread, m->cfg.core);
	m->started = true;
	return 0;
}

static void mem_stop(struct backend *b)
{
	struct mem_backend *m = to_mem(b);

	if (!m->started)
		return;
	__atomic_store_n(&m->stop, 1, __ATOMIC_RELEASE);
	pthread_join(m->thread, NULL);
	m->started = false;
}

static void mem_destroy(struct backend *b)
{
	struct mem_backend *m = to_mem(b);

	mem_stop(b);
	for (uint32_t i = 0; i < m->n_flows; i++)
		free(m->flows[i].tmpl);
	free(m->flows);
	free(m->free);
	spsc_fini(&m->rx);
	spsc_fini(&m->ret);
	if (m->frames)
		munmap(m->frames, (size_t)(m->cfg.n_frames + MEM_SPARE) * FRAME_SIZE);
	free(m);
}

static const struct backend_ops mem_ops = {
	.name = "mem",
	.rx_burst = mem_rx_burst,
	.tx_burst = mem_tx_burst,
	.free_burst = mem_free_burst,
	.alloc_burst = mem_alloc_burst,
	.start = mem_start,
	.stop = mem_stop,
	.destroy = mem_destroy,
};

static int flow_init(struct mem_flow *f, const struct dp_mem_flow *spec, double hz)
{
	if (spec->len < 14 || spec->len > PKT_MAX_LEN || spec->arrival > DP_ARRIVAL_SATURATE)
		return -EINVAL;
	if (spec->arrival != DP_ARRIVAL_SATURATE && !(spec->rate_pps > 0))
		return -EINVAL;
	if (spec->arrival == DP_ARRIVAL_ONOFF && !(spec->on_us > 0 && spec->off_us >= 0))
		return -EINVAL;
	f->tmpl = malloc(spec->len);
	if (!f->tmpl)
		return -ENOMEM;
	memcpy(f->tmpl, spec->frame, spec->len);
	f->len = spec->len;
	arrivals_init(&f->arr, spec->arrival, spec->rate_pps, spec->on_us, spec->off_us, hz);
	return 0;
}

int dp_backend_mem(dp_t *dp, const struct dp_mem_config *cfg, const struct dp_mem_flow *flows,
		   uint32_t n_flows)
{
	uint32_t nf = cfg->n_frames, rs = cfg->ring_size;
	struct mem_backend *m;
	int err = -EINVAL;

	/* the duration becomes an end in TSC cycles: finite, and small enough
	 * (DP_MEM_MAX_DURATION_S) that it fits in 64 bits */
	if (n_flows > DP_MAX_FLOWS || !nf || (nf & (nf - 1)) || !rs || (rs & (rs - 1)) || rs > nf ||
	    !(cfg->duration_s > 0 && cfg->duration_s <= DP_MEM_MAX_DURATION_S))
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->be.ops = &mem_ops;
	m->cfg = *cfg;
	m->rng = cfg->seed ? cfg->seed : 0x9e3779b97f4a7c15ull;
	m->flows = calloc(n_flows ? n_flows : 1, sizeof(*m->flows));
	m->free = calloc(nf, sizeof(*m->free));
	if (!m->flows || !m->free)
		goto out_free;
	m->n_flows = n_flows;
	for (uint32_t i = 0; i < n_flows; i++) {
		err = flow_init(&m->flows[i], &flows[i], tsc_hz());
		if (err)
			goto out_free;
	}
	err = -ENOMEM;
	m->frames = mmap(NULL, (size_t)(nf + MEM_SPARE) * FRAME_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (m->frames == MAP_FAILED) {
		m->frames = NULL;
		goto out_free;
	}
	if (spsc_init(&m->rx, rs) || spsc_init(&m->ret, nf))
		goto out_free;

	/* swap it in under the control lock: never under a running loop */
	pthread_mutex_lock(&dp->ctl_lock);
	if (dp->running) {
		pthread_mutex_unlock(&dp->ctl_lock);
		err = -EBUSY;
		goto out_free;
	}
	if (dp->be)
		dp->be->ops->destroy(dp->be);
	dp->be = &m->be;
	pthread_mutex_unlock(&dp->ctl_lock);
	return 0;

out_free:
	mem_destroy(&m->be);
	return err;
}

int dp_mem_done(dp_t *dp)
{
	if (!dp->be || dp->be->ops != &mem_ops)
		return -ENODEV;
	return __atomic_load_n(&to_mem(dp->be)->done, __ATOMIC_ACQUIRE);
}

int dp_flow_stats(dp_t *dp, uint32_t flow, struct dp_flow_stats *out)
{
	struct mem_backend *m;

	if (!dp->be || dp->be->ops != &mem_ops)
		return -ENODEV;
	m = to_mem(dp->be);
	if (flow >= m->n_flows)
		return -ENOENT;
	out->sent = __atomic_load_n(&m->flows[flow].st.sent, __ATOMIC_RELAXED);
	out->dropped = __atomic_load_n(&m->flows[flow].st.dropped, __ATOMIC_RELAXED);
	out->late = __atomic_load_n(&m->flows[flow].st.late, __ATOMIC_RELAXED);
	return 0;
}

int dp_mem_pool(dp_t *dp, struct dp_mem_pool *out)
{
	struct mem_backend *m;
	int err = 0;

	pthread_mutex_lock(&dp->ctl_lock);
	if (!dp->be || dp->be->ops != &mem_ops) {
		err = -ENODEV;
	} else if (dp->running) {
		err = -EBUSY; /* the counts move under a running loop and generator */
	} else {
		m = to_mem(dp->be);
		out->frames = m->cfg.n_frames;
		out->free = m->n_free + (m->ret.prod.head - m->ret.cons.tail);
		out->in_rx = m->rx.prod.head - m->rx.cons.tail;
		out->spares = MEM_SPARE;
		out->spare_free = m->n_spare;
	}
	pthread_mutex_unlock(&dp->ctl_lock);
	return err;
}
