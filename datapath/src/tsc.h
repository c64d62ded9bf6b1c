/* tsc.h - the time-stamp counter: the fast path's only clock.
 *
 * The TSC is constant and invariant on the target machines; its rate is
 * calibrated once per process against CLOCK_MONOTONIC_RAW, never assumed. */
#ifndef ISOLANE_TSC_H
#define ISOLANE_TSC_H

#include <stdint.h>
#include <x86intrin.h>

#include "compiler.h"

static always_inline uint64_t rdtsc(void)
{
	return __rdtsc();
}

/* cycles per second, calibrated on first use (about 20 ms) */
double tsc_hz(void);

static inline uint64_t ns_to_cycles(double ns)
{
	return (uint64_t)(ns * tsc_hz() / 1e9);
}

/* burn cycles on this core, the way an expensive handler would: plain
 * work, no PAUSE (a hypervisor takes a PAUSE loop for a spinning lock and
 * may deschedule the vCPU) */
static always_inline void tsc_spin(uint64_t cycles)
{
	uint64_t end = rdtsc() + cycles;

	while (rdtsc() < end)
		;
}

#endif
