/* pkt.h - packet buffers: fixed-size frames with metadata and XDP headroom.
 *
 *   frame: | struct pkt (64 B) | headroom (256 B) | data ... | tailroom |
 *
 * The headroom lets a handler grow the packet at the front
 * (bpf_xdp_adjust_head) exactly as it may in the kernel. */
#ifndef ISOLANE_PKT_H
#define ISOLANE_PKT_H

#include <stdint.h>

#include "isolane_dp.h"

#define FRAME_SIZE 2048u
#define PKT_META_SIZE 64u
#define PKT_HEADROOM 256u
#define PKT_DATA_OFF (PKT_META_SIZE + PKT_HEADROOM)
#define PKT_MAX_LEN (FRAME_SIZE - PKT_DATA_OFF)
_Static_assert(PKT_MAX_LEN == DP_MAX_FRAME_LEN, "the public frame limit matches the layout");

struct pkt {
	uint64_t ts_intended; /* TSC at which the sender meant to send it */
	uint32_t off;         /* data offset from the frame start */
	uint32_t len;
	uint16_t tenant;
	uint16_t flow;        /* generator flow, for per-flow stats */
	uint32_t frame;       /* frame index in the backend's pool */
	uint8_t verdict;      /* enum dp_verdict once the handler ran */
	uint8_t _pad[3];
	uint32_t rx_cycles;   /* its share of its RX burst, charged with its handler */
	uint8_t _pad2[32];
};
_Static_assert(sizeof(struct pkt) == PKT_META_SIZE, "pkt meta is one cache line");

static inline uint8_t *pkt_data(struct pkt *p)
{
	return (uint8_t *)p + p->off;
}

/* A packet outside any backend, for tools and tests: a fresh frame holding
 * a copy of frame[0..len) (NULL without memory; free() it), and the copy
 * back out (0, or -ENOSPC when the packet outgrew cap). */
struct pkt *pkt_scratch(const uint8_t *frame, uint32_t len);
int pkt_copy_out(const struct pkt *p, uint8_t *frame, uint32_t *len, uint32_t cap);

/* bytes the packet may grow to at the tail */
static inline uint32_t pkt_room(const struct pkt *p)
{
	return FRAME_SIZE - p->off;
}

#endif
