/* kv - a key-value store over UDP port 11211 (memcached's port), on a
 * BPF_HASH map, answered entirely in the fast path.
 *
 * Wire format (isolane kv v1, defined here; all fields fixed size):
 *
 *   offset  size  field
 *   0       1     magic   'K' (0x4b)
 *   1       1     op      'G' get, 'S' set, 'D' delete
 *   2       1     status  0 in requests; in replies KV_OK, KV_NOT_FOUND, KV_BAD
 *   3       1     vlen    value bytes in use (0..32), stored with the value
 *   4       16    key     zero padded
 *   20      32    value   SET requests and GET replies that found the key
 *
 * Requests: GET and DELETE are 20 bytes, SET 52. Replies: 52 bytes for a
 * GET that found its key, 20 bytes otherwise (the reply's length differs
 * from the request's, so the handler moves the tail with
 * bpf_xdp_adjust_tail). The reply goes back with XDP_TX: MACs, IPs, ports
 * swapped, IPv4 length and checksum recomputed, UDP checksum 0 (RFC 768:
 * "no checksum").
 *
 * The map is a cache: a GET whose key is not there goes to the tenant's
 * slow path (XDP_PASS, the request unchanged), where the tenant's
 * application (app.py) answers it from its own store.
 *
 * Other UDP ports, non-UDP, fragments and IPv4 options: XDP_PASS (slow
 * path). A payload shorter than 20 bytes or a bad magic: XDP_DROP. */
#include <isolane.h>

#define KV_PORT 11211
#define KV_MAGIC 'K'
#define KV_KEY_LEN 16
#define KV_VAL_LEN 32
#define KV_HDR_LEN 20			/* magic, op, status, vlen, key */
#define KV_FULL_LEN (KV_HDR_LEN + KV_VAL_LEN)
#define KV_L4_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr))

enum { KV_OK = 0, KV_NOT_FOUND = 1, KV_BAD = 2 };

struct kv_key {
	unsigned char b[KV_KEY_LEN];
};

struct kv_val {
	unsigned char b[KV_VAL_LEN];
	__u32 len;
};

struct kv_msg {
	__u8 magic;
	__u8 op;
	__u8 status;
	__u8 vlen;
	unsigned char key[KV_KEY_LEN];
	unsigned char value[KV_VAL_LEN];
};

BPF_HASH(kv_store, struct kv_key, struct kv_val, 1024);

int kv(struct xdp_md *ctx)
{
	void *data = isolane_data(ctx);
	void *data_end = isolane_data_end(ctx);
	struct isolane_udp p;
	struct kv_msg *m;
	struct kv_key key = {};
	struct kv_val val = {};
	struct kv_val *found = NULL;
	__u8 op, status = KV_OK;
	__u32 reply_len = KV_HDR_LEN;
	int ret, delta;

	ret = isolane_parse_udp(data, data_end, &p);
	if (ret == ISOLANE_MALFORMED)
		return XDP_DROP;
	if (ret != ISOLANE_UDP || p.udp->dest != bpf_htons(KV_PORT) || p.ip->ihl != 5)
		return XDP_PASS;
	m = (struct kv_msg *)p.payload;
	if ((void *)m + KV_HDR_LEN > data_end || p.payload_len < KV_HDR_LEN || m->magic != KV_MAGIC)
		return XDP_DROP;

	/* the request: copy what the map needs out of the packet */
	op = m->op;
	__builtin_memcpy(key.b, m->key, KV_KEY_LEN);
	if (op == 'G') {
		found = kv_store.lookup(&key);
		if (!found)
			return XDP_PASS; /* a cache miss: the application answers it */
		reply_len = KV_FULL_LEN;
	} else if (op == 'S') {
		if ((void *)m + KV_FULL_LEN > data_end || p.payload_len < KV_FULL_LEN ||
		    m->vlen > KV_VAL_LEN) {
			status = KV_BAD;
		} else {
			__builtin_memcpy(val.b, m->value, KV_VAL_LEN);
			val.len = m->vlen;
			kv_store.update(&key, &val);
		}
	} else if (op == 'D') {
		if (kv_store.delete(&key) != 0)
			status = KV_NOT_FOUND;
	} else {
		status = KV_BAD;
	}

	/* the reply: resize, then write every field again */
	delta = (int)(KV_L4_OFF + sizeof(struct udphdr) + reply_len) - (int)(data_end - data);
	if (delta != 0 && bpf_xdp_adjust_tail(ctx, delta) != 0)
		return XDP_DROP;
	data = isolane_data(ctx);
	data_end = isolane_data_end(ctx);
	p.eth = data;
	p.ip = data + sizeof(struct ethhdr);
	p.udp = data + KV_L4_OFF;
	m = data + KV_L4_OFF + sizeof(struct udphdr);
	if ((void *)m + KV_HDR_LEN > data_end)
		return XDP_DROP;

	m->status = status;
	if (found) {
		if ((void *)m + KV_FULL_LEN > data_end)
			return XDP_DROP;
		__builtin_memcpy(m->value, found->b, KV_VAL_LEN);
		m->vlen = found->len;
	} else {
		m->vlen = 0;
	}
	p.ip->tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct udphdr) + reply_len);
	p.ip->check = isolane_ipv4_csum20(p.ip);
	p.udp->len = bpf_htons(sizeof(struct udphdr) + reply_len);
	p.udp->check = 0;
	isolane_reply_udp(&p);
	return XDP_TX;
}
