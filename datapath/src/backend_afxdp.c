/* backend_afxdp.c - packets from and to a real interface through AF_XDP.
 *
 * One AF_XDP socket per (interface, queue), made with libxdp's xsk helpers,
 * all on one UMEM (xsk_socket__create_shared: each socket has its own fill
 * and completion rings, the frames are common). libxdp's own XDP program is
 * never loaded (XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD): isolane's steering
 * program (ebpf/steer.py) redirects each frame into its XSKMAP at the
 * frame's receive queue, where Python puts that queue's socket
 * (dp_afxdp_socket_fd, Steer.bind_xsk).
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
 * (user space, a stack shared by the sockets), a fill ring or RX ring
 * (kernel), the datapath (handed out by rx_burst), or a TX ring / in
 * flight until its completion comes back on that socket's completion ring.
 * Completions and freed frames go to the pool; the pool refills every
 * socket's fill ring, each its share. A frame remembers the socket it came
 * in on (sock_of) so that its reply leaves through the same queue. Only the
 * loop thread touches the rings and the pool (dp_stop frees queued packets
 * after the loop has ended).
 *
 * Modes: the XDP program runs in the driver (native) where the driver has
 * XDP_REDIRECT, else on the generic SKB path; sockets are zero-copy where
 * the driver has AF_XDP zero-copy (native only), else copy. The driver's
 * features come from the kernel (netdev_info.c); the first socket's bind
 * decides copy or zero-copy for all (shared sockets inherit it).
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
#include "netdev_info.h"
#include "tsc.h"

#define EBUSY_TRIES 25       /* x EBUSY_WAIT_US: how long a busy queue is retried */
#define EBUSY_WAIT_US 10000
#define FRAME_MASK ((uint64_t)FRAME_SIZE - 1)
#define XDP_NEEDED (NETDEV_XDP_ACT_BASIC | NETDEV_XDP_ACT_REDIRECT)

_Static_assert(PKT_HEADROOM == XDP_PACKET_HEADROOM, "isolane's headroom is the kernel's");
_Static_assert(DP_AFXDP_MAX_QUEUES <= 256, "sock_of holds a socket index in a byte");

static __thread char last_error[320];

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

/* one socket: its four rings and the loop's counters (read racily by
 * dp_afxdp_socket_stats) */
struct xsk_sock {
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_socket *xsk;
	int fd;
	uint32_t queue;
	uint32_t bound;  /* DP_AFXDP_ZEROCOPY or DP_AFXDP_COPY, as the kernel bound it */
	uint64_t n_rx, n_tx, n_kicks, n_kick_errors, n_filled, n_completed;
} __attribute__((aligned(64)));

struct afxdp_backend {
	struct backend be;
	struct dp_afxdp_config cfg;
	char ifname[IF_NAMESIZE];
	char driver[32];
	uint32_t queues[DP_AFXDP_MAX_QUEUES];
	uint32_t xdp_mode;   /* DP_AFXDP_SKB or DP_AFXDP_NATIVE */
	bool need_wakeup;
	uint8_t *umem_area;
	size_t umem_size;
	struct xsk_umem *umem;
	struct xsk_sock *socks;
	uint32_t n_socks;
	uint32_t next_rx;    /* the socket rx_burst polls first (round robin) */
	uint8_t *sock_of;    /* per frame: the socket it was received on */

	uint64_t *pool;      /* free frames' UMEM addresses (frame starts) */
	uint32_t n_pool;

	int rtnl_fd;         /* in the interface's namespace: its XDP mode for stats */
	int ifindex;
	pthread_mutex_t rtnl_lock;
};

static inline struct afxdp_backend *to_x(struct backend *b)
{
	return (struct afxdp_backend *)b;
}

static always_inline uint32_t frame_of(const struct afxdp_backend *x, const struct pkt *p)
{
	return (uint32_t)(((const uint8_t *)p - x->umem_area) / FRAME_SIZE);
}

/* a socket's completions back to the pool */
static always_inline void reap(struct afxdp_backend *x, struct xsk_sock *s)
{
	uint32_t idx, n;

	n = xsk_ring_cons__peek(&s->comp, x->cfg.ring_size, &idx);
	if (!n)
		return;
	for (uint32_t i = 0; i < n; i++)
		x->pool[x->n_pool++] = *xsk_ring_cons__comp_addr(&s->comp, idx + i) & ~FRAME_MASK;
	xsk_ring_cons__release(&s->comp, n);
	s->n_completed += n;
}

/* the pool into the fill rings: each socket takes at most an equal share
 * of what is left, so one busy queue cannot starve the others */
static always_inline void refill(struct afxdp_backend *x)
{
	for (uint32_t i = 0; i < x->n_socks && x->n_pool; i++) {
		struct xsk_sock *s = &x->socks[i];
		uint32_t left = x->n_socks - i;
		uint32_t share = (x->n_pool + left - 1) / left, idx, n;

		n = xsk_prod_nb_free(&s->fill, share);
		if (n > share)
			n = share;
		if (!n || xsk_ring_prod__reserve(&s->fill, n, &idx) != n)
			continue;
		for (uint32_t k = 0; k < n; k++)
			*xsk_ring_prod__fill_addr(&s->fill, idx + k) = x->pool[--x->n_pool];
		xsk_ring_prod__submit(&s->fill, n);
		s->n_filled += n;
	}
}

static void kick_tx(struct xsk_sock *s)
{
	s->n_kicks++;
	if (sendto(s->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN &&
	    errno != EBUSY && errno != ENOBUFS)
		s->n_kick_errors++;
}

static uint32_t afxdp_rx_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	struct afxdp_backend *x = to_x(b);
	uint32_t got = 0, first = x->next_rx;
	uint64_t now = 0;

	for (uint32_t i = 0; i < x->n_socks; i++)
		reap(x, &x->socks[i]);
	refill(x);

	/* poll the sockets round robin, each burst starting one further on,
	 * until the burst is full */
	if (++x->next_rx == x->n_socks)
		x->next_rx = 0;
	for (uint32_t k = 0; k < x->n_socks && got < n; k++) {
		uint32_t si = first + k < x->n_socks ? first + k : first + k - x->n_socks;
		struct xsk_sock *s = &x->socks[si];
		uint32_t idx, m;

		m = xsk_ring_cons__peek(&s->rx, n - got, &idx);
		if (!m) {
			/* zero-copy drivers may want a wakeup to use the fill ring */
			if (x->need_wakeup && xsk_ring_prod__needs_wakeup(&s->fill)) {
				s->n_kicks++;
				recvfrom(s->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
			}
			continue;
		}
		if (!now)
			now = rdtsc();
		for (uint32_t i = 0; i < m; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&s->rx, idx + i);
			uint64_t base = d->addr & ~FRAME_MASK;
			struct pkt *p = (struct pkt *)(x->umem_area + base);

			p->off = (uint32_t)(d->addr - base);
			p->len = d->len;
			p->frame = (uint32_t)(base / FRAME_SIZE);
			p->flow = 0;
			p->ts_intended = now;
			x->sock_of[p->frame] = (uint8_t)si;
			pkts[got + i] = p;
		}
		xsk_ring_cons__release(&s->rx, m);
		s->n_rx += m;
		got += m;
	}
	return got;
}

/* Each packet leaves on the socket it came in on (socket 0 for a frame
 * that came in on none). The packets taken are moved to the front of
 * pkts (backend.h: the caller frees pkts[taken..n)). */
static uint32_t afxdp_tx_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	struct afxdp_backend *x = to_x(b);
	uint32_t want[DP_AFXDP_MAX_QUEUES], room[DP_AFXDP_MAX_QUEUES], idx[DP_AFXDP_MAX_QUEUES];
	uint64_t short_of_room = 0; /* sockets whose TX ring could not take them all */
	uint32_t taken = 0;

	/* count each socket's packets, reserve what its TX ring has room for */
	memset(want, 0, x->n_socks * sizeof(want[0]));
	for (uint32_t i = 0; i < n; i++)
		want[x->sock_of[frame_of(x, pkts[i])]]++;
	for (uint32_t si = 0; si < x->n_socks; si++) {
		struct xsk_sock *s = &x->socks[si];

		room[si] = 0;
		if (!want[si])
			continue;
		reap(x, s);
		room[si] = xsk_prod_nb_free(&s->tx, want[si]);
		if (room[si] > want[si])
			room[si] = want[si];
		if (room[si] && xsk_ring_prod__reserve(&s->tx, room[si], &idx[si]) != room[si])
			room[si] = 0;
		if (room[si] < want[si])
			short_of_room |= 1ull << si;
		want[si] = room[si]; /* from here: descriptors still to write */
	}

	/* write the descriptors; taken packets to the front */
	for (uint32_t i = 0; i < n; i++) {
		struct pkt *p = pkts[i];
		uint32_t si = x->sock_of[frame_of(x, p)];
		struct xdp_desc *d;

		if (!want[si])
			continue;
		want[si]--;
		d = xsk_ring_prod__tx_desc(&x->socks[si].tx, idx[si]++);
		d->addr = (uint64_t)((uint8_t *)p - x->umem_area) + p->off;
		d->len = p->len;
		d->options = 0;
		pkts[i] = pkts[taken];
		pkts[taken++] = p;
	}

	/* submit; copy mode transmits only in sendto: it always wants the
	 * kick, as does a full ring whose kernel side may wait for one */
	for (uint32_t si = 0; si < x->n_socks; si++) {
		struct xsk_sock *s = &x->socks[si];

		if (room[si]) {
			xsk_ring_prod__submit(&s->tx, room[si]);
			s->n_tx += room[si];
		}
		if ((room[si] || (short_of_room >> si & 1)) &&
		    (!x->need_wakeup || xsk_ring_prod__needs_wakeup(&s->tx)))
			kick_tx(s);
	}
	return taken;
}

static void afxdp_free_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	struct afxdp_backend *x = to_x(b);

	for (uint32_t i = 0; i < n; i++)
		x->pool[x->n_pool++] = (uint64_t)((uint8_t *)pkts[i] - x->umem_area);
}

/* frames for packets the datapath makes itself (slow-path sends): from the
 * pool, leaving through the first socket (they came in on none) */
static uint32_t afxdp_alloc_burst(struct backend *b, struct pkt **pkts, uint32_t n)
{
	struct afxdp_backend *x = to_x(b);

	for (uint32_t i = 0; i < x->n_socks; i++)
		reap(x, &x->socks[i]);
	if (n > x->n_pool)
		n = x->n_pool;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t base = x->pool[--x->n_pool];
		struct pkt *p = (struct pkt *)(x->umem_area + base);

		p->off = PKT_DATA_OFF;
		p->len = 0;
		p->frame = (uint32_t)(base / FRAME_SIZE);
		p->flow = 0;
		p->ts_intended = 0;
		x->sock_of[p->frame] = 0;
		pkts[i] = p;
	}
	return n;
}

static int afxdp_start(struct backend *b)
{
	struct afxdp_backend *x = to_x(b);

	for (uint32_t i = 0; i < x->n_socks; i++)
		reap(x, &x->socks[i]);
	refill(x);
	return 0;
}

static void afxdp_stop(struct backend *b)
{
	struct afxdp_backend *x = to_x(b);

	for (uint32_t i = 0; i < x->n_socks; i++)
		reap(x, &x->socks[i]);
}

static void delete_sockets(struct afxdp_backend *x)
{
	for (uint32_t i = 0; x->socks && i < x->n_socks; i++) {
		if (x->socks[i].xsk)
			xsk_socket__delete(x->socks[i].xsk);
		x->socks[i].xsk = NULL;
		x->socks[i].fd = -1;
	}
	if (x->umem)
		xsk_umem__delete(x->umem);
	x->umem = NULL;
}

static void afxdp_destroy(struct backend *b)
{
	struct afxdp_backend *x = to_x(b);

	delete_sockets(x);
	if (x->umem_area)
		munmap(x->umem_area, x->umem_size);
	if (x->rtnl_fd >= 0)
		close(x->rtnl_fd);
	pthread_mutex_destroy(&x->rtnl_lock);
	free(x->socks);
	free(x->sock_of);
	free(x->pool);
	free(x);
}

static const struct backend_ops afxdp_ops = {
	.name = "afxdp",
	.rx_burst = afxdp_rx_burst,
	.tx_burst = afxdp_tx_burst,
	.free_burst = afxdp_free_burst,
	.alloc_burst = afxdp_alloc_burst,
	.start = afxdp_start,
	.stop = afxdp_stop,
	.destroy = afxdp_destroy,
};

static bool pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

static const char *zc_name(uint32_t bind)
{
	return bind == DP_AFXDP_ZEROCOPY ? "zero-copy" : "copy-mode";
}

static int socket_error(int err, const struct afxdp_backend *x, uint32_t queue, uint32_t bind)
{
	switch (-err) {
	case EBUSY:
		return fail(err, "queue %u of %s already has an AF_XDP socket (another isolane, or a "
			    "leftover process): stop it, or use another queue", queue, x->ifname);
	case ENOBUFS:
	case ENOMEM:
		return fail(err, "cannot register the UMEM (%s): raise the locked-memory limit "
			    "(ulimit -l unlimited) or use fewer frames", strerror(-err));
	case EPERM:
		return fail(err, "AF_XDP needs CAP_NET_RAW/CAP_NET_ADMIN and CAP_IPC_LOCK: run as root");
	case EOPNOTSUPP:
		return fail(err, "%s (driver %s) does not support %s AF_XDP on queue %u%s", x->ifname,
			    x->driver, zc_name(bind), queue,
			    bind == DP_AFXDP_ZEROCOPY ? ": the driver has no zero-copy, use "
			    "zerocopy=False (or \"auto\")" : "");
	case EINVAL:
		return fail(err, "the kernel refused the AF_XDP socket on %s queue %u (does the "
			    "queue exist? `ethtool -l %s`)", x->ifname, queue, x->ifname);
	case EAFNOSUPPORT:
		return fail(err, "this kernel has no AF_XDP (CONFIG_XDP_SOCKETS)");
	default:
		return fail(err, "creating the AF_XDP socket on %s queue %u: %s", x->ifname, queue,
			    strerror(-err));
	}
}

/* the queue list, checked: distinct, and each one the interface has */
static int take_queues(struct afxdp_backend *x, const struct dp_afxdp_config *cfg)
{
	int have;

	x->n_socks = cfg->n_queues ? cfg->n_queues : 1;
	if (cfg->n_queues > DP_AFXDP_MAX_QUEUES || (cfg->n_queues && !cfg->queues))
		return fail(-EINVAL, "n_queues must be 0..%d with a queue list", DP_AFXDP_MAX_QUEUES);
	for (uint32_t i = 0; i < x->n_socks; i++) {
		x->queues[i] = cfg->n_queues ? cfg->queues[i] : cfg->queue;
		for (uint32_t k = 0; k < i; k++)
			if (x->queues[k] == x->queues[i])
				return fail(-EINVAL, "queue %u is listed twice", x->queues[i]);
	}
	have = netdev_rx_queues(x->ifname);
	if (have <= 0)
		return 0; /* the driver does not say: bind will tell */
	for (uint32_t i = 0; i < x->n_socks; i++)
		if (x->queues[i] >= (uint32_t)have)
			return fail(-ERANGE, "%s has %d receive queue%s (0..%d): there is no queue %u; "
				    "use a lower index, or give the interface more queues "
				    "(`ethtool -L %s combined N`, veth: numrxqueues/numtxqueues)",
				    x->ifname, have, have == 1 ? "" : "s", have - 1, x->queues[i],
				    x->ifname);
	return 0;
}

/* native or SKB XDP, and the bind flags to try in order (copy and/or
 * zero-copy), from the flags asked for and what the driver has */
static int choose_mode(struct afxdp_backend *x, uint32_t flags, uint32_t *binds, int *n_binds)
{
	uint64_t feat = 0;
	const bool known = netdev_xdp_features(x->ifindex, &feat) == 0;
	const bool native_ok = known && (feat & XDP_NEEDED) == XDP_NEEDED;
	const bool zc_ok = known && (feat & NETDEV_XDP_ACT_XSK_ZEROCOPY);

	if (flags & DP_AFXDP_SKB) {
		x->xdp_mode = DP_AFXDP_SKB;
	} else if (flags & DP_AFXDP_NATIVE) {
		if (known && !native_ok)
			return fail(-EOPNOTSUPP, "%s (driver %s) has no native XDP redirect: use "
				    "mode=\"skb\" (or \"auto\")", x->ifname, x->driver);
		x->xdp_mode = DP_AFXDP_NATIVE;
	} else {
		x->xdp_mode = native_ok ? DP_AFXDP_NATIVE : DP_AFXDP_SKB;
	}

	*n_binds = 0;
	if (flags & DP_AFXDP_ZEROCOPY) {
		if (x->xdp_mode == DP_AFXDP_SKB)
			return fail(-EINVAL, "zero-copy needs native XDP: use mode=\"native\" (or "
				    "\"auto\") with zerocopy=True, or zerocopy=False");
		if (known && !zc_ok)
			return fail(-EOPNOTSUPP, "%s (driver %s) has no AF_XDP zero-copy: use "
				    "zerocopy=False (or \"auto\")", x->ifname, x->driver);
		binds[(*n_binds)++] = DP_AFXDP_ZEROCOPY;
	} else if (flags & DP_AFXDP_COPY) {
		binds[(*n_binds)++] = DP_AFXDP_COPY;
	} else {
		if (x->xdp_mode == DP_AFXDP_NATIVE && zc_ok)
			binds[(*n_binds)++] = DP_AFXDP_ZEROCOPY;
		binds[(*n_binds)++] = DP_AFXDP_COPY;
	}
	return 0;
}

/* the UMEM and one socket per queue, bound with `bind`; on failure nothing
 * is left and *failed_queue names the queue that failed */
static int make_sockets(struct afxdp_backend *x, uint32_t bind, uint32_t *failed_queue)
{
	const uint32_t rs = x->cfg.ring_size;
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
		.xdp_flags = 0, /* only for libxdp's program, which is not loaded */
		/* the first socket's flags hold for all (the kernel makes shared
		 * sockets inherit them) */
		.bind_flags = (bind == DP_AFXDP_ZEROCOPY ? XDP_ZEROCOPY : XDP_COPY) |
			      (x->need_wakeup ? XDP_USE_NEED_WAKEUP : 0),
	};
	int err;

	*failed_queue = x->queues[0];
	err = xsk_umem__create(&x->umem, x->umem_area, x->umem_size, &x->socks[0].fill,
			       &x->socks[0].comp, &ucfg);
	if (err) {
		x->umem = NULL;
		return err;
	}
	for (uint32_t i = 0; i < x->n_socks; i++) {
		struct xsk_sock *s = &x->socks[i];
		struct xdp_options opts = {0};
		socklen_t len = sizeof(opts);

		s->queue = x->queues[i];
		err = xsk_socket__create_shared(&s->xsk, x->ifname, s->queue, x->umem, &s->rx, &s->tx,
						&s->fill, &s->comp, &scfg);
		if (err) {
			s->xsk = NULL;
			*failed_queue = s->queue;
			delete_sockets(x);
			return err;
		}
		s->fd = xsk_socket__fd(s->xsk);
		s->bound = !getsockopt(s->fd, SOL_XDP, XDP_OPTIONS, &opts, &len) &&
					   (opts.flags & XDP_OPTIONS_ZEROCOPY) ?
				   DP_AFXDP_ZEROCOPY : DP_AFXDP_COPY;
	}
	return 0;
}

/* the sockets, trying each bind mode in turn; a queue closed just before
 * (a restarted datapath) stays busy until the kernel's deferred release
 * has run: EBUSY is retried for a little while */
static int open_sockets(struct afxdp_backend *x, const uint32_t *binds, int n_binds)
{
	uint32_t queue = 0, busy_queue = 0;
	int err = -EINVAL;

	for (int b = 0; b < n_binds; b++) {
		for (int tries = 0;; tries++) {
			err = make_sockets(x, binds[b], &queue);
			if (err != -EBUSY)
				break;
			/* the first try names the queue someone else holds: later
			 * tries may trip over our own sockets' deferred release */
			if (!tries)
				busy_queue = queue;
			if (tries == EBUSY_TRIES) {
				queue = busy_queue;
				break;
			}
			usleep(EBUSY_WAIT_US);
		}
		if (!err)
			return 0;
		if (err != -EOPNOTSUPP && err != -EINVAL)
			break; /* not a matter of copy or zero-copy */
	}
	return socket_error(err, x, queue, binds[n_binds - 1]);
}

int dp_backend_afxdp(dp_t *dp, const struct dp_afxdp_config *cfg)
{
	const uint32_t nf = cfg->n_frames, rs = cfg->ring_size;
	const uint32_t known = DP_AFXDP_COPY | DP_AFXDP_ZEROCOPY | DP_AFXDP_NEED_WAKEUP |
			       DP_AFXDP_SKB | DP_AFXDP_NATIVE;
	const struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
	struct afxdp_backend *x;
	uint32_t binds[2];
	int err, n_binds;

	last_error[0] = 0;
	if (!cfg->ifname || !cfg->ifname[0] || strlen(cfg->ifname) >= IF_NAMESIZE)
		return fail(-EINVAL, "no interface name (or longer than %d characters)",
			    IF_NAMESIZE - 1);
	if ((cfg->flags & ~known) ||
	    (cfg->flags & (DP_AFXDP_COPY | DP_AFXDP_ZEROCOPY)) == (DP_AFXDP_COPY | DP_AFXDP_ZEROCOPY) ||
	    (cfg->flags & (DP_AFXDP_SKB | DP_AFXDP_NATIVE)) == (DP_AFXDP_SKB | DP_AFXDP_NATIVE))
		return fail(-EINVAL, "flags 0x%x: copy and zerocopy, skb and native exclude each "
			    "other", cfg->flags);

	x = calloc(1, sizeof(*x));
	if (!x)
		return fail(-ENOMEM, "out of memory");
	x->be.ops = &afxdp_ops;
	x->cfg = *cfg;
	snprintf(x->ifname, sizeof(x->ifname), "%s", cfg->ifname);
	x->cfg.ifname = x->ifname;
	x->cfg.queues = x->queues;
	x->rtnl_fd = -1;
	pthread_mutex_init(&x->rtnl_lock, NULL);
	x->need_wakeup = cfg->flags & DP_AFXDP_NEED_WAKEUP;

	x->ifindex = (int)if_nametoindex(cfg->ifname);
	if (!x->ifindex) {
		err = fail(-ENODEV, "no interface %s in this thread's network namespace: check "
			   "`ip link` (or enter the namespace it lives in)", cfg->ifname);
		goto out_free;
	}
	netdev_driver(x->ifname, x->driver, sizeof(x->driver));
	err = take_queues(x, cfg);
	if (err)
		goto out_free;
	x->cfg.n_queues = x->n_socks;
	if (!pow2(nf) || !pow2(rs) || rs < 8 || (uint64_t)nf < 2ull * rs * x->n_socks) {
		err = fail(-EINVAL, "n_frames (%u) and ring_size (%u) must be powers of two, "
			   "ring_size >= 8 and n_frames >= 2 * ring_size * sockets (%u)", nf, rs,
			   x->n_socks);
		goto out_free;
	}
	err = choose_mode(x, cfg->flags, binds, &n_binds);
	if (err)
		goto out_free;

	/* UMEM pages are locked: kernels count them against RLIMIT_MEMLOCK
	 * unless the process has CAP_IPC_LOCK */
	if (setrlimit(RLIMIT_MEMLOCK, &unlimited)) {
		struct rlimit cur;

		if (!getrlimit(RLIMIT_MEMLOCK, &cur) && cur.rlim_cur != RLIM_INFINITY &&
		    cur.rlim_cur < (rlim_t)nf * FRAME_SIZE) {
			err = fail(-ENOBUFS, "RLIMIT_MEMLOCK is %llu bytes and cannot be raised: the "
				   "UMEM needs %llu; run as root (CAP_IPC_LOCK) or `ulimit -l "
				   "unlimited`, or use fewer frames", (unsigned long long)cur.rlim_cur,
				   (unsigned long long)nf * FRAME_SIZE);
			goto out_free;
		}
	}

	x->socks = calloc(x->n_socks, sizeof(*x->socks));
	x->sock_of = calloc(nf, 1);
	x->pool = calloc(nf, sizeof(*x->pool));
	if (!x->socks || !x->sock_of || !x->pool) {
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
	err = open_sockets(x, binds, n_binds);
	if (err)
		goto out_free;
	x->rtnl_fd = netdev_rtnl_open(); /* < 0: the stats say -errno */

	/* every frame starts in the pool; the fill rings take what they hold */
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

int dp_afxdp_n_sockets(dp_t *dp)
{
	struct afxdp_backend *x = afxdp_of(dp);

	return x ? (int)x->n_socks : fail(-ENODEV, "the datapath has no afxdp backend");
}

int dp_afxdp_socket_fd(dp_t *dp, uint32_t i)
{
	struct afxdp_backend *x = afxdp_of(dp);

	if (!x)
		return fail(-ENODEV, "the datapath has no afxdp backend");
	if (i >= x->n_socks)
		return fail(-ERANGE, "socket %u: the backend has %u", i, x->n_socks);
	return x->socks[i].fd;
}

int dp_afxdp_fd(dp_t *dp)
{
	return dp_afxdp_socket_fd(dp, 0);
}

#define LOAD(v) __atomic_load_n(&(v), __ATOMIC_RELAXED)

int dp_afxdp_socket_stats(dp_t *dp, uint32_t i, struct dp_afxdp_stats *out)
{
	struct afxdp_backend *x = afxdp_of(dp);
	struct xdp_statistics st = {0};
	socklen_t len = sizeof(st);
	struct xsk_sock *s;

	if (!x)
		return fail(-ENODEV, "the datapath has no afxdp backend");
	if (i >= x->n_socks)
		return fail(-ERANGE, "socket %u: the backend has %u", i, x->n_socks);
	s = &x->socks[i];
	if (getsockopt(s->fd, SOL_XDP, XDP_STATISTICS, &st, &len))
		return fail(-errno, "XDP_STATISTICS: %s", strerror(errno));
	memset(out, 0, sizeof(*out));
	out->rx = LOAD(s->n_rx);
	out->tx = LOAD(s->n_tx);
	out->kicks = LOAD(s->n_kicks);
	out->kick_errors = LOAD(s->n_kick_errors);
	out->filled = LOAD(s->n_filled);
	out->completed = LOAD(s->n_completed);
	/* ring occupancy from the shared producer/consumer words (racy, by
	 * design: a snapshot) */
	out->fill_ring = LOAD(*s->fill.producer) - LOAD(*s->fill.consumer);
	out->comp_ring = LOAD(*s->comp.producer) - LOAD(*s->comp.consumer);
	out->rx_dropped = st.rx_dropped;
	out->rx_invalid = st.rx_invalid_descs;
	out->tx_invalid = st.tx_invalid_descs;
	out->rx_ring_full = st.rx_ring_full;
	out->fill_empty = st.rx_fill_ring_empty_descs;
	out->tx_ring_empty = st.tx_ring_empty_descs;
	out->queue = s->queue;
	out->mode = x->xdp_mode | s->bound;
	if (x->rtnl_fd < 0) {
		out->xdp_attached = x->rtnl_fd;
	} else {
		pthread_mutex_lock(&x->rtnl_lock);
		out->xdp_attached = netdev_xdp_attached(x->rtnl_fd, x->ifindex);
		pthread_mutex_unlock(&x->rtnl_lock);
	}
	return 0;
}

int dp_afxdp_stats(dp_t *dp, struct dp_afxdp_stats *out)
{
	struct afxdp_backend *x = afxdp_of(dp);
	struct dp_afxdp_stats one;
	int err;

	if (!x)
		return fail(-ENODEV, "the datapath has no afxdp backend");
	err = dp_afxdp_socket_stats(dp, 0, out);
	for (uint32_t i = 1; !err && i < x->n_socks; i++) {
		err = dp_afxdp_socket_stats(dp, i, &one);
		if (err)
			break;
		out->rx += one.rx;
		out->tx += one.tx;
		out->kicks += one.kicks;
		out->kick_errors += one.kick_errors;
		out->filled += one.filled;
		out->completed += one.completed;
		out->fill_ring += one.fill_ring;
		out->comp_ring += one.comp_ring;
		out->rx_dropped += one.rx_dropped;
		out->rx_invalid += one.rx_invalid;
		out->tx_invalid += one.tx_invalid;
		out->rx_ring_full += one.rx_ring_full;
		out->fill_empty += one.fill_empty;
		out->tx_ring_empty += one.tx_ring_empty;
		out->mode |= one.mode;
	}
	return err;
}
