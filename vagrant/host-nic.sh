#!/bin/sh
# Tunes the isolane host's experiment NIC (the one holding the private-network
# address) for native XDP and AF_XDP on several queues.
#
#   host-nic.sh install IP CHANNELS   install a systemd unit that applies the
#                                     settings at every boot, and apply now
#   host-nic.sh apply IP CHANNELS     apply now (what the unit runs)
#   host-nic.sh show IP               print channels, offloads and XDP state
#
# ethtool settings are lost at reboot, hence the unit. The interface is found
# by its address rather than assumed to be eth1.
set -eu

UNIT=/etc/systemd/system/isolane-nic.service
SELF=/vagrant/vagrant/host-nic.sh   # the synced copy, so edits + `vagrant rsync` apply

die() { echo "host-nic: $*" >&2; exit 1; }

# The interface that holds $1 (waits up to 30 s: at boot ifupdown may still be
# bringing it up).
iface_of() {
	for _ in $(seq 30); do
		ifname=$(ip -o -4 addr show | awk -v ip="$1" 'index($4, ip "/") == 1 { print $2; exit }')
		[ -n "$ifname" ] && { echo "$ifname"; return 0; }
		sleep 1
	done
	die "no interface has address $1 (is the private network up?)"
}

# "Combined" from the "Pre-set maximums" ($2 = 1) or "Current" ($2 = 2) block.
channels() {
	ethtool -l "$1" 2>/dev/null | awk -v want="$2" '
		/maximums/ { block = 1 } /Current/ { block = 2 }
		block == want && /^Combined:/ { print $2; exit }'
}

apply() {
	ip=$1 want=$2
	command -v ethtool >/dev/null 2>&1 || die "ethtool is not installed (run: $0 install $ip $want)"
	ifname=$(iface_of "$ip")
	driver=$(ethtool -i "$ifname" | awk '/^driver:/ { print $2 }')
	[ "$driver" = virtio_net ] ||
		echo "host-nic: WARNING: $ifname uses $driver, not virtio_net; native XDP may be refused" >&2

	# Channels: one per datapath queue. virtio_net keeps the remaining queue
	# pairs (NIC_QUEUES - combined, see the Vagrantfile) as per-CPU XDP_TX
	# queues; with fewer it shares TX queues under a lock (slower, still works).
	max=$(channels "$ifname" 1); cur=$(channels "$ifname" 2)
	if [ -z "$max" ] || [ "$max" = n/a ]; then
		echo "host-nic: $ifname reports no channels; leaving its queues as they are" >&2
	else
		n=$want; [ "$max" -lt "$n" ] && n=$max
		[ "$max" -lt "$want" ] &&
			echo "host-nic: $ifname has at most $max queue pair(s), not $want (VirtualBox: always 1)" >&2
		[ "$cur" = "$n" ] || ethtool -L "$ifname" combined "$n"
	fi

	# Offloads: virtio_net refuses a native XDP program while the device
	# coalesces received segments for the guest (GRO_HW, the old LRO). The
	# driver clears them itself when the device lets the guest switch them
	# (ctrl_guest_offloads, on by default in QEMU); turning them off here makes
	# that explicit. A "[fixed] on" means the device cannot: use mode skb.
	for feature in rx-gro-hw large-receive-offload; do
		state=$(ethtool -k "$ifname" | awk -v f="$feature:" '$1 == f { print $2, $3; exit }')
		case "$state" in
		"on [fixed]") echo "host-nic: WARNING: $feature is fixed on for $ifname: native XDP will be refused" >&2 ;;
		on*) ethtool -K "$ifname" "$feature" off ;;
		esac
	done
	echo "host-nic: $ifname ($driver) tuned for native XDP"
	show "$ip"
}

show() {
	ifname=$(iface_of "$1")
	echo "== $ifname channels"; ethtool -l "$ifname" || true
	echo "== $ifname offloads"; ethtool -k "$ifname" | grep -E '^(rx-gro-hw|large-receive-offload|generic-receive-offload):' || true
	echo "== $ifname XDP"; ip -d link show dev "$ifname" | grep -E 'xdp|prog' || echo "no XDP program attached"
}

install() {
	if ! command -v ethtool >/dev/null 2>&1; then
		apt-get update
		DEBIAN_FRONTEND=noninteractive apt-get install -y ethtool
	fi
	cat >"$UNIT" <<EOF
[Unit]
Description=isolane: tune the experiment NIC ($1) for native XDP
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=/bin/sh $SELF apply $1 $2
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
EOF
	systemctl daemon-reload
	systemctl enable isolane-nic.service
	apply "$1" "$2"
}

case "${1:-}" in
install|apply) [ $# -eq 3 ] || die "usage: $0 $1 IP CHANNELS"; "$1" "$2" "$3" ;;
show) [ $# -eq 2 ] || die "usage: $0 show IP"; show "$2" ;;
*) die "usage: $0 install|apply IP CHANNELS | show IP" ;;
esac
