#!/bin/bash
# bench/linux_net.sh - TCP throughput between Linux in a VM and the host,
# Shoal's in-process virtio-net against QEMU's virtio-net, in userspace and
# with vhost-net, side by side in one run.
#
# Debian's cloud kernel and the guest kit's busybox (bench/lib.bash) boot
# with a virtio-net device on the same TAP in each of three VMMs:
#   shoal        shoal run --net tap=TAP
#   qemu         qemu-system-x86_64 -accel kvm -M microvm,pcie=on
#                -netdev tap,ifname=TAP,vhost=off -device virtio-net-pci
#   qemu-vhost   the same with vhost=on (the kernel's vhost_net moves the
#                packets; QEMU only sets it up)
# rounds interleaved, the starting VMM rotated every round.  The guest takes
# 10.0.2.15/24, the TAP 10.0.2.2/24, inside a network namespace this script
# makes (no route out) and removes.  In each boot, REPS times:
#   guest -> host   dd if=/dev/zero bs=64k count=K | nc 10.0.2.2 5000, into
#                   build/bench/netpump recv (bench/netpump.c), timed on the
#                   host from the first byte to EOF;
#   host -> guest   netpump send 10.0.2.15 5001 BYTES into busybox
#                   `nc -l -p 5001 >/dev/null` in the guest, timed on the
#                   host from connect until the guest's nc has read
#                   everything and closed (its stdin is held open on a FIFO
#                   so that it does not shut its side down first).
# Busybox nc moves data in small reads and writes, so the guest's own CPU
# is part of every figure, the same for all three VMMs.  Whatever offloads
# each device and the TAP agree on (checksum, TSO, mergeable buffers) are
# used as they come; the features the guest driver negotiated are printed.
# Prints the median MiB/s of ROUNDS x REPS transfers per direction and VMM,
# and the ratios Shoal/QEMU (higher is better for Shoal).
#
#   bench/linux_net.sh [-n ROUNDS] [-r REPS] [-o MIB] [-i MIB] [-M MACHINE] [-p]
#   (defaults: 3 rounds, 2 reps, 4 MiB out of the guest and 32 MiB into
#   it per transfer, microvm,pcie=on).  Out of the guest is the slow way
#   here (busybox nc's small writes; see docs/benchmarks.md), hence the
#   smaller default.  -p gives QEMU's device packed=on (the packed
#   virtqueue layout, which Shoal offers and Linux takes; QEMU 7.2 offers
#   the split layout unless told; vhost-net cannot do packed, and QEMU
#   then says so and stays split).
#
# Needs root (the namespace and the TAP), /dev/net/tun and /dev/kvm: run it
# in the KVM box (scripts/kvm-box.sh -- bench/linux_net.sh).  Exits 77
# without them; qemu-vhost is left out, saying so, without /dev/vhost-net.
set -u
. "$(dirname "$0")/lib.bash"
N=3; REPS=2; OUT_MIB=4; IN_MIB=32; MACHINE=microvm,pcie=on; TAP=shoalbench0; PACKED=
MAC=52:54:00:5c:0b:01
while getopts "n:r:o:i:M:p" o; do
	case $o in n) N=$OPTARG ;; r) REPS=$OPTARG ;; o) OUT_MIB=$OPTARG ;; i) IN_MIB=$OPTARG ;;
	M) MACHINE=$OPTARG ;; p) PACKED=,packed=on ;;
	*) exit 64 ;; esac
done
bench_require_linux
[ -x "$BUILD/bench/netpump" ] || { echo "build $BUILD/bench/netpump first (make tests)" >&2; exit 1; }

# Run again inside a network namespace of our own.
if [ -z "${BENCH_NETNS:-}" ]; then
	[ "$(id -u)" = 0 ] || bench_skip "needs root (a network namespace and a TAP)"
	[ -c /dev/net/tun ] || bench_skip "/dev/net/tun is missing"
	ns=shoalbench-$$
	ip netns add "$ns" || bench_skip "cannot make a network namespace"
	BENCH_NETNS=$ns BUILD=$BUILD ip netns exec "$ns" bash "$0" "$@"
	rc=$?
	ip netns del "$ns"
	exit $rc
fi

TMP=$(mktemp -d /tmp/shoal-bench.XXXXXX)
RECV=""
trap '[ -n "$RECV" ] && kill "$RECV" 2>/dev/null; bench_cleanup' EXIT
ip link set lo up
ip tuntap add dev "$TAP" mode tap && ip addr add 10.0.2.2/24 dev "$TAP" && ip link set "$TAP" up ||
	bench_skip "cannot make the TAP $TAP"
VMMS="shoal qemu qemu-vhost"
if [ ! -c /dev/vhost-net ]; then
	echo "qemu-vhost: left out, /dev/vhost-net is missing (modprobe vhost_net)" >&2
	VMMS="shoal qemu"
fi

BYTES=$((IN_MIB * 1048576))
BENCH_INITRD=$TMP/initrd
bench_initrd "$BENCH_INITRD" "
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
r nic \$(basename \$(readlink /sys/class/net/eth0/device/driver)) mtu \$(cat /sys/class/net/eth0/mtu) features \$(cat /sys/class/net/eth0/device/features)
mkfifo /tmp/hold
for i in \$(seq $REPS); do
	dd if=/dev/zero bs=64k count=$((OUT_MIB * 16)) 2>/dev/null | nc 10.0.2.2 5000 >/dev/null || r error g2h nc \$?
	nc -l -p 5001 </tmp/hold >/dev/null &
	exec 3>/tmp/hold
	r listening \$i
	wait \$! || r error h2g nc \$?
	exec 3>&-
done
s=/sys/class/net/eth0/statistics
r stats tx_packets \$(cat \$s/tx_packets) tx_bytes \$(cat \$s/tx_bytes) rx_packets \$(cat \$s/rx_packets) rx_bytes \$(cat \$s/rx_bytes) tcp_retrans \$(awk '/^Tcp: [0-9]/ { print \$13 }' /proc/net/snmp)"

run_shoal() { bench_shoal "$1" --net "tap=$TAP,mac=$MAC"; }
run_qemu_common() {
	bench_qemu "$MACHINE" "$1" -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no,vhost=$2" \
		-device "virtio-net-pci,netdev=n0,mac=$MAC$PACKED"
}
run_qemu() { run_qemu_common "$1" off; }
run_qemu-vhost() { run_qemu_common "$1" on; }

# round VMM I: one boot, REPS transfers each way; lines "g2h BYTES US" and
# "h2g BYTES US" appended to VMM.res.
round() {
	local vmm=$1 i=$2 log=$TMP/$1.$2.log k
	"$BUILD/bench/netpump" recv 10.0.2.2 5000 "$REPS" >"$TMP/recv.out" 2>&1 &
	RECV=$!
	"run_$vmm" "$log"
	for k in $(seq "$REPS"); do
		bench_wait "$log" "listening $k" || break
		"$BUILD/bench/netpump" send 10.0.2.15 5001 "$BYTES" >>"$TMP/send.out" 2>&1
	done
	if bench_wait "$log" done 60; then
		bench_facts "$log" uptime >>"$TMP/$vmm.uptime"
		[ "$i" = 1 ] && bench_facts "$log" nic | while read -r d; do
			echo "$vmm: ${d% features *}, negotiated $(virtio_names "${d##* }" "0:CSUM 1:GUEST_CSUM 7:GUEST_TSO4 11:HOST_TSO4 15:MRG_RXBUF 22:MQ")"
			echo "$vmm: after the transfers: $(bench_facts "$log" stats)"
		done
	else
		echo "$vmm round $i: no \"bench: done\" line; console: $(tr -d '\r' <"$log" | tail -3 | tr '\n' '|'); VMM: $(head -c 300 "$log.vmm")" >&2
	fi
	bench_facts "$log" error | sed "s/^/$vmm round $i: error: /" >&2
	bench_stop
	kill "$RECV" 2>/dev/null
	wait "$RECV" 2>/dev/null
	RECV=""
	sed -n 's/^recv bytes=\([0-9]*\) us=\([0-9]*\)$/g2h \1 \2/p' "$TMP/recv.out" >>"$TMP/$vmm.res"
	sed -n 's/^send bytes=\([0-9]*\) us=\([0-9]*\)$/h2g \1 \2/p' "$TMP/send.out" >>"$TMP/$vmm.res"
	grep -hv '^\(recv\|send\) ' "$TMP/recv.out" "$TMP/send.out" | sed "s/^/$vmm round $i: /" >&2
	rm -f "$TMP/recv.out" "$TMP/send.out"
}

echo "virtio-net TCP from inside Linux ($SHOAL_KIT_KVER), busybox nc, $OUT_MIB MiB out of and $IN_MIB MiB into the guest per transfer," \
     "$N rounds x $REPS reps, $(date -u '+%F %H:%M UTC'), $(nproc) cpus, $(qemu-system-x86_64 --version | head -1)"
echo "shoal: --net tap=TAP; qemu: -M $MACHINE, virtio-net-pci$PACKED on -netdev tap, vhost=off (qemu) or on (qemu-vhost)"
set -- $VMMS
NV=$#
for i in $(seq "$N"); do
	for k in $(seq 0 $((NV - 1))); do
		set -- $VMMS
		shift $(((i - 1 + k) % NV))
		round "$1" "$i"
	done
done

# figure VMM DIR: median MiB/s of the transfers in direction DIR.
figure() {
	[ -s "$TMP/$1.res" ] || { echo 0; return; }
	awk -v d="$2" '$1 == d && $3 > 0 { printf "%.1f\n", $2 / $3 * 1e6 / 1048576 }' "$TMP/$1.res" | median
}
count() { grep -c "^$2 " "$TMP/$1.res" 2>/dev/null || echo 0; }
printf '%-22s' "MiB/s"; for v in $VMMS; do printf ' %10s' "$v"; done
printf ' %12s' "shoal/qemu"; [ "$NV" = 3 ] && printf ' %12s' "shoal/vhost"; printf ' %s\n' samples
for d in g2h h2g; do
	printf '%-22s' "$([ $d = g2h ] && echo 'guest -> host' || echo 'host -> guest')"
	s=$(figure shoal $d); q=$(figure qemu $d); vh=$(figure qemu-vhost $d)
	for v in $VMMS; do printf ' %10s' "$(figure "$v" $d)"; done
	printf ' %12s' "$(ratio "$s" "$q")"; [ "$NV" = 3 ] && printf ' %12s' "$(ratio "$s" "$vh")"
	printf ' '; for v in $VMMS; do printf '%s/' "$(count "$v" $d)"; done | sed 's,/$,,'; echo
done
echo "guest uptime at the hook's start (median):$(bench_uptimes $VMMS)"
