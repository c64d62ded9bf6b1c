/* backend_afxdp.c - packets from and to a real interface through AF_XDP.
 *
 * One AF_XDP socket on one (interface, queue), made with libxdp's xsk
 * helpers; libxdp's own XDP program is never loaded
 * (XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD): isolane's steering program
 * (ebpf/steer.py) redirects into its XSKMAP, where Python puts this
 * socket's fd (dp_afxdp_fd, Steer.bind_xsk).
 *
 * UMEM: n_frames frames of FRAME_SIZE, laid out as pkt.h says:
 *
 *   frame: | struct pkt (64) | XDP headroom (256) | data ... |
 *
 * The kernel places received data at frame + umem headroom +
 * XDP_PACKET_HEADROOM, so the UMEM headroom is PKT_META_SIZE: the kernel
 * never touches the metadata and the data lands at PKT_DATA_OFF. The
 * descriptor's address is used as it is (p->off = addr within the frame).
 *
 * Frame ownership: every frame is in exactly one place - the free pool
 * (user space, a stack), the fill ring or RX ring (kernel), the datapath
 * (handed out by rx_burst), or the TX ring / in flight until its
 * completion comes back. Completions and freed frames go to the pool; the
 * pool refills the fill ring. Only the loop thread touches the rings and
 * the pool (dp_stop frees queued packets after the loop has ended).
 *
 * Per burst: one rdtsc, ring index updates, and the TX kick (sendto) when
 * the kernel asks for one; nothing is allocated. */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <xdp/xsk.h>

#include "internal.h"
#include "tsc.h"

#define EBUSY_TRIES 25       /* x EBUSY_WAIT_US: how long a busy queue is retried */
#define EBUSY_WAIT_US 10000
#define FRAME_MASK ((uint64_t)FRAME_SIZE - 1)

_Static_assert(PKT_HEADROOM == XDP_PACKET_HEADROOM, "isolane's headroom is the kernel's");

static __thread char last_error[256];

static int fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return err;
}

const char *dp_afxdp_last_error(void)
{
	return last_error;
}

struct afxdp_backend {
	struct backend be;
	struct dp_afxdp_config cfg;
	char ifname[IF_NAMESIZE];
	uint8_t *umem_area;
	size_t umem_size;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	int fd;
	bool need_wakeup;

	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;

	uint64_t *pool; /* free frames' UMEM addresses (frame starts) */
	uint32_t n_pool;

	/* loop-written counters, read racily by dp_afxdp_stats */
	uint64_t n_rx, n_tx, n_kicks, n_kick_errors;
};

static inline struct afxdp_backend *to_x(struct backend *b)
{
	return (struct afxdp_backend *)b;
}

/* completions back to the pool */
static always_inline void reap(struct afxdp_backend *x)
{
	uint32_t idx, n;

	n = xsk_ring_cons__peek(&x->comp, x->cfg.ring_size, &idx);
	if (!n)
		return;
	for (uint32_t i = 0; i < n; i++)
		x->pool[x->n_pool++] = *xsk_ring_cons__comp_addr(&x->comp, idx + i) & ~FRAME_MASK;
	xsk_ring_cons__release(&x->comp, n);
}

/* the pool into the fill ring, as much as both allow */
static always_inline void refill(struct afxdp_backend *x)
{
	uint32_t idx, n = x->n_pool;

	if (!n)
		return;
	n = xsk_prod_nb_free(&x->fill, n);
	if (n > x->n_pool)
		n = x->n_pool;
	if (!n || xsk_ring_prod__reserve(&x->fill, n, &idx) != n)
		return;
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&x->fill, idx + i) = x->pool[--x->n_pool];
	xsk_ring_prod__submit(&x->fill, n);
}

static void kick_tx(struct afxdp_backend *x)
{
	x->n_kicks++;
	if (sendto(x->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN &&
	    errno != EBUSY && errno != ENOBUFS)
		x->n_kick_errors++;
}

static uint32_t afxdp_rx_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	struct afxdp_backend *x = to_x(b);
	uint32_t idx, got;
	uint64_t now;

	reap(x);
	refill(x);
	got = xsk_ring_cons__peek(&x->rx, n, &idx);
	if (!got) {
		/* zero-copy drivers may want a wakeup to use the fill ring */
		if (x->need_wakeup && xsk_ring_prod__needs_wakeup(&x->fill)) {
			x->n_kicks++;
			recvfrom(x->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
		}
		return 0;
	}
	now = rdtsc();
	for (uint32_t i = 0; i < got; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&x->rx, idx + i);
		uint64_t base = d->addr & ~FRAME_MASK;
		struct pkt *p = (struct pkt *)(x->umem_area + base);

		p->off = (uint32_t)(d->addr - base);
		p->len = d->len;
		p->frame = (uint32_t)(base / FRAME_SIZE);
		p->flow = 0;
		p->ts_intended = now;
		pkts[i] = p;
	}
	xsk_ring_cons__release(&x->rx, got);
	x->n_rx += got;
	return got;
}

static uint32_t afxdp_tx_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	struct afxdp_backend *x = to_x(b);
	uint32_t idx, room;

	reap(x);
	room = xsk_prod_nb_free(&x->tx, n);
	if (room < n)
		n = room;
	if (!n || xsk_ring_prod__reserve(&x->tx, n, &idx) != n) {
		/* a full ring: the kernel may still be waiting for its kick */
		if (xsk_ring_prod__needs_wakeup(&x->tx) || !x->need_wakeup)
			kick_tx(x);
		return 0;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct xdp_desc *d = xsk_ring_prod__tx_desc(&x->tx, idx + i);
		struct pkt *p = pkts[i];

		d->addr = (uint64_t)((uint8_t *)p - x->umem_area) + p->off;
		d->len = p->len;
		d->options = 0;
	}
	xsk_ring_prod__submit(&x->tx, n);
	x->n_tx += n;
	/* copy mode transmits only in sendto: it always wants the kick */
	if (!x->need_wakeup || xsk_ring_prod__needs_wakeup(&x->tx))
		kick_tx(x);
	return n;
}

static void afxdp_free_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	struct afxdp_backend *x = to_x(b);

	for (uint32_t i = 0; i < n; i++)
		x->pool[x->n_pool++] = (uint64_t)((uint8_t *)pkts[i] - x->umem_area);
}

static int afxdp_start(struct backend *b)
{
	struct afxdp_backend *x = to_x(b);

	reap(x);
	refill(x);
	return 0;
}

static void afxdp_stop(struct backend *b)
{
	reap(to_x(b));
}

static void afxdp_destroy(struct backend *b)
{
	struct afxdp_backend *x = to_x(b);

	if (x->xsk)
		xsk_socket__delete(x->xsk);
	if (x->umem)
		xsk_umem__delete(x->umem);
	if (x->umem_area)
		munmap(x->umem_area, x->umem_size);
	free(x->pool);
	free(x);
}

static const struct backend_ops afxdp_ops = {
	.name = "afxdp",
	.rx_burst = afxdp_rx_burst,
	.tx_burst = afxdp_tx_burst,
	.free_burst = afxdp_free_burst,
	.start = afxdp_start,
	.stop = afxdp_stop,
	.destroy = afxdp_destroy,
};

static bool pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

static int socket_error(int err, const struct dp_afxdp_config *cfg)
{
	switch (-err) {
	case EBUSY:
		return fail(err, "queue %u of %s already has an AF_XDP socket (another isolane, or a "
			    "leftover process): stop it, or use another queue", cfg->queue, cfg->ifname);
	case ENOBUFS:
	case ENOMEM:
		return fail(err, "cannot register the UMEM (%s): raise the locked-memory limit "
			    "(ulimit -l unlimited) or use fewer frames", strerror(-err));
	case EPERM:
		return fail(err, "AF_XDP needs CAP_NET_RAW/CAP_NET_ADMIN and CAP_IPC_LOCK: run as root");
	case EOPNOTSUPP:
		return fail(err, "%s does not support %s AF_XDP on queue %u", cfg->ifname,
			    cfg->flags & DP_AFXDP_ZEROCOPY ? "zero-copy" : "copy-mode", cfg->queue);
	case EINVAL:
		return fail(err, "the kernel refused the AF_XDP socket on %s queue %u (does the "
			    "queue exist? `ethtool -l %s`)", cfg->ifname, cfg->queue, cfg->ifname);
	case EAFNOSUPPORT:
		return fail(err, "this kernel has no AF_XDP (CONFIG_XDP_SOCKETS)");
	default:
		return fail(err, "creating the AF_XDP socket on %s queue %u: %s", cfg->ifname,
			    cfg->queue, strerror(-err));
	}
}

int dp_backend_afxdp(dp_t *dp, const struct dp_afxdp_config *cfg)
{
	const uint32_t nf = cfg->n_frames, rs = cfg->ring_size;
	const uint32_t mode = cfg->flags & (DP_AFXDP_COPY | DP_AFXDP_ZEROCOPY);
	struct xsk_umem_config ucfg = {
		.fill_size = rs,
		.comp_size = rs,
		.frame_size = FRAME_SIZE,
		.frame_headroom = PKT_META_SIZE, /* + the kernel's 256: data at PKT_DATA_OFF */
		.flags = 0,
	};
	struct xsk_socket_config scfg = {
		.rx_size = rs,
		.tx_size = rs,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.xdp_flags = 0,
		.bind_flags = 0,
	};
	const struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
	struct afxdp_backend *x;
	int err;

	last_error[0] = 0;
	if (!cfg->ifname || !cfg->ifname[0] || strlen(cfg->ifname) >= IF_NAMESIZE)
		return fail(-EINVAL, "no interface name (or longer than %d characters)",
			    IF_NAMESIZE - 1);
	if (!pow2(nf) || !pow2(rs) || rs < 8 || nf < 2 * rs)
		return fail(-EINVAL, "n_frames (%u) and ring_size (%u) must be powers of two, "
			    "ring_size >= 8 and n_frames >= 2 * ring_size", nf, rs);
	if (mode == (DP_AFXDP_COPY | DP_AFXDP_ZEROCOPY) ||
	    (cfg->flags & ~(DP_AFXDP_COPY | DP_AFXDP_ZEROCOPY | DP_AFXDP_NEED_WAKEUP)))
		return fail(-EINVAL, "flags 0x%x: copy and zerocopy exclude each other", cfg->flags);
	if (!if_nametoindex(cfg->ifname))
		return fail(-ENODEV, "no interface %s in this thread's network namespace: check "
			    "`ip link` (or enter the namespace it lives in)", cfg->ifname);

	/* UMEM pages are locked: old kernels count them against RLIMIT_MEMLOCK */
	if (setrlimit(RLIMIT_MEMLOCK, &unlimited)) {
		struct rlimit cur;

		if (!getrlimit(RLIMIT_MEMLOCK, &cur) && cur.rlim_cur != RLIM_INFINITY &&
		    cur.rlim_cur < (rlim_t)nf * FRAME_SIZE)
			return fail(-ENOBUFS, "RLIMIT_MEMLOCK is %llu bytes and cannot be raised: the "
				    "UMEM needs %llu; run as root or `ulimit -l unlimited`",
				    (unsigned long long)cur.rlim_cur,
				    (unsigned long long)nf * FRAME_SIZE);
	}

	x = calloc(1, sizeof(*x));
	if (!x)
		return fail(-ENOMEM, "out of memory");
	x->be.ops = &afxdp_ops;
	x->cfg = *cfg;
	snprintf(x->ifname, sizeof(x->ifname), "%s", cfg->ifname);
	x->cfg.ifname = x->ifname;
	x->fd = -1;
	x->need_wakeup = cfg->flags & DP_AFXDP_NEED_WAKEUP;
	x->pool = calloc(nf, sizeof(*x->pool));
	if (!x->pool) {
		err = fail(-ENOMEM, "out of memory");
		goto out_free;
	}
	x->umem_size = (size_t)nf * FRAME_SIZE;
	x->umem_area = mmap(NULL, x->umem_size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (x->umem_area == MAP_FAILED) {
		x->umem_area = NULL;
		err = fail(-ENOMEM, "cannot map %zu bytes of UMEM", x->umem_size);
		goto out_free;
	}
	scfg.bind_flags = (mode == DP_AFXDP_ZEROCOPY ? XDP_ZEROCOPY : XDP_COPY) |
			  (x->need_wakeup ? XDP_USE_NEED_WAKEUP : 0);
	/* a socket closed just before (a restarted datapath) leaves its queue
	 * busy until the kernel's deferred release has run: retry EBUSY for a
	 * little while, with a fresh UMEM each time */
	for (int tries = 0;; tries++) {
		err = xsk_umem__create(&x->umem, x->umem_area, x->umem_size, &x->fill, &x->comp,
				       &ucfg);
		if (err) {
			x->umem = NULL;
			socket_error(err, cfg);
			goto out_free;
		}
		err = xsk_socket__create(&x->xsk, cfg->ifname, cfg->queue, x->umem, &x->rx, &x->tx,
					 &scfg);
		if (!err)
			break;
		x->xsk = NULL;
		xsk_umem__delete(x->umem);
		x->umem = NULL;
		if (err != -EBUSY || tries == EBUSY_TRIES) {
			socket_error(err, cfg);
			goto out_free;
		}
		usleep(EBUSY_WAIT_US);
	}
	x->fd = xsk_socket__fd(x->xsk);

	/* every frame starts in the pool; the fill ring takes what it holds */
	for (uint32_t i = 0; i < nf; i++)
		x->pool[x->n_pool++] = (uint64_t)(nf - 1 - i) * FRAME_SIZE;
	refill(x);

	pthread_mutex_lock(&dp->ctl_lock);
	if (dp->running) {
		pthread_mutex_unlock(&dp->ctl_lock);
		err = fail(-EBUSY, "the datapath is running: stop it before changing its backend");
		goto out_free;
	}
	if (dp->be)
		dp->be->ops->destroy(dp->be);
	dp->be = &x->be;
	pthread_mutex_unlock(&dp->ctl_lock);
	return 0;

out_free:
	afxdp_destroy(&x->be);
	return err;
}

static struct afxdp_backend *afxdp_of(dp_t *dp)
{
	if (!dp->be || dp->be->ops != &afxdp_ops)
		return NULL;
	return to_x(dp->be);
}

int dp_afxdp_fd(dp_t *dp)
{
	struct afxdp_backend *x = afxdp_of(dp);

	return x ? x->fd : fail(-ENODEV, "the datapath has no afxdp backend");
}

int dp_afxdp_stats(dp_t *dp, struct dp_afxdp_stats *out)
{
	struct afxdp_backend *x = afxdp_of(dp);
	struct xdp_statistics st = {0};
	socklen_t len = sizeof(st);

	if (!x)
		return fail(-ENODEV, "the datapath has no afxdp backend");
	if (getsockopt(x->fd, SOL_XDP, XDP_STATISTICS, &st, &len))
		return fail(-errno, "XDP_STATISTICS: %s", strerror(errno));
	memset(out, 0, sizeof(*out));
	out->rx = __atomic_load_n(&x->n_rx, __ATOMIC_RELAXED);
	out->tx = __atomic_load_n(&x->n_tx, __ATOMIC_RELAXED);
	out->kicks = __atomic_load_n(&x->n_kicks, __ATOMIC_RELAXED);
	out->kick_errors = __atomic_load_n(&x->n_kick_errors, __ATOMIC_RELAXED);
	out->rx_dropped = st.rx_dropped;
	out->rx_invalid = st.rx_invalid_descs;
	out->tx_invalid = st.tx_invalid_descs;
	out->rx_ring_full = st.rx_ring_full;
	out->fill_empty = st.rx_fill_ring_empty_descs;
	out->tx_ring_empty = st.tx_ring_empty_descs;
	return 0;
}
