/* xsk_port.h - one AF_XDP socket with its UMEM and a stack of free frames,
 * shared by the generator and the bare echo; and the set-up every loop
 * thread does first (enter a network namespace, pin to a core).
 *
 * Frame ownership: each frame is in exactly one place - the pool (free),
 * the fill or RX ring, or the TX ring / in flight until its completion
 * comes back. Only the owning thread touches the rings and the pool. */
#ifndef ISOLANE_XSK_PORT_H
#define ISOLANE_XSK_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <net/if.h>
#include <sys/socket.h>

#include <xdp/xsk.h>

#include "compiler.h"

#define PORT_FRAME_SIZE XSK_UMEM__DEFAULT_FRAME_SIZE
#define PORT_FRAME_MASK ((uint64_t)PORT_FRAME_SIZE - 1)

struct xsk_port {
	uint8_t *area;
	size_t size;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	int fd;
	uint32_t n_frames, ring_size;
	struct xsk_ring_prod fill, tx;
	struct xsk_ring_cons comp, rx;
	uint64_t *pool; /* free frames (frame-start addresses) */
	uint32_t n_pool;
};

/* libxdp loads no program of its own: the caller's XDP program (isolane's
 * steering program, or the generator's gen_prog) redirects to the socket. */
int xsk_port_open(struct xsk_port *p, const char *ifname, uint32_t queue, uint32_t n_frames,
		  uint32_t ring_size, char *err, size_t errlen);
void xsk_port_close(struct xsk_port *p);
/* XDP_STATISTICS: rx_dropped, rx_ring_full, fill_ring_empty_descs */
void xsk_port_kernel_stats(struct xsk_port *p, uint64_t *rx_dropped, uint64_t *rx_ring_full,
			   uint64_t *fill_empty);

/* completions back to the pool */
static always_inline void xsk_port_reap(struct xsk_port *p)
{
	uint32_t idx, n = xsk_ring_cons__peek(&p->comp, p->ring_size, &idx);

	for (uint32_t i = 0; i < n; i++)
		p->pool[p->n_pool++] = *xsk_ring_cons__comp_addr(&p->comp, idx + i) & ~PORT_FRAME_MASK;
	if (n)
		xsk_ring_cons__release(&p->comp, n);
}

/* up to `max` pool frames into the fill ring */
static always_inline void xsk_port_refill(struct xsk_port *p, uint32_t max)
{
	uint32_t idx, n = MIN(p->n_pool, max), room;

	/* (the ring's free count is read once: MIN evaluates twice, and the
	 * kernel may consume in between) */
	room = xsk_prod_nb_free(&p->fill, n);
	n = MIN(n, room);
	if (!n || xsk_ring_prod__reserve(&p->fill, n, &idx) != n)
		return;
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&p->fill, idx + i) = p->pool[--p->n_pool];
	xsk_ring_prod__submit(&p->fill, n);
}

/* copy-mode TX moves frames only inside sendto() (up to 32 a call) */
static always_inline void xsk_port_kick(struct xsk_port *p)
{
	sendto(p->fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
}

/* Enter the network namespace at `netns` (NULL: stay) on this thread only,
 * and pin this thread to `core` (< 0: leave it). */
int thread_enter(const char *netns, int core, char *err, size_t errlen);

int errf(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
