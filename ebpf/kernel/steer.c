/* steer.c - isolane's steering program: tenant traffic to AF_XDP sockets.
 *
 * Loaded with bcc and attached to one interface by ebpf/steer.py (Steer).
 * For every received frame:
 *
 *   IPv4 UDP/TCP matching a rule in `steer_rules`
 *       -> bpf_redirect_map(&xsks, rx_queue_index, XDP_PASS) (bcc spells it
 *          xsks.redirect_map(...)): to the AF_XDP socket bound on the
 *          frame's receive queue. With no socket in that slot the helper
 *          returns XDP_PASS and the kernel gets the frame (counted as
 *          STEER_FALLBACK, not as redirected).
 *   ARP                      -> XDP_PASS (STEER_PASSED_ARP)
 *   IPv4 ICMP                -> XDP_PASS (STEER_PASSED_ICMP)
 *   anything else            -> XDP_PASS (STEER_PASSED_OTHER): IPv6, VLAN,
 *          other IPv4 protocols, IPv4 fragments (AF_XDP cannot reassemble,
 *          the kernel does), UDP/TCP that matches no rule.
 *   truncated or inconsistent Ethernet/IPv4/UDP/TCP headers
 *                            -> XDP_PASS (STEER_MALFORMED): the kernel drops
 *          them itself and counts them in its own SNMP counters.
 *
 * RULES: key (daddr, proto, dport), network byte order; 0 is a wildcard in
 * every field (proto 0 = UDP or TCP). A frame is steered when any of the
 * eight keys made from (daddr|0, proto|0, dport|0) is in the map, so the key
 * (0, 0, 0) steers all IPv4 UDP and TCP. The value is a tag for user space
 * (e.g. a tenant id); the program only tests presence.
 *
 * Each frame is counted exactly once in the per-CPU array `steer_stats`,
 * and by its receive queue in `steer_queue_stats` (slot 2q: frames seen on
 * queue q, 2q + 1: of those, redirected to q's socket), which shows where
 * a multi-queue interface delivered its traffic.
 */
#include <uapi/linux/tcp.h>
#include "isolane.h"

#ifndef STEER_MAX_QUEUES
#define STEER_MAX_QUEUES 64
#endif
#ifndef STEER_MAX_RULES
#define STEER_MAX_RULES 1024
#endif

enum steer_stat {
	STEER_REDIRECTED = 0,
	STEER_PASSED_ARP,
	STEER_PASSED_ICMP,
	STEER_PASSED_OTHER,
	STEER_MALFORMED,
	STEER_FALLBACK,
	STEER_NSTATS,
};

struct steer_key {
	__be32 daddr;	/* 0: any destination */
	__u8 proto;	/* IPPROTO_UDP, IPPROTO_TCP, 0: either */
	__u8 pad;	/* always 0 */
	__be16 dport;	/* 0: any port */
};

BPF_XSKMAP(xsks, STEER_MAX_QUEUES);
BPF_HASH(steer_rules, struct steer_key, __u32, STEER_MAX_RULES);
BPF_PERCPU_ARRAY(steer_stats, __u64, STEER_NSTATS);
BPF_PERCPU_ARRAY(steer_queue_stats, __u64, 2 * STEER_MAX_QUEUES);

ISOLANE_INLINE void steer_count_queue(__u32 queue, __u32 redirected)
{
	__u32 slot = 2 * queue + redirected;
	__u64 *n;

	if (queue >= STEER_MAX_QUEUES)
		return;
	n = steer_queue_stats.lookup(&slot);
	if (n)
		*n += 1;
}

ISOLANE_INLINE int steer_count(__u32 stat, int verdict)
{
	__u64 *n = steer_stats.lookup(&stat);

	if (n)
		*n += 1;
	return verdict;
}

ISOLANE_INLINE int steer_match(__be32 daddr, __u8 proto, __be16 dport)
{
	struct steer_key k = {};
	int i;

#pragma unroll
	for (i = 0; i < 8; i++) {
		k.daddr = (i & 4) ? 0 : daddr;
		k.proto = (i & 2) ? 0 : proto;
		k.dport = (i & 1) ? 0 : dport;
		if (steer_rules.lookup(&k))
			return 1;
	}
	return 0;
}

int isolane_steer(struct xdp_md *ctx)
{
	void *data = isolane_data(ctx);
	void *data_end = isolane_data_end(ctx);
	struct isolane_udp p = {};
	struct iphdr *ip;
	void *l4;
	__be16 dport;
	__u32 ihl_bytes, l4_len;
	int ret;

	steer_count_queue(ctx->rx_queue_index, 0);
	ret = isolane_parse_ipv4(data, data_end, &p);
	if (ret == ISOLANE_MALFORMED)
		return steer_count(STEER_MALFORMED, XDP_PASS);
	if (ret == ISOLANE_NOT_IPV4) {
		if (p.eth->h_proto == bpf_htons(ETH_P_ARP))
			return steer_count(STEER_PASSED_ARP, XDP_PASS);
		return steer_count(STEER_PASSED_OTHER, XDP_PASS);
	}
	ip = p.ip;
	if (ip->protocol == IPPROTO_ICMP)
		return steer_count(STEER_PASSED_ICMP, XDP_PASS);
	if (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_TCP)
		return steer_count(STEER_PASSED_OTHER, XDP_PASS);
	if (ip->frag_off & bpf_htons(0x3fff))	/* MF or a fragment offset */
		return steer_count(STEER_PASSED_OTHER, XDP_PASS);

	ihl_bytes = ip->ihl * 4;
	l4 = (void *)ip + ihl_bytes;
	l4_len = bpf_ntohs(ip->tot_len) - ihl_bytes;	/* parse_ipv4: tot_len >= ihl */
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		__u32 ulen;

		if ((void *)(udp + 1) > data_end)
			return steer_count(STEER_MALFORMED, XDP_PASS);
		ulen = bpf_ntohs(udp->len);
		if (ulen < sizeof(*udp) || ulen > l4_len)
			return steer_count(STEER_MALFORMED, XDP_PASS);
		dport = udp->dest;
	} else {
		struct tcphdr *tcp = l4;
		__u32 doff;

		if ((void *)(tcp + 1) > data_end)
			return steer_count(STEER_MALFORMED, XDP_PASS);
		doff = tcp->doff * 4;
		if (doff < sizeof(*tcp) || doff > l4_len)
			return steer_count(STEER_MALFORMED, XDP_PASS);
		dport = tcp->dest;
	}

	if (!steer_match(ip->daddr, ip->protocol, dport))
		return steer_count(STEER_PASSED_OTHER, XDP_PASS);
	ret = xsks.redirect_map(ctx->rx_queue_index, XDP_PASS);
	if (ret == XDP_REDIRECT) {
		steer_count_queue(ctx->rx_queue_index, 1);
		return steer_count(STEER_REDIRECTED, ret);
	}
	return steer_count(STEER_FALLBACK, ret);
}
