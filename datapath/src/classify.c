/* classify.c - header parsing and tuple-space rule lookup.
 *
 * Parsing follows IEEE 802.1Q, RFC 791 (IPv4), RFC 768 (UDP) and RFC 9293
 * (TCP) only as far as classification needs; any length that does not fit
 * the frame makes the packet malformed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "classify.h"
#include "compiler.h"

enum {
	F_VLAN = 1,
	F_IP = 2,
	F_PROTO = 4,
	F_PORT = 8,
	N_MASKS = 16,
};

#define EMPTY_SLOT 0xffff

struct cls_entry {
	uint64_t key;
	uint16_t tenant; /* EMPTY_SLOT when unused */
};

struct cls_table {
	uint32_t mask;
	uint32_t slots_mask;
	struct cls_entry *slots;
};

struct classifier {
	uint32_t n_tables; /* ordered most specific first */
	struct cls_table tables[N_MASKS];
};

struct flow_key {
	uint32_t ip;
	uint16_t port;
	uint16_t vlan;
	uint8_t proto; /* 0 none, 1 TCP, 2 UDP, 3 other */
	uint8_t has_ip;
	uint8_t has_port;
};

static uint8_t proto_code(uint8_t ip_proto)
{
	return ip_proto == 6 ? 1 : ip_proto == 17 ? 2 : 3;
}

/* ip(32) | port(16) | vlan(12) | proto(2) with the unused fields zeroed */
static always_inline uint64_t key_of(uint32_t mask, uint32_t ip, uint16_t port, uint16_t vlan,
				     uint8_t proto)
{
	uint64_t k = 0;

	if (mask & F_IP)
		k |= (uint64_t)ip << 30;
	if (mask & F_PORT)
		k |= (uint64_t)port << 14;
	if (mask & F_VLAN)
		k |= (uint64_t)(vlan & 0xfff) << 2;
	if (mask & F_PROTO)
		k |= proto;
	return k;
}

static always_inline uint32_t hash64(uint64_t k)
{
	k *= 0x9e3779b97f4a7c15ull;
	return (uint32_t)(k >> 32);
}

static uint32_t rule_mask(const struct dp_rule *r)
{
	return (r->vlan ? F_VLAN : 0) | (r->ip_dst ? F_IP : 0) | (r->proto ? F_PROTO : 0) |
	       (r->dport ? F_PORT : 0);
}

/* most specific first: more fields, then port > proto > ip > vlan */
static int mask_cmp(const void *a, const void *b)
{
	uint32_t ma = ((const struct cls_table *)a)->mask, mb = ((const struct cls_table *)b)->mask;
	int pa = __builtin_popcount(ma), pb = __builtin_popcount(mb);

	if (pa != pb)
		return pb - pa;
	return (int)mb - (int)ma;
}

static int table_insert(struct cls_table *t, uint64_t key, uint16_t tenant)
{
	for (uint32_t i = hash64(key);; i++) {
		struct cls_entry *e = &t->slots[i & t->slots_mask];

		if (e->tenant == EMPTY_SLOT) {
			e->key = key;
			e->tenant = tenant;
			return 0;
		}
		if (e->key == key)
			return -EEXIST;
	}
}

struct classifier *classifier_build(const struct dp_rule *rules, uint32_t n, int *err)
{
	uint32_t count[N_MASKS] = {0};
	struct classifier *c;

	*err = -EINVAL;
	if (n > DP_MAX_RULES)
		return NULL;
	for (uint32_t i = 0; i < n; i++) {
		if (rules[i].tenant >= DP_MAX_TENANTS || rules[i].vlan > 4095 ||
		    (rules[i].proto && rules[i].proto != 6 && rules[i].proto != 17))
			return NULL;
		count[rule_mask(&rules[i])]++;
	}
	*err = -ENOMEM;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	for (uint32_t m = 0; m < N_MASKS; m++) {
		struct cls_table *t;
		uint32_t slots = 4;

		if (!count[m])
			continue;
		while (slots < 2 * count[m])
			slots <<= 1;
		t = &c->tables[c->n_tables++];
		t->mask = m;
		t->slots_mask = slots - 1;
		t->slots = malloc(slots * sizeof(*t->slots));
		if (!t->slots)
			goto out_free;
		for (uint32_t i = 0; i < slots; i++)
			t->slots[i].tenant = EMPTY_SLOT;
	}
	qsort(c->tables, c->n_tables, sizeof(c->tables[0]), mask_cmp);
	for (uint32_t i = 0; i < n; i++) {
		const struct dp_rule *r = &rules[i];
		uint32_t m = rule_mask(r);

		for (uint32_t j = 0; j < c->n_tables; j++) {
			if (c->tables[j].mask != m)
				continue;
			*err = table_insert(&c->tables[j],
					    key_of(m, r->ip_dst, r->dport, r->vlan,
						   r->proto ? proto_code(r->proto) : 0),
					    r->tenant);
			if (*err)
				goto out_free;
		}
	}
	*err = 0;
	return c;

out_free:
	classifier_free(c);
	return NULL;
}

void classifier_free(struct classifier *c)
{
	if (!c)
		return;
	for (uint32_t i = 0; i < c->n_tables; i++)
		free(c->tables[i].slots);
	free(c);
}

static always_inline uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static always_inline uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* 0, or -EBADMSG when a header is cut short or its lengths lie */
static always_inline int parse(const uint8_t *d, uint32_t len, struct flow_key *k)
{
	uint32_t off = 14, ihl, tot, l4_len;
	uint16_t ethertype;

	memset(k, 0, sizeof(*k));
	if (unlikely(len < 14))
		return -EBADMSG;
	ethertype = be16(d + 12);
	if (ethertype == 0x8100) {
		if (unlikely(len < 18))
			return -EBADMSG;
		k->vlan = be16(d + 14) & 0xfff;
		ethertype = be16(d + 16);
		off = 18;
	}
	if (ethertype != 0x0800)
		return 0; /* not IPv4: only VLAN or catch-all rules can match */

	/* IPv4 */
	if (unlikely(len < off + 20 || (d[off] >> 4) != 4))
		return -EBADMSG;
	ihl = (d[off] & 0xf) * 4u;
	tot = be16(d + off + 2);
	if (unlikely(ihl < 20 || tot < ihl || off + tot > len))
		return -EBADMSG;
	k->has_ip = 1;
	k->ip = be32(d + off + 16);
	k->proto = proto_code(d[off + 9]);
	if (be16(d + off + 6) & 0x1fff)
		return 0; /* a later fragment: no L4 header */

	/* UDP / TCP: the ports, and a header that fits the IP payload */
	l4_len = tot - ihl;
	off += ihl;
	if (k->proto == 2) {
		if (unlikely(l4_len < 8 || be16(d + off + 4) < 8 || be16(d + off + 4) > l4_len))
			return -EBADMSG;
	} else if (k->proto == 1) {
		if (unlikely(l4_len < 20 || (d[off + 12] >> 4) < 5 ||
			     (d[off + 12] >> 4) * 4u > l4_len))
			return -EBADMSG;
	} else {
		return 0;
	}
	k->port = be16(d + off + 2);
	k->has_port = 1;
	return 0;
}

static always_inline int table_lookup(const struct cls_table *t, uint64_t key)
{
	for (uint32_t i = hash64(key);; i++) {
		const struct cls_entry *e = &t->slots[i & t->slots_mask];

		if (e->tenant == EMPTY_SLOT)
			return -ENOENT;
		if (e->key == key)
			return e->tenant;
	}
}

int classify(const struct classifier *c, const uint8_t *data, uint32_t len)
{
	struct flow_key k;
	int ret = parse(data, len, &k);

	if (unlikely(ret))
		return ret;
	for (uint32_t i = 0; i < c->n_tables; i++) {
		const struct cls_table *t = &c->tables[i];

		if (((t->mask & (F_IP | F_PROTO)) && !k.has_ip) || ((t->mask & F_PORT) && !k.has_port))
			continue;
		ret = table_lookup(t, key_of(t->mask, k.ip, k.port, k.vlan, k.proto));
		if (ret >= 0)
			return ret;
	}
	return -ENOENT;
}
