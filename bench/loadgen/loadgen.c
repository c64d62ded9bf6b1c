/* loadgen.c - the open-loop generator's send/receive loop.
 *
 * One thread, pinned, in the generator's network namespace. Each round:
 *
 *   tx_due   the arrivals whose intended time has come (one per flow per
 *            pass, so flows interleave), each a copy of its flow's template
 *            with the probe's seq = flow << LG_SEQ_BITS | n and t_send = the
 *            intended time; one batch, one kick. An arrival sent late keeps
 *            its intended time: the wait is part of its latency (open loop).
 *   rx_burst replies matched by (flow, seq) and by t_send against what was
 *            sent, stamped with the burst's receive time (first copy only).
 *
 * Sending stops once every arrival intended before duration_s is sent (a
 * loop that fell behind sends its backlog late rather than skip it); then
 * replies are awaited for up to drain_s (less if every packet is answered). Nothing is allocated, logged or
 * locked in the loop; Python reads progress counters racily.
 *
 * I/O: AF_XDP (gen_prog.c's XDP program on the generator's interface hands
 * every received frame to the socket, so replies never enter the kernel's
 * stack) or AF_PACKET (PACKET_QDISC_BYPASS, sendmmsg/recvmmsg; replies
 * also go up the generator's stack). */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <sys/socket.h>

#include "arrivals.h"
#include "gen_prog.h"
#include "isolane_dp.h"
#include "loadgen.h"
#include "tsc.h"
#include "xsk_port.h"

#define TX_BATCH 32            /* copy-mode sendto moves at most 32 frames */
#define RX_BATCH 64
#define PKT_BUF 2048           /* AF_PACKET per-frame buffer */
#define LATE_NS 20000          /* sent this late after its intended time: late */
#define SEQ_MASK ((1ull << LG_SEQ_BITS) - 1)

_Static_assert(sizeof(struct dp_probe) == 24, "the probe header is 24 bytes");
_Static_assert(LG_ARRIVAL_POISSON == DP_ARRIVAL_POISSON && LG_ARRIVAL_ONOFF == DP_ARRIVAL_ONOFF &&
	       LG_ARRIVAL_UNIFORM == DP_ARRIVAL_UNIFORM && LG_ARRIVAL_SATURATE == DP_ARRIVAL_SATURATE,
	       "LG_ARRIVAL_* are the datapath's arrival kinds (arrivals.h)");

struct gen_flow {
	struct lg_flow spec;
	struct arrivals arr;   /* the datapath's arrival processes (arrivals.h) */
	struct lg_flow_stats st;
};

struct due {
	uint32_t flow;
	uint64_t seq;
	uint64_t t;
};

struct lg {
	struct lg_config cfg;
	char ifname[IF_NAMESIZE];
	char netns[256];
	struct gen_flow *flows;
	uint32_t n_flows;
	uint64_t rng;

	struct xsk_port port;  /* LG_IO_AFXDP */
	struct gen_prog prog;  /* ... and the XDP program that feeds it */
	int pfd;               /* LG_IO_AFPACKET */
	uint8_t *pbuf;         /* TX_BATCH + RX_BATCH frames of PKT_BUF */

	pthread_t thread;
	int ready, ret, stop, done;
	char *err;
	size_t errlen;

	uint64_t sent, received; /* totals, read racily by lg_progress */
	struct lg_stats st;
};

/* due arrivals, at most `room`, one per flow per pass */
static noinline uint32_t collect_due(struct lg *lg, uint64_t now, uint64_t end,
				     struct due *out, uint32_t room)
{
	const uint64_t late_cycles = ns_to_cycles(LATE_NS);
	uint32_t n = 0;
	bool progress = true;

	while (n < room && progress) {
		progress = false;
		for (uint32_t i = 0; i < lg->n_flows && n < room; i++) {
			struct gen_flow *f = &lg->flows[i];
			uint64_t t;

			if (f->arr.next > now || f->arr.next >= end || f->st.full)
				continue;
			t = f->spec.arrival == LG_ARRIVAL_SATURATE ? now : f->arr.next;
			if (now - t > late_cycles)
				f->st.late++;
			out[n].flow = i;
			out[n].seq = f->st.sent;
			out[n].t = t;
			f->spec.t_sent[f->st.sent] = t;
			if (++f->st.sent == f->spec.capacity)
				f->st.full = 1;
			arrivals_advance(&f->arr, &lg->rng, now);
			n++;
			progress = true;
		}
	}
	return n;
}

static always_inline uint32_t build(const struct lg *lg, const struct due *d, uint8_t *buf)
{
	const struct lg_flow *s = &lg->flows[d->flow].spec;
	struct dp_probe *pr = (struct dp_probe *)(buf + s->probe_off);

	memcpy(buf, s->frame, s->len);
	pr->seq = (uint64_t)d->flow << LG_SEQ_BITS | d->seq;
	pr->t_send = d->t;
	return s->len;
}

/* a reply: which (flow, seq) it answers, stamped `now` */
static always_inline void match(struct lg *lg, const uint8_t *d, uint32_t len, uint64_t now)
{
	const struct dp_probe *pr;
	struct gen_flow *f;
	uint32_t ihl, off;
	uint64_t flow, seq;

	if (unlikely(len < 14 + 20 + 8 || d[12] != 0x08 || d[13] != 0x00))
		goto unmatched;
	ihl = (d[14] & 0xf) * 4u;
	off = 14 + ihl + 8;
	if (unlikely(ihl < 20 || d[14 + 9] != IPPROTO_UDP || len < off + sizeof(*pr)))
		goto unmatched;
	pr = (const struct dp_probe *)(d + off);
	if (unlikely(pr->magic != DP_PROBE_MAGIC))
		goto unmatched;
	flow = pr->seq >> LG_SEQ_BITS;
	seq = pr->seq & SEQ_MASK;
	if (unlikely(flow >= lg->n_flows))
		goto unmatched;
	f = &lg->flows[flow];
	if (unlikely(seq >= f->st.sent || f->spec.t_sent[seq] != pr->t_send))
		goto unmatched;
	if (f->spec.t_recv[seq]) {
		f->st.duplicates++;
		return;
	}
	f->spec.t_recv[seq] = now;
	f->st.received++;
	lg->received++;
	return;
unmatched:
	lg->st.unmatched++;
}

/* ---------------------------------------------------------------- AF_XDP */

static noinline void xdp_tx_due(struct lg *lg, uint64_t now, uint64_t end)
{
	struct xsk_port *p = &lg->port;
	struct due due[TX_BATCH];
	uint32_t room, free_tx, n, idx = 0;

	xsk_port_reap(p);
	room = MIN(TX_BATCH, p->n_pool);
	free_tx = xsk_prod_nb_free(&p->tx, room); /* once: the kernel moves it */
	room = MIN(room, free_tx);
	if (!room)
		return;
	n = collect_due(lg, now, end, due, room);
	if (!n)
		return;
	xsk_ring_prod__reserve(&p->tx, n, &idx); /* cannot fail: nb_free said so */
	for (uint32_t i = 0; i < n; i++) {
		uint64_t addr = p->pool[--p->n_pool];
		struct xdp_desc *td = xsk_ring_prod__tx_desc(&p->tx, idx + i);

		td->addr = addr;
		td->len = build(lg, &due[i], xsk_umem__get_data(p->area, addr));
	}
	xsk_ring_prod__submit(&p->tx, n);
	lg->sent += n;
}

static noinline void xdp_rx_burst(struct lg *lg)
{
	struct xsk_port *p = &lg->port;
	uint32_t idx = 0, fidx = 0, n;
	bool refill;
	uint64_t now;

	n = xsk_ring_cons__peek(&p->rx, RX_BATCH, &idx);
	if (!n) {
		if (xsk_ring_prod__needs_wakeup(&p->fill))
			recvfrom(p->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
		return;
	}
	now = rdtsc();
	/* the frames go straight back to the fill ring: RX keeps its own
	 * ring_size frames, TX the rest, so neither starves the other (the
	 * ring always has room for what came out of it) */
	refill = xsk_ring_prod__reserve(&p->fill, n, &fidx) == n;
	for (uint32_t i = 0; i < n; i++) {
		const struct xdp_desc *rd = xsk_ring_cons__rx_desc(&p->rx, idx + i);
		uint64_t frame = rd->addr & ~PORT_FRAME_MASK;

		match(lg, xsk_umem__get_data(p->area, rd->addr), rd->len, now);
		if (likely(refill))
			*xsk_ring_prod__fill_addr(&p->fill, fidx + i) = frame;
		else
			p->pool[p->n_pool++] = frame;
	}
	xsk_ring_cons__release(&p->rx, n);
	if (likely(refill))
		xsk_ring_prod__submit(&p->fill, n);
}

static void xdp_kick(struct lg *lg)
{
	struct xsk_port *p = &lg->port;

	/* copy mode transmits only inside sendto(): kick while anything waits */
	if (xsk_prod_nb_free(&p->tx, p->ring_size) < p->ring_size) {
		xsk_port_kick(p);
		lg->st.tx_kicks++;
	}
}

/* ---------------------------------------------------------------- AF_PACKET */

static noinline void pkt_tx_due(struct lg *lg, uint64_t now, uint64_t end)
{
	struct mmsghdr msgs[TX_BATCH];
	struct iovec iov[TX_BATCH];
	struct due due[TX_BATCH];
	uint32_t n, done = 0;

	n = collect_due(lg, now, end, due, TX_BATCH);
	if (!n)
		return;
	memset(msgs, 0, sizeof(msgs[0]) * n);
	for (uint32_t i = 0; i < n; i++) {
		iov[i].iov_base = lg->pbuf + (size_t)i * PKT_BUF;
		iov[i].iov_len = build(lg, &due[i], iov[i].iov_base);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	while (done < n) {
		int r = sendmmsg(lg->pfd, msgs + done, n - done, 0);

		if (r <= 0) {
			/* a frame the device refused is lost where it started */
			lg->st.tx_errors++;
			done++;
			continue;
		}
		done += r;
	}
	lg->st.tx_kicks++;
	lg->sent += n;
}

static noinline void pkt_rx_burst(struct lg *lg)
{
	struct mmsghdr msgs[RX_BATCH];
	struct iovec iov[RX_BATCH];
	uint8_t *base = lg->pbuf + (size_t)TX_BATCH * PKT_BUF;
	uint64_t now;
	int n;

	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < RX_BATCH; i++) {
		iov[i].iov_base = base + (size_t)i * PKT_BUF;
		iov[i].iov_len = PKT_BUF;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	n = recvmmsg(lg->pfd, msgs, RX_BATCH, MSG_DONTWAIT, NULL);
	if (n <= 0)
		return;
	now = rdtsc();
	for (int i = 0; i < n; i++)
		match(lg, iov[i].iov_base, msgs[i].msg_len, now);
}

static int pkt_open(struct lg *lg)
{
	const int one = 1, rcvbuf = 32 << 20;
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_IP),
		.sll_ifindex = (int)if_nametoindex(lg->ifname),
	};

	if (!sll.sll_ifindex)
		return errf(lg->err, lg->errlen, -ENODEV, "no interface %s in this thread's network "
			    "namespace", lg->ifname);
	lg->pbuf = malloc((size_t)(TX_BATCH + RX_BATCH) * PKT_BUF);
	if (!lg->pbuf)
		return errf(lg->err, lg->errlen, -ENOMEM, "out of memory");
	lg->pfd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_IP));
	if (lg->pfd < 0)
		return errf(lg->err, lg->errlen, -errno, "AF_PACKET socket: %s (run as root)",
			    strerror(errno));
	/* transmit straight to the device, past the qdisc layer */
	if (setsockopt(lg->pfd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) ||
	    setsockopt(lg->pfd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) ||
	    setsockopt(lg->pfd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) ||
	    bind(lg->pfd, (struct sockaddr *)&sll, sizeof(sll)))
		return errf(lg->err, lg->errlen, -errno, "setting up the AF_PACKET socket on %s: %s",
			    lg->ifname, strerror(errno));
	return 0;
}

/* ---------------------------------------------------------------- the loop */

/* this thread's time on its core and waiting for it, ns (0 if unknown) */
static void sched_times(uint64_t *run_ns, uint64_t *wait_ns)
{
	FILE *f = fopen("/proc/thread-self/schedstat", "r");
	unsigned long long run = 0, wait = 0;

	if (f) {
		if (fscanf(f, "%llu %llu", &run, &wait) != 2)
			run = wait = 0;
		fclose(f);
	}
	*run_ns = run;
	*wait_ns = wait;
}

/* whether any flow still has an arrival intended before `end` (a
 * generator that fell behind sends its backlog: open loop, nothing skipped) */
static bool backlog(const struct lg *lg, uint64_t now, uint64_t end)
{
	for (uint32_t i = 0; i < lg->n_flows; i++) {
		const struct gen_flow *f = &lg->flows[i];

		if (!f->st.full && f->arr.next < end && f->spec.arrival != LG_ARRIVAL_SATURATE)
			return true;
	}
	return false;
}

static void run(struct lg *lg)
{
	const double hz = tsc_hz();
	const bool xdp = lg->cfg.io == LG_IO_AFXDP;
	const uint64_t start = rdtsc();
	uint64_t end = start + (uint64_t)(lg->cfg.duration_s * hz), drain_until = 0;
	uint64_t run0, wait0;
	bool sending = true;

	sched_times(&run0, &wait0);

	for (uint32_t i = 0; i < lg->n_flows; i++)
		arrivals_start(&lg->flows[i].arr, &lg->rng, start);
	lg->st.t_start = start;
	for (;;) {
		uint64_t now = rdtsc();

		if (sending) {
			if (unlikely(__atomic_load_n(&lg->stop, __ATOMIC_RELAXED)) && now < end)
				end = now;
			if (now >= end && !backlog(lg, now, end)) {
				sending = false;
				lg->st.t_end = now;
				drain_until = now + (uint64_t)(lg->cfg.drain_s * hz);
			} else if (xdp) {
				xdp_tx_due(lg, now, end);
			} else {
				pkt_tx_due(lg, now, end);
			}
		}
		if (xdp) {
			xdp_kick(lg);
			xdp_rx_burst(lg);
		} else {
			pkt_rx_burst(lg);
		}
		if (!sending && (now >= drain_until || lg->received == lg->sent))
			break;
	}
	if (xdp)
		xsk_port_kernel_stats(&lg->port, &lg->st.rx_dropped, &lg->st.rx_ring_full,
				      &lg->st.fill_empty);
	sched_times(&lg->st.run_ns, &lg->st.wait_ns);
	lg->st.run_ns -= run0;
	lg->st.wait_ns -= wait0;
}

static void *gen_thread(void *arg)
{
	struct lg *lg = arg;
	int ret;

	ret = thread_enter(lg->netns[0] ? lg->netns : NULL, lg->cfg.core, lg->err, lg->errlen);
	if (!ret && lg->cfg.io == LG_IO_AFXDP) {
		uint32_t flags = lg->cfg.xdp_mode == LG_XDP_NATIVE ? XDP_FLAGS_DRV_MODE
								     : XDP_FLAGS_SKB_MODE;

		ret = xsk_port_open(&lg->port, lg->ifname, lg->cfg.queue, lg->cfg.n_frames,
				    lg->cfg.ring_size, lg->err, lg->errlen);
		if (!ret)
			ret = gen_prog_attach(&lg->prog, lg->ifname, lg->cfg.queue, lg->port.fd,
					      flags, lg->err, lg->errlen);
		if (!ret)
			xsk_port_refill(&lg->port, lg->port.ring_size);
	} else if (!ret) {
		ret = pkt_open(lg);
	}
	lg->ret = ret;
	__atomic_store_n(&lg->ready, 1, __ATOMIC_RELEASE);
	if (!ret)
		run(lg);
	/* here, not in lg_join: the interface's index means something only in
	 * this thread's namespace */
	gen_prog_detach(&lg->prog);
	xsk_port_close(&lg->port);
	__atomic_store_n(&lg->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* after the thread: it has closed its socket and detached its program */
static void lg_free(struct lg *lg)
{
	if (lg->pfd >= 0)
		close(lg->pfd);
	free(lg->pbuf);
	free(lg->flows);
	free(lg);
}

static int check_flow(const struct lg_flow *s, uint32_t i, char *err, size_t errlen)
{
	if (!s->frame || s->len < 14 + 20 + 8 || s->len > PKT_BUF ||
	    s->probe_off + sizeof(struct dp_probe) > s->len)
		return errf(err, errlen, -EINVAL, "flow %u: the template must be 42..%d bytes with "
			    "the probe header inside", i, PKT_BUF);
	if (s->arrival > LG_ARRIVAL_SATURATE)
		return errf(err, errlen, -EINVAL, "flow %u: unknown arrival %u", i, s->arrival);
	if (s->arrival != LG_ARRIVAL_SATURATE && !(s->rate_pps > 0 && isfinite(s->rate_pps)))
		return errf(err, errlen, -EINVAL, "flow %u: rate_pps must be > 0", i);
	if (s->arrival == LG_ARRIVAL_ONOFF && !(s->on_us > 0 && s->off_us >= 0))
		return errf(err, errlen, -EINVAL, "flow %u: on/off needs on_us > 0, off_us >= 0", i);
	if (!s->capacity || s->capacity > SEQ_MASK || !s->t_sent || !s->t_recv)
		return errf(err, errlen, -EINVAL, "flow %u: no sample arrays", i);
	return 0;
}

int lg_start(const struct lg_config *cfg, struct lg_flow *flows, uint32_t n_flows,
	     lg_t **out, char *err, size_t errlen)
{
	const double hz = tsc_hz();
	struct lg *lg;
	int ret;

	*out = NULL;
	if (!n_flows || n_flows > LG_MAX_FLOWS)
		return errf(err, errlen, -EINVAL, "1..%d flows, not %u", LG_MAX_FLOWS, n_flows);
	if (!cfg->ifname || strlen(cfg->ifname) >= IF_NAMESIZE)
		return errf(err, errlen, -EINVAL, "no interface name (or longer than %d characters)",
			    IF_NAMESIZE - 1);
	if (cfg->io > LG_IO_AFPACKET || cfg->xdp_mode > LG_XDP_NATIVE)
		return errf(err, errlen, -EINVAL, "unknown io %u or xdp mode %u", cfg->io,
			    cfg->xdp_mode);
	if (!(cfg->duration_s > 0) || !(cfg->drain_s >= 0))
		return errf(err, errlen, -EINVAL, "duration_s must be > 0 and drain_s >= 0");
	for (uint32_t i = 0; i < n_flows; i++)
		if ((ret = check_flow(&flows[i], i, err, errlen)))
			return ret;
	lg = calloc(1, sizeof(*lg));
	if (!lg || !(lg->flows = calloc(n_flows, sizeof(*lg->flows)))) {
		free(lg);
		return errf(err, errlen, -ENOMEM, "out of memory");
	}
	lg->cfg = *cfg;
	strcpy(lg->ifname, cfg->ifname);
	if (cfg->netns)
		snprintf(lg->netns, sizeof(lg->netns), "%s", cfg->netns);
	lg->cfg.ifname = lg->ifname;
	lg->n_flows = n_flows;
	lg->rng = cfg->seed ? cfg->seed : 1;
	lg->pfd = -1;
	lg->port.fd = -1;
	lg->prog.prog_fd = lg->prog.map_fd = -1;
	for (uint32_t i = 0; i < n_flows; i++) {
		struct gen_flow *f = &lg->flows[i];

		f->spec = flows[i];
		arrivals_init(&f->arr, f->spec.arrival, f->spec.rate_pps, f->spec.on_us,
			      f->spec.off_us, hz);
		memset(f->spec.t_recv, 0, f->spec.capacity * sizeof(uint64_t));
	}
	lg->err = err;
	lg->errlen = errlen;
	ret = pthread_create(&lg->thread, NULL, gen_thread, lg);
	if (ret) {
		lg_free(lg);
		return errf(err, errlen, -ret, "cannot start the generator thread: %s", strerror(ret));
	}
	while (!__atomic_load_n(&lg->ready, __ATOMIC_ACQUIRE))
		usleep(100);
	if (lg->ret) {
		ret = lg->ret;
		pthread_join(lg->thread, NULL);
		lg_free(lg);
		return ret;
	}
	lg->err = NULL; /* the caller's buffer is not ours after we return */
	*out = lg;
	return 0;
}

void lg_progress(lg_t *lg, struct lg_progress *out)
{
	uint64_t t0 = __atomic_load_n(&lg->st.t_start, __ATOMIC_RELAXED);

	out->sent = __atomic_load_n(&lg->sent, __ATOMIC_RELAXED);
	out->received = __atomic_load_n(&lg->received, __ATOMIC_RELAXED);
	out->elapsed_s = t0 ? (double)(rdtsc() - t0) / tsc_hz() : 0.0;
	out->done = __atomic_load_n(&lg->done, __ATOMIC_ACQUIRE);
}

void lg_stop(lg_t *lg)
{
	__atomic_store_n(&lg->stop, 1, __ATOMIC_RELAXED);
}

int lg_join(lg_t *lg, struct lg_flow_stats *flow_stats, struct lg_stats *stats)
{
	pthread_join(lg->thread, NULL);
	for (uint32_t i = 0; i < lg->n_flows; i++)
		flow_stats[i] = lg->flows[i].st;
	*stats = lg->st;
	lg_free(lg);
	return 0;
}

double lg_tsc_hz(void)
{
	return tsc_hz();
}

uint64_t lg_rdtsc(void)
{
	return rdtsc();
}
