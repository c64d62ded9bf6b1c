/* acl - a stateless IPv4 allow-list (default deny), RFC 791 / RFC 768 /
 * RFC 9293 headers.
 *
 * Rules live in the hash map `acl_rules`, keyed by (source IPv4, destination
 * port), both in network byte order; a value != 0 allows. TCP and UDP look
 * up their destination port; other IPv4 protocols (ICMP, ...) look up port
 * 0. Allowed: XDP_PASS to the tenant's slow path. Everything else: XDP_DROP,
 * including IPv4 fragments (non-first fragments carry no port), malformed
 * frames and non-IPv4 frames, except ARP, which passes so the host keeps
 * resolving addresses. */
#include <isolane.h>

struct acl_key {
	__be32 saddr;
	__be16 dport;
	__u16 pad;	/* always 0 */
};

BPF_HASH(acl_rules, struct acl_key, __u32, 1024);

int acl(struct xdp_md *ctx)
{
	void *data = isolane_data(ctx);
	void *data_end = isolane_data_end(ctx);
	struct isolane_udp p;
	struct acl_key key = {};
	__u32 *allow;
	void *l4;

	switch (isolane_parse_ipv4(data, data_end, &p)) {
	case ISOLANE_UDP:
		break;
	case ISOLANE_NOT_IPV4:
		return p.eth->h_proto == bpf_htons(ETH_P_ARP) ? XDP_PASS : XDP_DROP;
	default:
		return XDP_DROP;
	}
	if (p.ip->frag_off & bpf_htons(0x1fff))		/* non-first fragment */
		return XDP_DROP;
	key.saddr = p.ip->saddr;
	l4 = (void *)p.ip + p.ip->ihl * 4;
	if (p.ip->protocol == IPPROTO_UDP || p.ip->protocol == IPPROTO_TCP) {
		/* both headers start with source port, destination port */
		if (l4 + 4 > data_end)
			return XDP_DROP;
		key.dport = ((struct udphdr *)l4)->dest;
	}
	allow = acl_rules.lookup(&key);
	return allow && *allow ? XDP_PASS : XDP_DROP;
}
