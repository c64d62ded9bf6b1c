/* hist.c - bucket bounds of the log-linear histogram (cold path). */
#include "hist.h"

_Static_assert(HIST_LINEAR + ((HIST_MAX_EXP - 8 + 1) << HIST_SUB_BITS) == DP_HIST_BUCKETS,
	       "DP_HIST_BUCKETS matches the bucket layout");

uint32_t dp_hist_index(uint64_t value)
{
	return hist_index(value);
}

/* smallest value that lands in bucket idx */
uint64_t dp_hist_lower(uint32_t idx)
{
	uint32_t e, sub;

	if (idx < HIST_LINEAR)
		return idx;
	e = 8 + ((idx - HIST_LINEAR) >> HIST_SUB_BITS);
	sub = (idx - HIST_LINEAR) & ((1u << HIST_SUB_BITS) - 1);
	return ((uint64_t)(sub + (1u << HIST_SUB_BITS))) << (e - HIST_SUB_BITS);
}

/* one past the largest value that lands in bucket idx */
uint64_t dp_hist_upper(uint32_t idx)
{
	return idx + 1 < DP_HIST_BUCKETS ? dp_hist_lower(idx + 1) : UINT64_MAX;
}
