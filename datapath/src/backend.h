/* backend.h - how packets enter and leave the fast path.
 *
 * The loop knows only these calls; the mem backend (a generator thread)
 * and the AF_XDP backend implement them. Every packet the backend hands
 * out comes back through exactly one of tx_burst or free_burst. */
#ifndef ISOLANE_BACKEND_H
#define ISOLANE_BACKEND_H

#include <stdint.h>

#include "pkt.h"

struct backend;

struct backend_ops {
	const char *name;
	/** rx_burst() - up to @n received packets into @pkts; returns how many */
	uint32_t (*rx_burst)(struct backend *b, struct pkt **pkts, uint32_t n);
	/** tx_burst() - queue @n packets for transmission; returns how many were
	 * taken, moved to the front of @pkts (a backend with several queues
	 * may reorder them): the caller frees @pkts[taken..n) */
	uint32_t (*tx_burst)(struct backend *b, struct pkt **pkts, uint32_t n);
	/** free_burst() - give @n packets back without sending them */
	void (*free_burst)(struct backend *b, struct pkt **pkts, uint32_t n);
	/** alloc_burst() - up to @n free frames (data at PKT_DATA_OFF) for
	 * packets the datapath makes itself (slow-path sends); returns how
	 * many. Each comes back through tx_burst or free_burst. Loop thread. */
	uint32_t (*alloc_burst)(struct backend *b, struct pkt **pkts, uint32_t n);
	/** start() / stop() - bring up and tear down threads, sockets, programs */
	int (*start)(struct backend *b);
	void (*stop)(struct backend *b);
	void (*destroy)(struct backend *b);
};

struct backend {
	const struct backend_ops *ops;
};

#endif
