/* bare_echo.c - the reference echo: one AF_XDP socket, rx -> swap -> tx.
 *
 * The textbook libxdp l2fwd loop and nothing else: a burst from the RX
 * ring, Ethernet addresses, IPv4 addresses and UDP ports swapped in place
 * (the checksums stay valid: one's-complement sums are symmetric in the
 * swapped fields), the same frames onto the TX ring, one kick, completions
 * back to the fill ring. No classification, queues, scheduling or
 * accounting: what an echoing datapath costs on top of this is its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen.h"
#include "xsk_port.h"

#define BE_MAX_BATCH 256

struct be {
	struct be_config cfg;
	char ifname[IF_NAMESIZE];
	char netns[256];
	struct xsk_port port;
	pthread_t thread;
	int ret;            /* set-up result, valid once `ready` */
	char *err;
	size_t errlen;
	int ready;
	int stop;
	/* loop-written counters, read racily by be_stats */
	uint64_t rx, tx, dropped, tx_full;
};

static always_inline void swap(uint8_t *a, uint8_t *b, uint32_t n)
{
	uint8_t t[6];

	memcpy(t, a, n);
	memcpy(a, b, n);
	memcpy(b, t, n);
}

/* swaps in place; false if this is no IPv4/UDP frame that holds its headers */
static always_inline bool echo_in_place(uint8_t *d, uint32_t len)
{
	uint32_t ihl;

	if (unlikely(len < 14 + 20 + 8 || d[12] != 0x08 || d[13] != 0x00))
		return false;
	ihl = (d[14] & 0xf) * 4u;
	if (unlikely(ihl < 20 || len < 14 + ihl + 8 || d[14 + 9] != 17))
		return false;
	swap(d, d + 6, 6);
	swap(d + 14 + 12, d + 14 + 16, 4);
	swap(d + 14 + ihl, d + 14 + ihl + 2, 2);
	return true;
}

static noinline uint32_t echo_burst(struct be *be)
{
	struct xsk_port *p = &be->port;
	struct xdp_desc out[BE_MAX_BATCH];
	uint32_t idx, n, ntx = 0;

	/* a burst from the RX ring, swapped in place */
	n = xsk_ring_cons__peek(&p->rx, be->cfg.batch, &idx);
	if (!n)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct xdp_desc *rd = xsk_ring_cons__rx_desc(&p->rx, idx + i);

		if (likely(echo_in_place(xsk_umem__get_data(p->area, rd->addr), rd->len))) {
			out[ntx++] = *rd;
		} else {
			p->pool[p->n_pool++] = rd->addr & ~PORT_FRAME_MASK;
			be->dropped++;
		}
	}
	xsk_ring_cons__release(&p->rx, n);
	be->rx += n;
	if (!ntx)
		return 0;

	/* onto the TX ring in one go (completions reaped if it is full) */
	if (xsk_ring_prod__reserve(&p->tx, ntx, &idx) != ntx) {
		xsk_port_reap(p);
		if (unlikely(xsk_ring_prod__reserve(&p->tx, ntx, &idx) != ntx)) {
			for (uint32_t i = 0; i < ntx; i++)
				p->pool[p->n_pool++] = out[i].addr & ~PORT_FRAME_MASK;
			be->tx_full += ntx;
			return 0;
		}
	}
	for (uint32_t i = 0; i < ntx; i++)
		*xsk_ring_prod__tx_desc(&p->tx, idx + i) = out[i];
	xsk_ring_prod__submit(&p->tx, ntx);
	be->tx += ntx;
	return ntx;
}

static void *echo_thread(void *arg)
{
	struct be *be = arg;
	struct xsk_port *p = &be->port;
	int ret;

	ret = thread_enter(be->netns[0] ? be->netns : NULL, be->cfg.core, be->err, be->errlen);
	if (!ret)
		ret = xsk_port_open(p, be->ifname, be->cfg.queue, be->cfg.n_frames,
				    be->cfg.ring_size, be->err, be->errlen);
	if (!ret)
		xsk_port_refill(p, p->ring_size);
	be->ret = ret;
	__atomic_store_n(&be->ready, 1, __ATOMIC_RELEASE);
	if (ret)
		return NULL;
	be->err = NULL; /* the caller's buffer is gone after be_start */

	while (!__atomic_load_n(&be->stop, __ATOMIC_RELAXED)) {
		echo_burst(be);
		/* copy mode sends only inside sendto(): kick while anything waits */
		if (xsk_ring_prod__needs_wakeup(&p->tx) &&
		    xsk_prod_nb_free(&p->tx, p->ring_size) < p->ring_size)
			xsk_port_kick(p);
		xsk_port_reap(p);
		xsk_port_refill(p, p->ring_size);
	}
	xsk_port_close(p); /* on this thread, in its namespace */
	return NULL;
}

int be_start(const struct be_config *cfg, be_t **out, char *err, size_t errlen)
{
	struct be *be;
	int ret;

	*out = NULL;
	if (!cfg->ifname || strlen(cfg->ifname) >= IF_NAMESIZE)
		return errf(err, errlen, -EINVAL, "no interface name (or longer than %d characters)",
			    IF_NAMESIZE - 1);
	if (cfg->batch < 1 || cfg->batch > BE_MAX_BATCH || cfg->batch > cfg->ring_size)
		return errf(err, errlen, -EINVAL, "batch must be in 1..%d (and <= ring_size), not %u",
			    BE_MAX_BATCH, cfg->batch);
	be = calloc(1, sizeof(*be));
	if (!be)
		return errf(err, errlen, -ENOMEM, "out of memory");
	be->cfg = *cfg;
	strcpy(be->ifname, cfg->ifname);
	if (cfg->netns)
		snprintf(be->netns, sizeof(be->netns), "%s", cfg->netns);
	be->port.fd = -1;
	be->err = err;
	be->errlen = errlen;
	ret = pthread_create(&be->thread, NULL, echo_thread, be);
	if (ret) {
		free(be);
		return errf(err, errlen, -ret, "cannot start the echo thread: %s", strerror(ret));
	}
	while (!__atomic_load_n(&be->ready, __ATOMIC_ACQUIRE))
		sched_yield();
	if (be->ret) {
		ret = be->ret;
		pthread_join(be->thread, NULL);
		free(be);
		return ret;
	}
	*out = be;
	return 0;
}

int be_fd(be_t *be)
{
	return be->port.fd;
}

int be_stats(be_t *be, struct be_stats *out)
{
	out->rx = __atomic_load_n(&be->rx, __ATOMIC_RELAXED);
	out->tx = __atomic_load_n(&be->tx, __ATOMIC_RELAXED);
	out->dropped = __atomic_load_n(&be->dropped, __ATOMIC_RELAXED);
	out->tx_full = __atomic_load_n(&be->tx_full, __ATOMIC_RELAXED);
	xsk_port_kernel_stats(&be->port, &out->rx_dropped, &out->rx_ring_full, &out->fill_empty);
	return 0;
}

void be_stop(be_t *be)
{
	if (!be)
		return;
	__atomic_store_n(&be->stop, 1, __ATOMIC_RELAXED);
	pthread_join(be->thread, NULL);
	free(be);
}
