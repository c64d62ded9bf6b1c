/* handler.h - tenant handlers: what runs on each packet of a tenant.
 *
 * An engine is a function with the XDP contract: it gets the packet (and
 * may move its start and end within the frame's head- and tailroom) and
 * returns an XDP verdict. Native handlers are the hand-written references;
 * the eBPF engines plug in behind the same pointer. */
#ifndef ISOLANE_HANDLER_H
#define ISOLANE_HANDLER_H

#include <stdint.h>

#include "isolane_dp.h"
#include "pkt.h"

struct dp_prog;

struct handler {
	uint32_t (*run)(const struct handler *h, struct pkt *p);
	uint32_t kind;         /* enum dp_handler_kind */
	uint64_t bound_cycles; /* static worst case per packet; 0: none known */
	uint64_t spin_cycles;  /* spin: default cost when the packet has no probe */
	const struct dp_prog *prog; /* eBPF: the program */
	dp_aot_fn aot;              /* aot: the compiled handler and its env */
	const struct dp_aot_env *aot_env;
};

/* a verdict no XDP program returns: the handler faulted (counted as such) */
#define VERDICT_FAULT 0xff

int handler_init(struct handler *h, uint32_t kind, uint32_t spin_ns);
/* h run `repeat` times in place on one packet: total cycles or -errno */
int64_t handler_bench(const struct handler *h, const uint8_t *pkt, uint32_t len,
		      uint64_t repeat, uint32_t *verdict);
/* an eBPF handler running prog under the interpreter */
void handler_init_ebpf(struct handler *h, const struct dp_prog *prog, uint32_t bound_ns);

/* packets of this handler one slice may run: what fits in quantum_cycles
 * by its static bound, one when it has none */
static inline uint32_t handler_slice_pkts(const struct handler *h, uint64_t quantum_cycles,
					 uint32_t most)
{
	uint64_t n = h->bound_cycles ? quantum_cycles / h->bound_cycles : 1;

	return n < 1 ? 1 : n > most ? most : (uint32_t)n;
}

#endif
