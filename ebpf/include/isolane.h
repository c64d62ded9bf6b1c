/* isolane.h - the tenant ABI: what a tenant XDP handler may rely on.
 *
 * A tenant handler is restricted C compiled by bcc, proved by the kernel
 * verifier as an XDP program, and run by isolane's engines (interpreter,
 * jointly compiled C) or by the kernel itself (the oracle). bcc already
 * provides the uapi types (struct xdp_md, enum xdp_action) and the helper
 * declarations; this header states the contract and adds small parsing and
 * reply helpers.
 *
 * THE HANDLER
 *   One non-static function `int name(struct xdp_md *ctx)`. isolane takes the
 *   function named by `function` in tenant.toml, else the only function of
 *   the file with a `struct xdp_md *` argument. It returns a verdict.
 *
 * VERDICTS (enum xdp_action)
 *   XDP_TX        the (rewritten) packet is the reply: it leaves on the port
 *                 it came from. Swap addresses yourself (isolane_reply_udp).
 *   XDP_DROP      the packet is freed; counted as the tenant's drop.
 *   XDP_PASS      the packet goes to the tenant's slow path (a ring a tenant
 *                 process reads), unchanged apart from what the handler wrote.
 *   XDP_REDIRECT  with bpf_redirect_map() on a devmap/xskmap: forwarded.
 *   XDP_ABORTED   (and any other value) is a handler error: dropped, counted.
 *
 * CONTEXT (struct xdp_md, read only)
 *   data, data_end, data_meta  packet bounds: compare before every access.
 *   ingress_ifindex            the port the packet came in on.
 *   rx_queue_index             its receive queue.
 *   egress_ifindex             0 (isolane runs handlers on receive only).
 *   isolane's engines see the same fields with 64-bit pointers
 *   (struct dp_xdp_ctx { u64 data, data_end, data_meta; u32 ingress_ifindex,
 *   rx_queue_index, egress_ifindex, pad; }); the toolchain rewrites the loads.
 *   Read fields directly from `ctx` (or a copy of the pointer); never do
 *   arithmetic on `ctx` itself.
 *
 * PACKET BUFFER
 *   Frames start with an Ethernet header; 256 bytes of headroom
 *   (bpf_xdp_adjust_head) and tailroom up to the buffer end
 *   (bpf_xdp_adjust_tail) are available. Every helper that changes the
 *   packet's size invalidates all packet pointers: reload ctx->data and
 *   ctx->data_end and check bounds again.
 *
 * HELPERS (kernel ids and signatures; nothing else is accepted)
 *     1  bpf_map_lookup_elem(map, key)            -> value * or NULL
 *     2  bpf_map_update_elem(map, key, value, flags)
 *     3  bpf_map_delete_elem(map, key)
 *     5  bpf_ktime_get_ns()
 *    28  bpf_csum_diff(from, from_size, to, to_size, seed)
 *    44  bpf_xdp_adjust_head(ctx, delta)
 *    51  bpf_redirect_map(map, key, flags)
 *    65  bpf_xdp_adjust_tail(ctx, delta)
 *   130  bpf_ringbuf_output(ringbuf, data, size, flags)  (to the slow path)
 *   bcc's map syntax (BPF_HASH(m, K, V, n); m.lookup(&k); m.update(&k, &v);
 *   m.delete(&k)) compiles to helpers 1-3. Maps: array, hash (and their
 *   percpu/lru variants), devmap, ringbuf.
 *
 * FUNCTIONS OF YOUR OWN
 *   must be `static __always_inline` (ISOLANE_INLINE). isolane loads one
 *   function; a BPF-to-BPF call fails in the kernel with "jump out of range".
 *
 * LOOPS AND THE LOOP BUDGET
 *   Loops must have a constant trip bound the verifier can see (e.g.
 *   `for (i = 0; i < N; i++)`, with `#pragma clang loop unroll(disable)` to
 *   keep them loops). A handler with loops declares `loop_budget` in
 *   tenant.toml: the most back edges (loop iterations) one packet may take,
 *   summed over all loops. The static bound is then
 *       longest path from entry + loop_budget * longest path from a loop head
 *   and the engine stops a packet whose back edges exceed the budget
 *   (counted, charged, XDP_ABORTED). Name the bound once in C, e.g.
 *   `#define HASH_MAX_BYTES 1024  // == loop_budget in tenant.toml`.
 *
 * STACK: 512 bytes, as in the kernel.
 */
#ifndef ISOLANE_H
#define ISOLANE_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

#define ISOLANE_ABI_VERSION 1
#define ISOLANE_INLINE static __always_inline

/* Result of isolane_parse_udp(). */
enum isolane_parse {
	ISOLANE_UDP = 0,	/* IPv4 + UDP, headers and lengths consistent */
	ISOLANE_NOT_IPV4,	/* not an IPv4 frame (ARP, IPv6, ...) */
	ISOLANE_NOT_UDP,	/* IPv4, another protocol */
	ISOLANE_FRAGMENT,	/* IPv4 fragment: no (or a partial) UDP header */
	ISOLANE_MALFORMED,	/* truncated or inconsistent headers */
};

/* Pointers into one parsed IPv4/UDP frame. `payload_len` is from the UDP
 * length field (checked to lie inside the frame). */
struct isolane_udp {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	unsigned char *payload;
	__u32 payload_len;
};

ISOLANE_INLINE void *isolane_data(struct xdp_md *ctx)
{
	return (void *)(long)ctx->data;
}

ISOLANE_INLINE void *isolane_data_end(struct xdp_md *ctx)
{
	return (void *)(long)ctx->data_end;
}

ISOLANE_INLINE __u32 isolane_ingress_ifindex(struct xdp_md *ctx)
{
	return ctx->ingress_ifindex;
}

ISOLANE_INLINE __u32 isolane_rx_queue(struct xdp_md *ctx)
{
	return ctx->rx_queue_index;
}

/* Ethernet + IPv4 header, options allowed. Fills p->eth (once the Ethernet
 * header is known to be in the frame) and p->ip.
 * RFC 791: version 4, IHL >= 5, total length covers the header and fits
 * the frame. */
ISOLANE_INLINE int isolane_parse_ipv4(void *data, void *data_end, struct isolane_udp *p)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl_bytes;

	if ((void *)(eth + 1) > data_end)
		return ISOLANE_MALFORMED;
	p->eth = eth;	/* valid from here on, also for ISOLANE_NOT_IPV4 */
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return ISOLANE_NOT_IPV4;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return ISOLANE_MALFORMED;
	ihl_bytes = ip->ihl * 4;
	if (ip->version != 4 || ihl_bytes < sizeof(*ip))
		return ISOLANE_MALFORMED;
	if ((void *)ip + ihl_bytes > data_end)
		return ISOLANE_MALFORMED;
	if (bpf_ntohs(ip->tot_len) < ihl_bytes ||
	    (void *)ip + bpf_ntohs(ip->tot_len) > data_end)
		return ISOLANE_MALFORMED;
	p->ip = ip;
	return ISOLANE_UDP;
}

/* Ethernet + IPv4 + UDP (RFC 768): the UDP header lies in the frame, its
 * length is >= 8 and within the IPv4 total length. */
ISOLANE_INLINE int isolane_parse_udp(void *data, void *data_end, struct isolane_udp *p)
{
	struct udphdr *udp;
	__u32 ihl_bytes, ulen;
	int ret = isolane_parse_ipv4(data, data_end, p);

	if (ret != ISOLANE_UDP)
		return ret;
	if (p->ip->frag_off & bpf_htons(0x3fff))	/* MF or fragment offset */
		return ISOLANE_FRAGMENT;
	if (p->ip->protocol != IPPROTO_UDP)
		return ISOLANE_NOT_UDP;
	ihl_bytes = p->ip->ihl * 4;
	udp = (void *)p->ip + ihl_bytes;
	if ((void *)(udp + 1) > data_end)
		return ISOLANE_MALFORMED;
	ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(*udp) || ulen > bpf_ntohs(p->ip->tot_len) - ihl_bytes)
		return ISOLANE_MALFORMED;
	p->udp = udp;
	p->payload = (unsigned char *)(udp + 1);
	p->payload_len = ulen - sizeof(*udp);
	return ISOLANE_UDP;
}

ISOLANE_INLINE void isolane_swap_mac(struct ethhdr *eth)
{
	unsigned char tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

/* Swapping addresses leaves the IPv4 header checksum unchanged. */
ISOLANE_INLINE void isolane_swap_ipv4(struct iphdr *ip)
{
	__be32 tmp = ip->saddr;

	ip->saddr = ip->daddr;
	ip->daddr = tmp;
}

/* Swapping ports leaves the UDP checksum unchanged. */
ISOLANE_INLINE void isolane_swap_ports(struct udphdr *udp)
{
	__be16 tmp = udp->source;

	udp->source = udp->dest;
	udp->dest = tmp;
}

/* Turn a parsed request into its reply's headers: swap MACs, IPs, ports. */
ISOLANE_INLINE void isolane_reply_udp(struct isolane_udp *p)
{
	isolane_swap_mac(p->eth);
	isolane_swap_ipv4(p->ip);
	isolane_swap_ports(p->udp);
}

/* IPv4 header checksum (RFC 1071) of a 20-byte header (IHL 5); the caller
 * has checked that the 20 bytes are in the packet. */
ISOLANE_INLINE __u16 isolane_ipv4_csum20(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 sum = 0;

	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

#endif /* ISOLANE_H */
