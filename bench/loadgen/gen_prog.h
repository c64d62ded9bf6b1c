/* gen_prog.h - the generator's own XDP program on its interface: every
 * frame received on the generator's queue goes to its AF_XDP socket, so
 * replies never climb the generator's network stack.
 *
 * Six instructions loaded with libbpf (no libxdp dispatcher: libxdp 1.3's
 * default program cannot always be detached again here, and a leftover
 * blocks the next run). Named `lg_redirect`; at attach, a program of that
 * name left on the interface by a generator that crashed is removed; any
 * other program is someone else's and is left alone (an error). */
#ifndef ISOLANE_GEN_PROG_H
#define ISOLANE_GEN_PROG_H

#include <stddef.h>
#include <stdint.h>

struct gen_prog {
	int ifindex;
	uint32_t flags;   /* XDP_FLAGS_SKB_MODE or XDP_FLAGS_DRV_MODE */
	int map_fd;
	int prog_fd;
	int attached;
};

int gen_prog_attach(struct gen_prog *g, const char *ifname, uint32_t queue, int xsk_fd,
		    uint32_t xdp_flags, char *err, size_t errlen);
void gen_prog_detach(struct gen_prog *g);

#endif
