/* Open-loop arrival processes: the intended time, in TSC cycles, of each
 * flow's next packet. Shared by the mem backend's generator and the load
 * generator over the wire (bench/loadgen), so both send the same traffic. */
#ifndef ISOLANE_ARRIVALS_H
#define ISOLANE_ARRIVALS_H

#include <math.h>
#include <stdint.h>

#include "isolane_dp.h" /* DP_ARRIVAL_* */

struct arrivals {
	uint32_t kind;          /* DP_ARRIVAL_* */
	double gap_cycles;      /* mean inter-arrival time */
	uint64_t on_cycles, off_cycles;
	uint64_t next;          /* intended time of the next arrival */
	uint64_t on_until;      /* on/off: the end of the current on period */
};

/* uniform in (0, 1]: xorshift64* */
static inline double xorshift_uniform(uint64_t *rng)
{
	*rng ^= *rng >> 12;
	*rng ^= *rng << 25;
	*rng ^= *rng >> 27;
	return ((*rng * 0x2545f4914f6cdd1dull >> 11) + 1) * 0x1.0p-53;
}

static inline void arrivals_init(struct arrivals *a, uint32_t kind, double rate_pps,
				 double on_us, double off_us, double hz)
{
	a->kind = kind;
	a->gap_cycles = kind == DP_ARRIVAL_SATURATE ? 0 : hz / rate_pps;
	a->on_cycles = (uint64_t)(on_us * hz / 1e6);
	a->off_cycles = (uint64_t)(off_us * hz / 1e6);
}

/* the arrival after a->next (saturate: now) */
static inline void arrivals_advance(struct arrivals *a, uint64_t *rng, uint64_t now)
{
	switch (a->kind) {
	case DP_ARRIVAL_SATURATE:
		a->next = now;
		return;
	case DP_ARRIVAL_UNIFORM:
		a->next += (uint64_t)a->gap_cycles;
		return;
	default:
		a->next += (uint64_t)(-log(xorshift_uniform(rng)) * a->gap_cycles);
	}
	/* on/off: arrivals that would fall in the off period move past it */
	while (a->kind == DP_ARRIVAL_ONOFF && a->next >= a->on_until) {
		a->next += a->off_cycles;
		a->on_until += a->on_cycles + a->off_cycles;
	}
}

/* the first arrival: at `start` (uniform, saturate) or one random gap later */
static inline void arrivals_start(struct arrivals *a, uint64_t *rng, uint64_t start)
{
	a->next = start;
	a->on_until = start + a->on_cycles;
	if (a->kind == DP_ARRIVAL_POISSON || a->kind == DP_ARRIVAL_ONOFF)
		arrivals_advance(a, rng, start);
}

#endif
