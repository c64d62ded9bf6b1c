/* maps.c - HASH, ARRAY, DEVMAP, XSKMAP and RINGBUF maps in userspace,
 * with the kernel's flag semantics and return codes (kernel/bpf/hashtab.c,
 * arraymap.c, devmap.c, xskmap.c, ringbuf.c). See maps.h for the layout. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "maps.h"

#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_EXIST 2

static uint32_t round_pow2(uint32_t v)
{
	uint32_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

static uint32_t hash_key(const uint8_t *key, uint32_t len)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ len, w;

	for (; len >= 8; key += 8, len -= 8) {
		memcpy(&w, key, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	if (len) {
		w = 0;
		memcpy(&w, key, len);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
	}
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 29;
	return (uint32_t)h;
}

static int check_def(const struct dp_map_def *d)
{
	switch (d->type) {
	case DP_MAP_HASH:
		if (!d->key_size || d->key_size > DP_BPF_STACK || !d->value_size || !d->max_entries)
			return -EINVAL;
		break;
	case DP_MAP_ARRAY:
		if (d->key_size != 4 || !d->value_size || !d->max_entries)
			return -EINVAL;
		break;
	case DP_MAP_DEVMAP:
		if (d->key_size != 4 || (d->value_size != 4 && d->value_size != 8) || !d->max_entries)
			return -EINVAL;
		break;
	case DP_MAP_XSKMAP:
		if (d->key_size != 4 || d->value_size != 4 || !d->max_entries)
			return -EINVAL;
		break;
	case DP_MAP_RINGBUF:
		if (d->key_size || d->value_size || d->max_entries < 16 ||
		    (d->max_entries & (d->max_entries - 1)) || d->max_entries > (1u << 30))
			return -EINVAL;
		return 0;
	default:
		return -EINVAL;
	}
	/* the value area must stay below 4 GiB (map_value_ok's fastmod) */
	if (d->value_size > (1u << 20) ||
	    (uint64_t)d->max_entries * ((d->value_size + 7) & ~7u) >= (1ull << 32))
		return -E2BIG;
	return 0;
}

int dp_map_create(const struct dp_map_def *def, dp_map_t **out)
{
	struct dp_map *m;
	int ret = check_def(def);

	if (ret)
		return ret;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->type = def->type;
	m->key_size = def->key_size;
	m->value_size = def->value_size;
	m->max_entries = def->max_entries;
	m->rdonly_prog = def->type == DP_MAP_DEVMAP || def->type == DP_MAP_XSKMAP;

	if (def->type == DP_MAP_RINGBUF) {
		m->ring = calloc(1, def->max_entries);
		if (!m->ring)
			goto out_map;
		m->ring_mask = def->max_entries - 1;
		*out = m;
		return 0;
	}

	m->stride = (def->value_size + 7) & ~7u;
	m->stride_magic = UINT64_MAX / m->stride + 1;
	m->values_len = (uint64_t)m->stride * def->max_entries;
	m->values = calloc(1, m->values_len);
	if (!m->values)
		goto out_map;

	if (def->type == DP_MAP_DEVMAP || def->type == DP_MAP_XSKMAP) {
		m->present = calloc(def->max_entries, 1);
		if (!m->present)
			goto out_values;
	} else if (def->type == DP_MAP_HASH) {
		m->n_buckets = round_pow2(def->max_entries);
		m->keys = calloc(def->max_entries, def->key_size);
		m->elems = calloc(def->max_entries, sizeof(*m->elems));
		m->buckets = malloc(sizeof(*m->buckets) * m->n_buckets);
		if (!m->keys || !m->elems || !m->buckets)
			goto out_hash;
		for (uint32_t i = 0; i < m->n_buckets; i++)
			m->buckets[i] = MAP_NIL;
		for (uint32_t i = 0; i < def->max_entries; i++)
			m->elems[i].next = i + 1 < def->max_entries ? i + 1 : MAP_NIL;
		m->free_head = 0;
	}
	*out = m;
	return 0;

out_hash:
	free(m->keys);
	free(m->elems);
	free(m->buckets);
out_values:
	free(m->values);
out_map:
	free(m);
	return -ENOMEM;
}

void dp_map_free(dp_map_t *m)
{
	if (!m)
		return;
	free(m->values);
	free(m->keys);
	free(m->elems);
	free(m->buckets);
	free(m->present);
	free(m->ring);
	free(m);
}

/* ------------------------------------------------------------ HASH */

static always_inline uint8_t *hash_key_at(const struct dp_map *m, uint32_t i)
{
	return m->keys + (uint64_t)i * m->key_size;
}

static uint32_t hash_find(const struct dp_map *m, const void *key, uint32_t h)
{
	uint32_t i = m->buckets[h & (m->n_buckets - 1)];

	for (; i != MAP_NIL; i = m->elems[i].next)
		if (m->elems[i].hash == h && !memcmp(hash_key_at(m, i), key, m->key_size))
			return i;
	return MAP_NIL;
}

static int hash_update(struct dp_map *m, const void *key, const void *value, uint64_t flags)
{
	uint32_t h = hash_key(key, m->key_size), i = hash_find(m, key, h), *head;

	if (i != MAP_NIL) {
		if (flags == BPF_NOEXIST)
			return -EEXIST;
		memmove(m->values + (uint64_t)i * m->stride, value, m->value_size);
		return 0;
	}
	if (flags == BPF_EXIST)
		return -ENOENT;
	i = m->free_head;
	if (i == MAP_NIL)
		return -E2BIG;
	m->free_head = m->elems[i].next;
	memcpy(hash_key_at(m, i), key, m->key_size);
	memmove(m->values + (uint64_t)i * m->stride, value, m->value_size);
	m->elems[i].hash = h;
	m->elems[i].used = 1;
	head = &m->buckets[h & (m->n_buckets - 1)];
	m->elems[i].next = *head;
	/* publish after the element is complete */
	__atomic_store_n(head, i, __ATOMIC_RELEASE);
	m->count++;
	return 0;
}

static int hash_delete(struct dp_map *m, const void *key)
{
	uint32_t h = hash_key(key, m->key_size);
	uint32_t *link = &m->buckets[h & (m->n_buckets - 1)];

	for (uint32_t i = *link; i != MAP_NIL; link = &m->elems[i].next, i = *link) {
		if (m->elems[i].hash != h || memcmp(hash_key_at(m, i), key, m->key_size))
			continue;
		*link = m->elems[i].next;
		m->elems[i].used = 0;
		m->elems[i].next = m->free_head;
		m->free_head = i;
		m->count--;
		return 0;
	}
	return -ENOENT;
}

/* bucket order, then chain order; an unknown key restarts at the first */
static int hash_next_key(const struct dp_map *m, const void *key, void *next)
{
	uint32_t b = 0, i = MAP_NIL;

	if (key) {
		uint32_t h = hash_key(key, m->key_size);

		i = hash_find(m, key, h);
		if (i != MAP_NIL) {
			b = (h & (m->n_buckets - 1)) + 1;
			i = m->elems[i].next;
		}
	}
	for (; i == MAP_NIL && b < m->n_buckets; b++)
		i = m->buckets[b];
	if (i == MAP_NIL)
		return -ENOENT;
	memcpy(next, hash_key_at(m, i), m->key_size);
	return 0;
}

/* ------------------------------------------------------------ common */

void *map_lookup(struct dp_map *m, const void *key)
{
	uint32_t idx;

	switch (m->type) {
	case DP_MAP_HASH: {
		uint32_t i = hash_find(m, key, hash_key(key, m->key_size));

		return i == MAP_NIL ? NULL : m->values + (uint64_t)i * m->stride;
	}
	case DP_MAP_ARRAY:
		memcpy(&idx, key, 4);
		return idx < m->max_entries ? m->values + (uint64_t)idx * m->stride : NULL;
	case DP_MAP_DEVMAP:
	case DP_MAP_XSKMAP:
		memcpy(&idx, key, 4);
		if (idx >= m->max_entries || !__atomic_load_n(&m->present[idx], __ATOMIC_ACQUIRE))
			return NULL;
		return m->values + (uint64_t)idx * m->stride;
	}
	return NULL;
}

int map_update(struct dp_map *m, const void *key, const void *value, uint64_t flags)
{
	uint32_t idx;

	if (flags > BPF_EXIST)
		return -EINVAL;
	switch (m->type) {
	case DP_MAP_HASH:
		return hash_update(m, key, value, flags);
	case DP_MAP_ARRAY:
	case DP_MAP_DEVMAP:
	case DP_MAP_XSKMAP:
		memcpy(&idx, key, 4);
		if (idx >= m->max_entries)
			return -E2BIG;
		/* array slots always exist; devmap/xskmap refuse NOEXIST too */
		if (flags == BPF_NOEXIST)
			return -EEXIST;
		memmove(m->values + (uint64_t)idx * m->stride, value, m->value_size);
		if (m->present)
			__atomic_store_n(&m->present[idx], 1, __ATOMIC_RELEASE);
		return 0;
	}
	return -EINVAL;
}

int map_delete(struct dp_map *m, const void *key)
{
	uint32_t idx;

	switch (m->type) {
	case DP_MAP_HASH:
		return hash_delete(m, key);
	case DP_MAP_DEVMAP:
	case DP_MAP_XSKMAP:
		memcpy(&idx, key, 4);
		if (idx >= m->max_entries)
			return -EINVAL;
		__atomic_store_n(&m->present[idx], 0, __ATOMIC_RELEASE);
		return 0;
	}
	return -EINVAL; /* ARRAY (and RINGBUF): the kernel says -EINVAL */
}

/* ------------------------------------------------------------ RINGBUF */

static void ring_copy_in(struct dp_map *m, uint64_t pos, const void *src, uint64_t n)
{
	uint64_t off = pos & m->ring_mask, first = MIN(n, m->ring_mask + 1 - off);

	memcpy(m->ring + off, src, first);
	memcpy(m->ring, (const uint8_t *)src + first, n - first);
}

static void ring_copy_out(const struct dp_map *m, uint64_t pos, void *dst, uint64_t n)
{
	uint64_t off = pos & m->ring_mask, first = MIN(n, m->ring_mask + 1 - off);

	memcpy(dst, m->ring + off, first);
	memcpy((uint8_t *)dst + first, m->ring, n - first);
}

/* bpf_ringbuf_output: a record is its 8-byte header and the data padded to
 * 8; like the kernel, the ring is full once a record would bring the used
 * bytes above size - 1. A zero-length output succeeds and writes nothing. */
int map_ringbuf_output(struct dp_map *m, const void *data, uint64_t size)
{
	uint64_t len, prod, cons;
	uint32_t hdr[2];

	if (m->type != DP_MAP_RINGBUF)
		return -EINVAL;
	if (!size)
		return 0;
	len = (size + RINGBUF_HDR + 7) & ~7ull;
	prod = m->prod_pos;
	cons = __atomic_load_n(&m->cons_pos, __ATOMIC_ACQUIRE);
	if (size > m->ring_mask || prod + len - cons > m->ring_mask)
		return -EAGAIN;
	hdr[0] = (uint32_t)size;
	hdr[1] = 0;
	ring_copy_in(m, prod, hdr, RINGBUF_HDR);
	ring_copy_in(m, prod + RINGBUF_HDR, data, size);
	__atomic_store_n(&m->prod_pos, prod + len, __ATOMIC_RELEASE);
	return 0;
}

int dp_ringbuf_read(dp_map_t *m, void *buf, uint32_t cap)
{
	uint64_t cons, prod;
	uint32_t hdr[2];

	if (m->type != DP_MAP_RINGBUF)
		return -EINVAL;
	cons = m->cons_pos;
	prod = __atomic_load_n(&m->prod_pos, __ATOMIC_ACQUIRE);
	if (cons == prod)
		return 0;
	ring_copy_out(m, cons, hdr, RINGBUF_HDR);
	if (hdr[0] > cap)
		return -ENOSPC;
	ring_copy_out(m, cons + RINGBUF_HDR, buf, hdr[0]);
	__atomic_store_n(&m->cons_pos, cons + ((hdr[0] + RINGBUF_HDR + 7) & ~7ull), __ATOMIC_RELEASE);
	return (int)hdr[0];
}

/* ------------------------------------------------------------ public */

int dp_map_lookup(dp_map_t *m, const void *key, void *value_out)
{
	void *v;

	if (m->type == DP_MAP_RINGBUF)
		return -EINVAL;
	v = map_lookup(m, key);
	if (!v)
		return -ENOENT;
	memcpy(value_out, v, m->value_size);
	return 0;
}

int dp_map_update(dp_map_t *m, const void *key, const void *value, uint64_t flags)
{
	return map_update(m, key, value, flags);
}

int dp_map_delete(dp_map_t *m, const void *key)
{
	return map_delete(m, key);
}

int dp_map_next_key(dp_map_t *m, const void *key, void *next_out)
{
	uint32_t idx, next;

	switch (m->type) {
	case DP_MAP_HASH:
		return hash_next_key(m, key, next_out);
	case DP_MAP_ARRAY:
	case DP_MAP_DEVMAP:
	case DP_MAP_XSKMAP:
		/* every index, present or not, as the kernel iterates them */
		if (key)
			memcpy(&idx, key, 4);
		if (!key || idx >= m->max_entries)
			next = 0;
		else if (idx == m->max_entries - 1)
			return -ENOENT;
		else
			next = idx + 1;
		memcpy(next_out, &next, 4);
		return 0;
	}
	return -EINVAL;
}
