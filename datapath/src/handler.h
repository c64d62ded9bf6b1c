/* handler.h - tenant handlers: what runs on each packet of a tenant.
 *
 * An engine is a function with the XDP contract: it gets the packet (and
 * may move its start and end within the frame's head- and tailroom) and
 * returns an XDP verdict. Native handlers are the hand-written references;
 * the eBPF engines plug in behind the same pointer. */
#ifndef ISOLANE_HANDLER_H
#define ISOLANE_HANDLER_H

#include <stdint.h>

#include "pkt.h"

struct handler {
	uint32_t (*run)(const struct handler *h, struct pkt *p);
	uint32_t kind;         /* enum dp_handler_kind */
	uint64_t spin_cycles;  /* spin: default cost when the packet has no probe */
};

int handler_init(struct handler *h, uint32_t kind, uint32_t spin_ns);

#endif
