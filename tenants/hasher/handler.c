/* hasher - the adversary: its cost grows with the payload.
 *
 * For every UDP datagram it computes the 32-bit FNV-1a hash
 * (draft-eastlake-fnv, offset basis 2166136261, prime 16777619) of the
 * first min(payload length, HASH_MAX_BYTES) payload bytes, one byte per loop
 * iteration, writes it big-endian over the payload's first 4 bytes (when the
 * payload has them), sets the UDP checksum to 0 and sends the datagram back
 * (XDP_TX, addresses and ports swapped). Non-UDP: XDP_PASS; malformed:
 * XDP_DROP. */
#include <isolane.h>

#define HASH_MAX_BYTES 1024	/* == loop_budget in tenant.toml */
#define FNV32_BASIS 2166136261u
#define FNV32_PRIME 16777619u

int hasher(struct xdp_md *ctx)
{
	void *data = isolane_data(ctx);
	void *data_end = isolane_data_end(ctx);
	struct isolane_udp p;
	unsigned char *c;
	__u32 h = FNV32_BASIS;
	__u64 n;

	switch (isolane_parse_udp(data, data_end, &p)) {
	case ISOLANE_UDP:
		break;
	case ISOLANE_MALFORMED:
		return XDP_DROP;
	default:
		return XDP_PASS;
	}
	n = p.payload_len;
	c = p.payload;
#pragma clang loop unroll(disable)
	for (__u64 i = 0; i < HASH_MAX_BYTES; i++) {
		if (i >= n || (void *)(c + 1) > data_end)
			break;
		h = (h ^ *c) * FNV32_PRIME;
		c++;
	}
	if (n >= 4 && (void *)(p.payload + 4) <= data_end) {
		p.payload[0] = h >> 24;
		p.payload[1] = h >> 16;
		p.payload[2] = h >> 8;
		p.payload[3] = h;
	}
	p.udp->check = 0;
	isolane_reply_udp(&p);
	return XDP_TX;
}
