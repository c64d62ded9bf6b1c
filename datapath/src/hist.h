/* hist.h - log-linear latency histogram over TSC cycles.
 *
 * Values below 256 have a bucket each; above, every octave [2^e, 2^(e+1))
 * is split into 128 equal buckets, so a bucket is at most 1/128 of its
 * value wide (<= 0.4% error at the midpoint) up to 2^45 cycles (hours). */
#ifndef ISOLANE_HIST_H
#define ISOLANE_HIST_H

#include <stdint.h>

#include "compiler.h"
#include "isolane_dp.h"

#define HIST_LINEAR 256u
#define HIST_SUB_BITS 7u /* 128 buckets per octave */
#define HIST_MAX_EXP 44u

static always_inline uint32_t hist_index(uint64_t v)
{
	uint32_t e, shift;

	if (v < HIST_LINEAR)
		return (uint32_t)v;
	e = 63 - __builtin_clzll(v);
	if (unlikely(e > HIST_MAX_EXP))
		return DP_HIST_BUCKETS - 1;
	shift = e - HIST_SUB_BITS;
	return HIST_LINEAR + ((e - 8) << HIST_SUB_BITS) +
	       (uint32_t)((v >> shift) - (1u << HIST_SUB_BITS));
}

static always_inline void hist_record(uint64_t *buckets, uint64_t v)
{
	buckets[hist_index(v)]++;
}

#endif
