/* netdev_info.h - what the kernel says about a network interface, for the
 * afxdp backend's choice of mode and its error messages.
 *
 * Every call works in the network namespace the socket or the calling
 * thread was in when it was made: call them from inside the interface's
 * namespace (a NETLINK_ROUTE socket kept from there answers later from
 * any thread). */
#ifndef ISOLANE_NETDEV_INFO_H
#define ISOLANE_NETDEV_INFO_H

#include <stddef.h>
#include <stdint.h>

/* include/uapi/linux/netdev.h (Debian 12's headers predate it) */
#define NETDEV_XDP_ACT_BASIC 1u        /* XDP_DROP, PASS, TX, ABORTED */
#define NETDEV_XDP_ACT_REDIRECT 2u     /* XDP_REDIRECT: what AF_XDP needs */
#define NETDEV_XDP_ACT_XSK_ZEROCOPY 8u /* AF_XDP zero-copy */

/* the driver's XDP features (NETDEV_XDP_ACT_*) through the netdev generic
 * netlink family (Linux >= 6.3): 0, or -errno (-ENOENT: no such family) */
int netdev_xdp_features(int ifindex, uint64_t *features);

/* the driver's name ("veth", "virtio_net", ...; ETHTOOL_GDRVINFO) into
 * buf, or "?" when the driver does not say */
void netdev_driver(const char *ifname, char *buf, size_t len);

/* receive queues a socket can bind to (ETHTOOL_GCHANNELS: rx + combined),
 * or -errno (-EOPNOTSUPP: the driver does not say) */
int netdev_rx_queues(const char *ifname);

/* a NETLINK_ROUTE socket for netdev_xdp_attached (in this namespace) */
int netdev_rtnl_open(void);
/* the mode of the XDP program attached to ifindex as IFLA_XDP_ATTACHED
 * says (XDP_ATTACHED_NONE, _DRV, _SKB, _HW, _MULTI), or -errno */
int netdev_xdp_attached(int rtnl_fd, int ifindex);

#endif
