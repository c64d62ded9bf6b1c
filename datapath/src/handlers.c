/* handlers.c - the native reference handlers.
 *
 * echo: a UDP/TCP responder that swaps the Ethernet, IPv4 and L4
 *   addresses and transmits the packet back (checksums stay valid: the
 *   one's-complement sums are symmetric in the swapped fields).
 * spin: the adversary: burns the cost the packet's isolane probe header
 *   asks for (or the tenant's configured cost), then echoes.
 * udp_echo: the hand-written C twin of the tenant program tenants/udp_echo
 *   (the same parse and verdicts, checked against its fixture table): the
 *   reference that the programmability tax is measured against.
 *
 * Their static bounds: echo and drop are loop-free code of a few dozen
 * instructions, bounded generously (10x what they take here); spin's cost
 * is whatever the packet says (at most DP_SPIN_MAX_NS), so it has no bound
 * and is timed after every packet. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ebpf_vm.h"
#include "handler.h"
#include "isolane_dp.h"
#include "tsc.h"

struct l4_view {
	uint8_t *l3;     /* IPv4 header */
	uint8_t *l4;     /* UDP/TCP header */
	uint8_t *payload;
	uint32_t payload_len;
};

/* Locates IPv4 and its UDP/TCP header; 0 or -1 when the packet is not one
 * the handler understands (the classifier has already checked lengths,
 * but a handler must not rely on that). */
static always_inline int parse_l4(struct pkt *p, struct l4_view *v)
{
	uint8_t *d = pkt_data(p);
	uint32_t off = 14, ihl, l4_hdr;

	if (p->len < 14)
		return -1;
	if (d[12] == 0x81 && d[13] == 0x00)
		off = 18;
	if (p->len < off + 20 || d[off - 2] != 0x08 || d[off - 1] != 0x00)
		return -1;
	ihl = (d[off] & 0xf) * 4u;
	if (ihl < 20 || p->len < off + ihl + 8)
		return -1;
	v->l3 = d + off;
	v->l4 = d + off + ihl;
	if (v->l3[9] == 17)
		l4_hdr = 8;
	else if (v->l3[9] == 6 && p->len >= off + ihl + 20)
		l4_hdr = (v->l4[12] >> 4) * 4u;
	else
		return -1;
	if (p->len < off + ihl + l4_hdr)
		return -1;
	v->payload = v->l4 + l4_hdr;
	v->payload_len = p->len - (off + ihl + l4_hdr);
	return 0;
}

static always_inline void swap_bytes(uint8_t *a, uint8_t *b, uint32_t n)
{
	uint8_t tmp[6];

	memcpy(tmp, a, n);
	memcpy(a, b, n);
	memcpy(b, tmp, n);
}

static always_inline uint32_t echo_back(struct pkt *p, struct l4_view *v)
{
	uint8_t *d = pkt_data(p);

	swap_bytes(d, d + 6, 6);               /* Ethernet dst <-> src */
	swap_bytes(v->l3 + 12, v->l3 + 16, 4); /* IPv4 src <-> dst */
	swap_bytes(v->l4, v->l4 + 2, 2);       /* ports */
	return DP_XDP_TX;
}

static always_inline uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* isolane_parse_udp() of ebpf/include/isolane.h, verdict for verdict:
 * not IPv4, not UDP or a fragment: the slow path; inconsistent: drop */
static uint32_t run_udp_echo(const struct handler *h, struct pkt *p)
{
	uint8_t *d = pkt_data(p), *ip = d + 14, *udp;
	uint32_t ihl, tot, ulen;

	if (unlikely(p->len < 14))
		return DP_XDP_DROP;
	if (be16(d + 12) != 0x0800)
		return DP_XDP_PASS;
	if (unlikely(p->len < 14 + 20))
		return DP_XDP_DROP;
	ihl = (ip[0] & 0xf) * 4u;
	tot = be16(ip + 2);
	if (unlikely((ip[0] >> 4) != 4 || ihl < 20 || 14 + ihl > p->len || tot < ihl ||
		     14 + tot > p->len))
		return DP_XDP_DROP;
	if (be16(ip + 6) & 0x3fff) /* MF or a fragment offset */
		return DP_XDP_PASS;
	if (ip[9] != 17)
		return DP_XDP_PASS;
	udp = ip + ihl;
	if (unlikely(14 + ihl + 8 > p->len))
		return DP_XDP_DROP;
	ulen = be16(udp + 4);
	if (unlikely(ulen < 8 || ulen > tot - ihl))
		return DP_XDP_DROP;
	swap_bytes(d, d + 6, 6);
	swap_bytes(ip + 12, ip + 16, 4);
	swap_bytes(udp, udp + 2, 2);
	return DP_XDP_TX;
}

static uint32_t run_drop(const struct handler *h, struct pkt *p)
{
	return DP_XDP_DROP;
}

static uint32_t run_echo(const struct handler *h, struct pkt *p)
{
	struct l4_view v;

	if (parse_l4(p, &v))
		return DP_XDP_DROP;
	return echo_back(p, &v);
}

static uint32_t run_spin(const struct handler *h, struct pkt *p)
{
	uint64_t cycles = h->spin_cycles;
	struct dp_probe probe;
	struct l4_view v;

	if (parse_l4(p, &v))
		return DP_XDP_DROP;
	if (v.payload_len >= sizeof(probe)) {
		memcpy(&probe, v.payload, sizeof(probe));
		if (probe.magic == DP_PROBE_MAGIC)
			cycles = ns_to_cycles(MIN(probe.cost_ns, DP_SPIN_MAX_NS));
	}
	tsc_spin(cycles);
	return echo_back(p, &v);
}

/* a tenant's eBPF program: a fault drops the packet, counted as a fault */
static uint32_t run_ebpf(const struct handler *h, struct pkt *p)
{
	struct dp_prog_result res;
	uint32_t verdict = ebpf_run_pkt(h->prog, p, &res);

	return unlikely(res.fault) ? VERDICT_FAULT : verdict;
}

void handler_init_ebpf(struct handler *h, const struct dp_prog *prog, uint32_t bound_ns)
{
	h->kind = DP_HANDLER_EBPF;
	h->run = run_ebpf;
	h->prog = prog;
	h->bound_cycles = ns_to_cycles(bound_ns);
	h->spin_cycles = 0;
}

static const struct {
	uint32_t (*run)(const struct handler *, struct pkt *);
	uint32_t bound_ns;
} natives[] = {
	[DP_HANDLER_DROP] = {run_drop, 20},
	[DP_HANDLER_ECHO] = {run_echo, 100},
	[DP_HANDLER_SPIN] = {run_spin, 0},
	[DP_HANDLER_UDP_ECHO] = {run_udp_echo, 100},
};

int handler_init(struct handler *h, uint32_t kind, uint32_t spin_ns)
{
	if (kind >= ARRAY_SIZE(natives) || !natives[kind].run)
		return -EINVAL;
	h->kind = kind;
	h->run = natives[kind].run;
	h->bound_cycles = ns_to_cycles(natives[kind].bound_ns);
	h->spin_cycles = ns_to_cycles(spin_ns);
	h->prog = NULL;
	return 0;
}

/* Times a handler on one packet, run `repeat` times in place (as
 * BPF_PROG_TEST_RUN does): the programmability tax compares these. */
int64_t handler_bench(const struct handler *h, const uint8_t *pkt, uint32_t len, uint64_t repeat,
		      uint32_t *verdict)
{
	struct pkt *p;
	uint64_t t0, t1;

	if (len > PKT_MAX_LEN || !repeat)
		return -EINVAL;
	p = pkt_scratch(pkt, len);
	if (!p)
		return -ENOMEM;
	t0 = rdtsc();
	for (uint64_t i = 0; i < repeat; i++) {
		p->off = PKT_DATA_OFF;
		p->len = len;
		p->verdict = (uint8_t)h->run(h, p);
		__asm__ volatile("" : : "r"(p) : "memory"); /* keep every run */
	}
	t1 = rdtsc();
	if (verdict)
		*verdict = p->verdict;
	free(p);
	return (int64_t)(t1 - t0);
}

int dp_handler_run(uint32_t kind, uint8_t *frame, uint32_t *len, uint32_t cap)
{
	struct handler h;
	struct pkt *p;
	int ret = handler_init(&h, kind, 0);

	if (ret)
		return ret;
	if (*len > PKT_MAX_LEN)
		return -EMSGSIZE;
	p = pkt_scratch(frame, *len);
	if (!p)
		return -ENOMEM;
	ret = (int)h.run(&h, p);
	ret = pkt_copy_out(p, frame, len, cap) ?: ret;
	free(p);
	return ret;
}

int64_t dp_handler_bench(uint32_t kind, const uint8_t *pkt, uint32_t len, uint64_t repeat)
{
	struct handler h;
	int err = handler_init(&h, kind, 0);

	return err ? err : handler_bench(&h, pkt, len, repeat, NULL);
}
