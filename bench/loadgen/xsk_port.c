/* xsk_port.c - AF_XDP socket + UMEM set-up and tear-down, thread set-up. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/if_link.h>
#include <linux/if_xdp.h>

#include "xsk_port.h"

#define EBUSY_TRIES 50       /* x EBUSY_WAIT_US: how long a busy queue is retried */
#define EBUSY_WAIT_US 10000

int errf(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return ret;
}

int thread_enter(const char *netns, int core, char *err, size_t errlen)
{
	if (netns && netns[0]) {
		int fd = open(netns, O_RDONLY | O_CLOEXEC);

		if (fd < 0)
			return errf(err, errlen, -errno, "cannot open network namespace %s: %s "
				    "(is the testbed up? `isolane testbed up`)", netns, strerror(errno));
		/* a thread may switch its own network namespace: the rest of
		 * the process stays where it is */
		if (setns(fd, CLONE_NEWNET)) {
			int e = errno;

			close(fd);
			return errf(err, errlen, -e, "setns(%s): %s (needs CAP_SYS_ADMIN: run as "
				    "root)", netns, strerror(e));
		}
		close(fd);
	}
	if (core >= 0) {
		cpu_set_t set;
		int e;

		CPU_ZERO(&set);
		CPU_SET(core, &set);
		e = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
		if (e)
			return errf(err, errlen, -e, "cannot pin to core %d: %s", core, strerror(e));
	}
	return 0;
}

static int socket_error(int ret, const char *ifname, uint32_t queue, char *err, size_t errlen)
{
	switch (-ret) {
	case EBUSY:
		return errf(err, errlen, ret, "queue %u of %s already has an AF_XDP socket (or an "
			    "XDP program of someone else's): stop it, or use another queue", queue,
			    ifname);
	case ENOBUFS:
	case ENOMEM:
		return errf(err, errlen, ret, "cannot register the UMEM (%s): raise the locked-"
			    "memory limit (ulimit -l unlimited) or use fewer frames", strerror(-ret));
	case EPERM:
		return errf(err, errlen, ret, "AF_XDP needs CAP_NET_RAW/CAP_NET_ADMIN and "
			    "CAP_IPC_LOCK: run as root");
	case EINVAL:
		return errf(err, errlen, ret, "the kernel refused the AF_XDP socket on %s queue %u "
			    "(does the queue exist?)", ifname, queue);
	default:
		return errf(err, errlen, ret, "creating the AF_XDP socket on %s queue %u: %s", ifname,
			    queue, strerror(-ret));
	}
}

int xsk_port_open(struct xsk_port *p, const char *ifname, uint32_t queue, uint32_t n_frames,
		  uint32_t ring_size, char *err, size_t errlen)
{
	struct xsk_umem_config ucfg = {
		.fill_size = ring_size,
		.comp_size = ring_size,
		.frame_size = PORT_FRAME_SIZE,
		.frame_headroom = 0,
	};
	struct xsk_socket_config scfg = {
		.rx_size = ring_size,
		.tx_size = ring_size,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.bind_flags = XDP_COPY | XDP_USE_NEED_WAKEUP,
	};
	const struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
	int ret;

	memset(p, 0, sizeof(*p));
	p->fd = -1;
	if (!n_frames || (n_frames & (n_frames - 1)) || !ring_size || (ring_size & (ring_size - 1)) ||
	    ring_size < 8 || n_frames < 2 * ring_size)
		return errf(err, errlen, -EINVAL, "n_frames (%u) and ring_size (%u) must be powers "
			    "of two, ring_size >= 8 and n_frames >= 2 * ring_size", n_frames, ring_size);
	if (!ifname || !if_nametoindex(ifname))
		return errf(err, errlen, -ENODEV, "no interface %s in this thread's network "
			    "namespace", ifname ? ifname : "(null)");
	setrlimit(RLIMIT_MEMLOCK, &unlimited); /* old kernels count UMEM pages there */
	p->n_frames = n_frames;
	p->ring_size = ring_size;
	p->size = (size_t)n_frames * PORT_FRAME_SIZE;
	p->area = mmap(NULL, p->size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p->area == MAP_FAILED) {
		p->area = NULL;
		return errf(err, errlen, -ENOMEM, "cannot map %zu bytes of UMEM", p->size);
	}
	p->pool = calloc(n_frames, sizeof(*p->pool));
	if (!p->pool) {
		ret = errf(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	/* a socket closed just before (the previous round) leaves its queue
	 * busy until the kernel's deferred release has run: retry EBUSY */
	for (int tries = 0;; tries++) {
		ret = xsk_umem__create(&p->umem, p->area, p->size, &p->fill, &p->comp, &ucfg);
		if (ret) {
			p->umem = NULL;
			socket_error(ret, ifname, queue, err, errlen);
			goto out;
		}
		ret = xsk_socket__create(&p->xsk, ifname, queue, p->umem, &p->rx, &p->tx, &scfg);
		if (!ret)
			break;
		p->xsk = NULL;
		xsk_umem__delete(p->umem);
		p->umem = NULL;
		if (ret != -EBUSY || tries == EBUSY_TRIES) {
			socket_error(ret, ifname, queue, err, errlen);
			goto out;
		}
		usleep(EBUSY_WAIT_US);
	}
	p->fd = xsk_socket__fd(p->xsk);
	for (uint32_t i = 0; i < n_frames; i++)
		p->pool[p->n_pool++] = (uint64_t)(n_frames - 1 - i) * PORT_FRAME_SIZE;
	return 0;
out:
	xsk_port_close(p);
	return ret;
}

void xsk_port_close(struct xsk_port *p)
{
	if (p->xsk)
		xsk_socket__delete(p->xsk);
	if (p->umem)
		xsk_umem__delete(p->umem);
	if (p->area)
		munmap(p->area, p->size);
	free(p->pool);
	memset(p, 0, sizeof(*p));
	p->fd = -1;
}

void xsk_port_kernel_stats(struct xsk_port *p, uint64_t *rx_dropped, uint64_t *rx_ring_full,
			   uint64_t *fill_empty)
{
	struct xdp_statistics st = {0};
	socklen_t len = sizeof(st);

	if (p->fd >= 0)
		getsockopt(p->fd, SOL_XDP, XDP_STATISTICS, &st, &len);
	*rx_dropped = st.rx_dropped;
	*rx_ring_full = st.rx_ring_full;
	*fill_empty = st.rx_fill_ring_empty_descs;
}
