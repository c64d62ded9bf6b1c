/* slowpath.c - a tenant's slow-path rings: creation and the side outside
 * the loop. The loop's side is slowpath_deliver (slowpath.h) and
 * slowpath_stage (loop.c); attaching and detaching go through dp.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "slowpath.h"

_Static_assert(DP_SLOWPATH_FRAME_MAX == FRAME_SIZE - PKT_META_SIZE,
	       "a passed packet may reach from the headroom floor to the frame end");

struct slowpath *slowpath_new(uint32_t depth, int *err)
{
	struct slowpath *sp;
	size_t size = (sizeof(*sp) + 63) & ~(size_t)63;

	*err = -EINVAL;
	if (depth < 2 || depth > DP_SLOWPATH_MAX_DEPTH || (depth & (depth - 1)))
		return NULL;
	*err = -ENOMEM;
	sp = aligned_alloc(64, size); /* the rings' indexes sit on cache lines of their own */
	if (!sp)
		return NULL;
	memset(sp, 0, sizeof(*sp));
	sp->depth = depth;
	sp->slots = calloc(2 * (size_t)depth, sizeof(*sp->slots));
	if (!sp->slots || spsc_init(&sp->rx, depth) || spsc_init(&sp->rx_free, depth) ||
	    spsc_init(&sp->tx, depth) || spsc_init(&sp->tx_free, depth)) {
		slowpath_free(sp);
		return NULL;
	}
	/* every slot starts empty, on its direction's free ring */
	for (uint32_t i = 0; i < depth; i++) {
		void *rx = &sp->slots[i], *tx = &sp->slots[depth + i];

		spsc_push(&sp->rx_free, &rx, 1);
		spsc_push(&sp->tx_free, &tx, 1);
	}
	*err = 0;
	return sp;
}

void slowpath_free(struct slowpath *sp)
{
	if (!sp)
		return;
	spsc_fini(&sp->rx);
	spsc_fini(&sp->rx_free);
	spsc_fini(&sp->tx);
	spsc_fini(&sp->tx_free);
	free(sp->slots);
	free(sp);
}

int slowpath_read(struct slowpath *sp, uint8_t *buf, uint32_t cap)
{
	struct sp_slot *s;
	uint32_t len;

	if (cap < DP_SLOWPATH_FRAME_MAX)
		return -EINVAL;
	if (!spsc_pop(&sp->rx, (void **)&s, 1))
		return 0;
	len = s->len;
	memcpy(buf, s->data, len);
	spsc_push(&sp->rx_free, (void *const *)&s, 1);
	return (int)len;
}

int slowpath_send(struct slowpath *sp, const uint8_t *frame, uint32_t len)
{
	struct sp_slot *s;

	if (len < 14 || len > DP_MAX_FRAME_LEN)
		return -EMSGSIZE;
	if (!spsc_pop(&sp->tx_free, (void **)&s, 1))
		return -EAGAIN;
	s->len = len;
	memcpy(s->data, frame, len);
	spsc_push(&sp->tx, (void *const *)&s, 1);
	return 0;
}
