/* netdev_info.c - a network interface's XDP features, driver, queues and
 * attached XDP mode, asked of the kernel (netlink and ethtool ioctls).
 * Nothing here runs in the fast path. */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/ethtool.h>
#include <linux/genetlink.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>

#include "netdev_info.h"

#define NETDEV_FAMILY "netdev"
#define NETDEV_CMD_DEV_GET 1
#define NETDEV_A_DEV_IFINDEX 1
#define NETDEV_A_DEV_XDP_FEATURES 3

struct nl_msg {
	struct nlmsghdr nh;
	union {
		struct genlmsghdr gh;
		struct ifinfomsg ifi;
	};
	char attrs[64];
};

static void put_attr(struct nl_msg *m, uint16_t type, const void *data, uint16_t len)
{
	struct nlattr *a = (struct nlattr *)((char *)m + NLMSG_ALIGN(m->nh.nlmsg_len));

	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	memcpy((char *)a + NLA_HDRLEN, data, len);
	m->nh.nlmsg_len = NLMSG_ALIGN(m->nh.nlmsg_len) + NLA_ALIGN(a->nla_len);
}

/* the payload of attribute `type` among [attrs, attrs + len), or NULL */
static const struct nlattr *find_attr(const void *attrs, int len, uint16_t type)
{
	const struct nlattr *a = attrs;

	while (len >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= len) {
		if ((a->nla_type & NLA_TYPE_MASK) == type)
			return a;
		len -= NLA_ALIGN(a->nla_len);
		a = (const struct nlattr *)((const char *)a + NLA_ALIGN(a->nla_len));
	}
	return NULL;
}

/* sends m, receives its one answer into buf: the answer's length or -errno */
static int roundtrip(int fd, struct nl_msg *m, char *buf, size_t cap)
{
	static __thread uint32_t seq;
	struct nlmsghdr *nh = (struct nlmsghdr *)buf;
	ssize_t n;

	m->nh.nlmsg_flags = NLM_F_REQUEST;
	m->nh.nlmsg_seq = ++seq;
	if (send(fd, m, m->nh.nlmsg_len, 0) < 0)
		return -errno;
	do { /* skip answers to earlier requests that timed out */
		n = recv(fd, buf, cap, 0);
		if (n < 0)
			return -errno;
		if ((size_t)n < sizeof(*nh) || !NLMSG_OK(nh, (size_t)n))
			return -EPROTO;
	} while (nh->nlmsg_seq != m->nh.nlmsg_seq);
	if (nh->nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(nh);

		return e->error ? e->error : -EPROTO;
	}
	return (int)nh->nlmsg_len;
}

static int nl_socket(int proto)
{
	struct timeval tv = {.tv_sec = 1};
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, proto);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static int genl_family(int fd, const char *name)
{
	struct nl_msg m = {.nh = {.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN), .nlmsg_type = GENL_ID_CTRL},
			   .gh = {.cmd = CTRL_CMD_GETFAMILY, .version = 1}};
	char buf[4096];
	const struct nlattr *id;
	int n;

	put_attr(&m, CTRL_ATTR_FAMILY_NAME, name, (uint16_t)strlen(name) + 1);
	n = roundtrip(fd, &m, buf, sizeof(buf));
	if (n < 0)
		return n;
	id = find_attr(buf + NLMSG_LENGTH(GENL_HDRLEN), n - NLMSG_LENGTH(GENL_HDRLEN),
		       CTRL_ATTR_FAMILY_ID);
	if (!id || id->nla_len < NLA_HDRLEN + 2)
		return -EPROTO;
	return *(const uint16_t *)((const char *)id + NLA_HDRLEN);
}

int netdev_xdp_features(int ifindex, uint64_t *features)
{
	struct nl_msg m = {.nh = {.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN)},
			   .gh = {.cmd = NETDEV_CMD_DEV_GET, .version = 1}};
	uint32_t idx = (uint32_t)ifindex;
	const struct nlattr *a;
	char buf[4096];
	int fd, family, n;

	fd = nl_socket(NETLINK_GENERIC);
	if (fd < 0)
		return fd;
	family = genl_family(fd, NETDEV_FAMILY);
	if (family < 0) {
		n = family;
		goto out;
	}
	m.nh.nlmsg_type = (uint16_t)family;
	put_attr(&m, NETDEV_A_DEV_IFINDEX, &idx, sizeof(idx));
	n = roundtrip(fd, &m, buf, sizeof(buf));
	if (n < 0)
		goto out;
	a = find_attr(buf + NLMSG_LENGTH(GENL_HDRLEN), n - NLMSG_LENGTH(GENL_HDRLEN),
		      NETDEV_A_DEV_XDP_FEATURES);
	if (!a || a->nla_len < NLA_HDRLEN + 8) {
		n = -EPROTO;
		goto out;
	}
	memcpy(features, (const char *)a + NLA_HDRLEN, 8);
	n = 0;
out:
	close(fd);
	return n;
}

static int ethtool(const char *ifname, void *cmd)
{
	struct ifreq ifr = {0};
	int fd, ret = 0;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	ifr.ifr_data = cmd;
	if (ioctl(fd, SIOCETHTOOL, &ifr) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

void netdev_driver(const char *ifname, char *buf, size_t len)
{
	struct ethtool_drvinfo info = {.cmd = ETHTOOL_GDRVINFO};

	if (ethtool(ifname, &info) || !info.driver[0])
		snprintf(buf, len, "?");
	else
		snprintf(buf, len, "%s", info.driver);
}

int netdev_rx_queues(const char *ifname)
{
	struct ethtool_channels ch = {.cmd = ETHTOOL_GCHANNELS};
	int err = ethtool(ifname, &ch);

	return err ? err : (int)(ch.rx_count + ch.combined_count);
}

int netdev_rtnl_open(void)
{
	return nl_socket(NETLINK_ROUTE);
}

int netdev_xdp_attached(int rtnl_fd, int ifindex)
{
	struct nl_msg m = {.nh = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)),
				  .nlmsg_type = RTM_GETLINK},
			   .ifi = {.ifi_family = AF_UNSPEC, .ifi_index = ifindex}};
	uint32_t mask = RTEXT_FILTER_SKIP_STATS;
	const struct nlattr *xdp, *mode;
	const int hdr = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	char buf[16384];
	int n;

	put_attr(&m, IFLA_EXT_MASK, &mask, sizeof(mask));
	n = roundtrip(rtnl_fd, &m, buf, sizeof(buf));
	if (n < 0)
		return n;
	xdp = find_attr(buf + hdr, n - hdr, IFLA_XDP);
	if (!xdp)
		return XDP_ATTACHED_NONE;
	mode = find_attr((const char *)xdp + NLA_HDRLEN, xdp->nla_len - NLA_HDRLEN,
			 IFLA_XDP_ATTACHED);
	return mode ? *((const uint8_t *)mode + NLA_HDRLEN) : XDP_ATTACHED_NONE;
}
