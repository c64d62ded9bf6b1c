/* loadgen.h - the contract between bench/loadgen.py and its C loops (cffi
 * reads this file as its cdef: only integer #defines, no other
 * preprocessor lines survive).
 *
 * Two loops, each on a thread of its own that enters a network namespace
 * (setns on that thread only, before it opens a socket) and pins itself to
 * a core:
 *
 *   lg_*  the open-loop generator: flows of UDP frames built from templates,
 *         each carrying isolane's probe header (struct dp_probe) with the
 *         flow and sequence number in `seq` and the *intended* send time (TSC)
 *         in `t_send`; replies matched by (flow, seq) and stamped with their
 *         receive time. Sends and receives through one AF_XDP socket
 *         (an XDP program of its own on the generator's interface, gen_prog.c), or
 *         through AF_PACKET with PACKET_QDISC_BYPASS.
 *   be_*  the bare echo: one AF_XDP socket (no XDP program of libxdp's: the
 *         caller's steering program redirects into it), rx -> swap MAC, IPv4
 *         addresses and UDP ports -> tx, nothing else. The reference an
 *         echoing datapath is measured against.
 *
 * Functions return 0 or -errno; on failure `err` (errlen bytes) says why. */
#ifndef ISOLANE_LOADGEN_H
#define ISOLANE_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

#define LG_ABI_VERSION 1
#define LG_MAX_FLOWS 256
#define LG_SEQ_BITS 48 /* probe seq = flow << LG_SEQ_BITS | sequence number */

/* arrival processes (those of the datapath's mem generator) */
#define LG_ARRIVAL_POISSON 0  /* exponential gaps, mean 1/rate */
#define LG_ARRIVAL_ONOFF 1    /* Poisson during on_us, silent for off_us */
#define LG_ARRIVAL_UNIFORM 2  /* one every 1/rate */
#define LG_ARRIVAL_SATURATE 3 /* as fast as the socket takes them */

#define LG_IO_AFXDP 0    /* AF_XDP socket; gen_prog.c redirects the replies */
#define LG_IO_AFPACKET 1 /* AF_PACKET, PACKET_QDISC_BYPASS, sendmmsg / recvmmsg */

#define LG_XDP_SKB 0    /* generic XDP (every driver) */
#define LG_XDP_NATIVE 1 /* driver XDP (veth has it) */

struct lg_flow {
	const uint8_t *frame; /* template: Ethernet/IPv4/UDP, the probe header at probe_off */
	uint32_t len;
	uint32_t probe_off;
	uint32_t arrival;     /* LG_ARRIVAL_* */
	double rate_pps;
	double on_us;
	double off_us;
	uint64_t capacity;    /* slots in t_sent/t_recv: the flow stops sending when full */
	uint64_t *t_sent;     /* out: intended send time (TSC) of sequence number i */
	uint64_t *t_recv;     /* out: receive time (TSC) of i's first reply, 0: none */
};

struct lg_config {
	const char *ifname;
	const char *netns;    /* a path (/run/netns/NAME) or NULL: stay in ours */
	uint32_t queue;
	int32_t core;         /* -1: not pinned */
	uint32_t io;          /* LG_IO_* */
	uint32_t xdp_mode;    /* LG_XDP_*: how gen_prog attaches (afxdp) */
	uint32_t n_frames;    /* UMEM frames (power of two); afxdp */
	uint32_t ring_size;   /* every ring (power of two, n_frames >= 2 * ring_size) */
	double duration_s;    /* sending time */
	double drain_s;       /* after the last send, how long to wait for replies */
	uint64_t seed;
};

struct lg_flow_stats {
	uint64_t sent;        /* sequence numbers used (t_sent[0..sent)) */
	uint64_t received;    /* replies matched to a sequence number, first copies */
	uint64_t duplicates;  /* further copies of an answered sequence number */
	uint64_t late;        /* sent > 20 us after the intended time */
	uint64_t full;        /* 1 if the flow ran out of slots (capacity) */
};

struct lg_stats {
	uint64_t unmatched;   /* frames received that answer nothing we sent */
	uint64_t tx_kicks;     /* sendto / sendmmsg calls */
	uint64_t tx_errors;    /* frames the device refused (afpacket) */
	uint64_t rx_dropped;  /* the socket's XDP_STATISTICS (afxdp) */
	uint64_t rx_ring_full;
	uint64_t fill_empty;
	uint64_t run_ns;      /* the loop thread's time on its core, and waiting */
	uint64_t wait_ns;     /* for it while runnable (/proc/thread-self/schedstat) */
	uint64_t t_start;     /* TSC when sending began / ended */
	uint64_t t_end;
};

struct lg_progress {
	uint64_t sent;
	uint64_t received;
	double elapsed_s;
	int32_t done;         /* the thread has finished */
};

typedef struct lg lg_t;

/* Starts the generator thread; returns once its socket is open (or failed). */
int lg_start(const struct lg_config *cfg, struct lg_flow *flows, uint32_t n_flows,
	     lg_t **out, char *err, size_t errlen);
void lg_progress(lg_t *lg, struct lg_progress *out);
void lg_stop(lg_t *lg);   /* ask it to stop sending early */
/* Waits for the thread, fills stats (n_flows entries) and frees everything. */
int lg_join(lg_t *lg, struct lg_flow_stats *flow_stats, struct lg_stats *stats);

struct be_config {
	const char *ifname;
	const char *netns;
	uint32_t queue;
	int32_t core;
	uint32_t n_frames;
	uint32_t ring_size;
	uint32_t batch;       /* RX burst (the datapath's rx_batch: 32) */
};

struct be_stats {
	uint64_t rx;
	uint64_t tx;
	uint64_t dropped;     /* not IPv4/UDP or too short: released untouched */
	uint64_t tx_full;     /* no room on the TX ring: released untouched */
	uint64_t rx_dropped;  /* XDP_STATISTICS */
	uint64_t rx_ring_full;
	uint64_t fill_empty;
};

typedef struct be be_t;

int be_start(const struct be_config *cfg, be_t **out, char *err, size_t errlen);
int be_fd(be_t *be);      /* the AF_XDP socket, for the steering program's XSKMAP */
int be_stats(be_t *be, struct be_stats *out);
void be_stop(be_t *be);   /* stops the loop, closes the socket, frees */

double lg_tsc_hz(void);
uint64_t lg_rdtsc(void);

#endif
