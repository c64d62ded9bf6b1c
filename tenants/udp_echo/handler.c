/* udp_echo - the victim: RFC 862 (Echo Protocol) over UDP, any port.
 * A UDP datagram comes back to its sender unchanged but for swapped MAC,
 * IPv4 addresses and ports (checksums stay valid: both sums are symmetric).
 * Not UDP/IPv4 (ARP, IPv6, other protocols, fragments): XDP_PASS to the
 * slow path. Truncated or inconsistent headers: XDP_DROP. */
#include <isolane.h>

int udp_echo(struct xdp_md *ctx)
{
	void *data = isolane_data(ctx);
	void *data_end = isolane_data_end(ctx);
	struct isolane_udp p;

	switch (isolane_parse_udp(data, data_end, &p)) {
	case ISOLANE_UDP:
		isolane_reply_udp(&p);
		return XDP_TX;
	case ISOLANE_MALFORMED:
		return XDP_DROP;
	default:
		return XDP_PASS;
	}
}
