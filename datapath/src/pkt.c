/* pkt.c - packets outside the fast path (tools, tests, benchmarks). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"

struct pkt *pkt_scratch(const uint8_t *frame, uint32_t len)
{
	struct pkt *p;

	if (len > PKT_MAX_LEN)
		return NULL;
	p = aligned_alloc(64, FRAME_SIZE);
	if (!p)
		return NULL;
	memset(p, 0, sizeof(*p));
	p->off = PKT_DATA_OFF;
	p->len = len;
	memcpy(pkt_data(p), frame, len);
	return p;
}

int pkt_copy_out(const struct pkt *p, uint8_t *frame, uint32_t *len, uint32_t cap)
{
	if (p->len > cap)
		return -ENOSPC;
	memcpy(frame, (const uint8_t *)p + p->off, p->len);
	*len = p->len;
	return 0;
}
