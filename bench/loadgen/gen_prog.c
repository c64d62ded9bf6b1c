/* gen_prog.c - load, attach and detach the generator's redirect program. */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/if_link.h>

#include "gen_prog.h"
#include "xsk_port.h"

#define PROG_NAME "lg_redirect"
#define XDP_MD_RX_QUEUE_INDEX 16 /* offsetof(struct xdp_md, rx_queue_index) */

/* r2 = ctx->rx_queue_index; r1 = &xsks; r3 = XDP_PASS;
 * return bpf_redirect_map(&xsks, r2, XDP_PASS) */
static int load(int map_fd, char *err, size_t errlen)
{
	struct bpf_insn insns[] = {
		{.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_1,
		 .off = XDP_MD_RX_QUEUE_INDEX},
		{.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1,
		 .src_reg = BPF_PSEUDO_MAP_FD, .imm = map_fd},
		{0},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_3, .imm = XDP_PASS},
		{.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_redirect_map},
		{.code = BPF_JMP | BPF_EXIT},
	};
	char log[1024] = "";
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .log_buf = log, .log_size = sizeof(log),
		    .log_level = 0);
	int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, PROG_NAME, "GPL", insns, ARRAY_SIZE(insns),
			       &opts);

	if (fd < 0)
		return errf(err, errlen, -errno, "loading the generator's XDP program: %s %s",
			    strerror(errno), log);
	return fd;
}

/* a program of ours left by a crashed generator goes; anyone else's stays */
static int clear_slot(struct gen_prog *g, const char *ifname, char *err, size_t errlen)
{
	struct bpf_prog_info info = {0};
	uint32_t id = 0, len = sizeof(info);
	int fd, ret;

	if (bpf_xdp_query_id(g->ifindex, g->flags, &id) || !id)
		return 0;
	fd = bpf_prog_get_fd_by_id(id);
	if (fd < 0)
		return 0; /* gone meanwhile */
	ret = bpf_obj_get_info_by_fd(fd, &info, &len);
	if (ret || strcmp(info.name, PROG_NAME)) {
		close(fd);
		return errf(err, errlen, -EBUSY, "%s already runs XDP program %u (%s), not the "
			    "generator's: detach it (`ip link set %s xdp off`) or use another "
			    "interface", ifname, id, ret ? "?" : info.name, ifname);
	}
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = fd);
	ret = bpf_xdp_detach(g->ifindex, g->flags, &opts);
	close(fd);
	return ret ? errf(err, errlen, ret, "removing a leftover %s from %s: %s", PROG_NAME, ifname,
			  strerror(-ret)) : 0;
}

int gen_prog_attach(struct gen_prog *g, const char *ifname, uint32_t queue, int xsk_fd,
		    uint32_t xdp_flags, char *err, size_t errlen)
{
	int ret;

	memset(g, 0, sizeof(*g));
	g->map_fd = g->prog_fd = -1;
	g->flags = xdp_flags;
	g->ifindex = (int)if_nametoindex(ifname);
	if (!g->ifindex)
		return errf(err, errlen, -ENODEV, "no interface %s here", ifname);
	g->map_fd = bpf_map_create(BPF_MAP_TYPE_XSKMAP, "lg_xsks", 4, 4, queue + 1, NULL);
	if (g->map_fd < 0) {
		ret = errf(err, errlen, -errno, "creating the XSKMAP: %s", strerror(errno));
		goto out;
	}
	if ((ret = bpf_map_update_elem(g->map_fd, &queue, &xsk_fd, 0))) {
		ret = errf(err, errlen, -errno, "putting the socket in the XSKMAP: %s",
			   strerror(errno));
		goto out;
	}
	if ((g->prog_fd = load(g->map_fd, err, errlen)) < 0) {
		ret = g->prog_fd;
		goto out;
	}
	if ((ret = clear_slot(g, ifname, err, errlen)))
		goto out;
	ret = bpf_xdp_attach(g->ifindex, g->prog_fd, g->flags | XDP_FLAGS_UPDATE_IF_NOEXIST, NULL);
	if (ret) {
		ret = errf(err, errlen, ret, "attaching the generator's XDP program to %s: %s",
			   ifname, strerror(-ret));
		goto out;
	}
	g->attached = 1;
	return 0;
out:
	gen_prog_detach(g);
	return ret;
}

void gen_prog_detach(struct gen_prog *g)
{
	if (g->attached) {
		/* only while the interface still runs the very program we attached */
		LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = g->prog_fd);

		bpf_xdp_detach(g->ifindex, g->flags, &opts);
		g->attached = 0;
	}
	if (g->prog_fd >= 0)
		close(g->prog_fd);
	if (g->map_fd >= 0)
		close(g->map_fd);
	g->prog_fd = g->map_fd = -1;
}
