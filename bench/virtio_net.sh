#!/bin/bash
# bench/virtio_net.sh - network throughput from inside the test guest to a
# host socket, Shoal against QEMU, side by side in one run.
#
# The test guest's `vnet-bench MS` (guest/virtio_net_bench.c) ARPs for
# 10.0.2.2 and then, for MS milliseconds, sends UDP datagrams of SIZE
# payload bytes (default 1472: 1500-byte IP packets) to 10.0.2.2:5201 as
# fast as its transmit ring allows, polling, no interrupts.  The same guest
# binary runs under `shoal run --net tap=TAP` and under
# `qemu-system-x86_64 -M microvm,pcie=on -netdev tap -device virtio-net-pci`
# on the same TAP, rounds interleaved.  On the host, a UDP socket bound to
# 10.0.2.2:5201 counts what arrived (datagrams and payload bytes, timed
# from the first datagram to the last): that received rate is the figure.
# The guest's own sent rate (chains the device returned as used) and the
# TAP's rx counters are printed beside it, so a gap shows where frames were
# lost (the TAP's backlog, the socket's buffer, or a slow receiver).
#
# Needs root: the TAP lives in a network namespace that this script creates
# (10.0.2.2/24 on the TAP, no route out of it) and deletes on exit; both
# VMMs run inside it.  Without root or /dev/net/tun it says so and exits 77.
# Prints medians of N rounds and the ratio Shoal/QEMU (higher is better for
# Shoal).  The receiver is a small C program (recvmmsg, built into a
# temporary directory); "socket/TAP frames" below 100% means it or its
# socket buffer fell behind.
#
#   bench/virtio_net.sh [-n ROUNDS] [-t MS] [-s SIZE]
set -u
. "$(dirname "$0")/lib.bash"   # median, ratio, BUILD
N=3; MS=1000; SIZE=1472; TAP=shoalbench0; PORT=5201
while getopts "n:t:s:" o; do case $o in n) N=$OPTARG ;; t) MS=$OPTARG ;; s) SIZE=$OPTARG ;; *) exit 64 ;; esac; done

skip() { echo "bench/virtio_net.sh: $1; skipped" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (a network namespace and a TAP)"
[ -c /dev/net/tun ] || skip "/dev/net/tun is missing"
[ -r /dev/kvm ] || skip "/dev/kvm is not available"
for t in ip cc qemu-system-x86_64; do command -v $t >/dev/null || skip "$t is not installed"; done
[ -x "$BUILD/shoal" ] && [ -x "$BUILD/shoal-guest" ] || { echo "build $BUILD/shoal and $BUILD/shoal-guest first" >&2; exit 1; }

NS=shoalbench-$$
TMP=$(mktemp -d /tmp/shoal-bench.XXXXXX)
SINK=
trap '[ -n "$SINK" ] && kill "$SINK" 2>/dev/null; ip netns del "$NS" 2>/dev/null; rm -rf "$TMP"' EXIT
in_ns() { ip netns exec "$NS" "$@"; }
ip netns add "$NS" || skip "cannot make a network namespace"
in_ns ip link set lo up
in_ns ip tuntap add dev "$TAP" mode tap
in_ns ip addr add 10.0.2.2/24 dev "$TAP"
in_ns ip link set "$TAP" up

# The receiver, in C so that it is not the bottleneck: recvmmsg in
# batches of 64; counts datagrams and bytes from the first to the last;
# stops 1 s after the last (60 s before the first).
cat >"$TMP/sink.c" <<'EOF'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#define B 64
static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv)
{
	static char buf[B][2048];
	struct mmsghdr m[B];
	struct iovec v[B];
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	struct timeval idle = { 60, 0 };
	int s = socket(AF_INET, SOCK_DGRAM, 0), big = 32 << 20, k;
	unsigned long long n = 0, b = 0;
	double t0 = 0, t1 = 0;

	inet_pton(AF_INET, argv[1], &a.sin_addr);
	setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
	if (bind(s, (struct sockaddr *)&a, sizeof(a)))
		return perror("bind"), 1;
	fclose(fopen(argv[3], "w"));
	for (k = 0; k < B; k++) {
		v[k] = (struct iovec){ buf[k], sizeof(buf[k]) };
		m[k] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &v[k], .msg_iovlen = 1 } };
	}
	while ((k = recvmmsg(s, m, B, MSG_WAITFORONE, NULL)) > 0) {
		t1 = now();
		if (!n) {
			t0 = t1;
			idle.tv_sec = 1;
			setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
		}
		n += k;
		while (k--)
			b += m[k].msg_len;
	}
	printf("rx_frames=%llu rx_bytes=%llu rx_us=%.0f\n", n, b, (t1 - t0) * 1e6);
	return 0;
}
EOF
cc -O2 -o "$TMP/sink" "$TMP/sink.c" || { echo "cannot build the receiver" >&2; exit 1; }

CMD="vnet-bench $MS size=$SIZE port=$PORT; exit 0"
run_shoal() {
	in_ns timeout 180 "$BUILD/shoal" run --kernel "$BUILD/shoal-guest" --net "tap=$TAP" \
		--console "file:$1" --cmdline "$CMD" --timeout 120 </dev/null 2>/dev/null
}
run_qemu() {
	in_ns timeout 180 qemu-system-x86_64 -accel kvm -M microvm,pcie=on -m 256 -display none -nodefaults \
		-no-user-config -serial "file:$1" -device isa-debug-exit,iobase=0xf4,iosize=1 \
		-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
		-device virtio-net-pci,netdev=n0 \
		-kernel "$BUILD/shoal-guest" -append "$CMD" </dev/null 2>/dev/null
}
tapstat() { in_ns cat "/sys/class/net/$TAP/statistics/$1"; }

# round VMM I: one run with the receiver; one line of figures in VMM.res.
round() {
	local vmm=$1 i=$2 log=$TMP/$1.$2.log p0 b0 d0 g t
	rm -f "$TMP/ready"
	ip netns exec "$NS" "$TMP/sink" 10.0.2.2 "$PORT" "$TMP/ready" >"$TMP/sink.out" &
	SINK=$!
	while [ ! -e "$TMP/ready" ] && kill -0 "$SINK" 2>/dev/null; do sleep 0.05; done
	p0=$(tapstat rx_packets); b0=$(tapstat rx_bytes); d0=$(tapstat rx_dropped)
	"run_$vmm" "$log"
	# The receiver stops 1 s after the last datagram; give it 3.
	for t in $(seq 60); do kill -0 "$SINK" 2>/dev/null || break; sleep 0.05; done
	kill "$SINK" 2>/dev/null
	wait "$SINK"
	SINK=
	g=$(grep -o 'vnet-bench ok .*' "$log" 2>/dev/null)
	if [ -z "$g" ] || [ ! -s "$TMP/sink.out" ]; then
		echo "$vmm round $i: no vnet-bench report or nothing received: $(grep -hs error "$log" | head -2)" >&2
		return
	fi
	echo "$g $(cat "$TMP/sink.out") tap_pkts=$(($(tapstat rx_packets) - p0))" \
	     "tap_bytes=$(($(tapstat rx_bytes) - b0)) tap_drops=$(($(tapstat rx_dropped) - d0))" \
	     >>"$TMP/$vmm.res"
}

# Interleaved, and the order swapped every other round, so that neither
# VMM always runs first after the other's load.
for i in $(seq "$N"); do
	if [ $((i % 2)) = 1 ]; then round shoal "$i"; round qemu "$i"
	else round qemu "$i"; round shoal "$i"; fi
done

# figure VMM EXPR: EXPR per round (awk, over the key=value fields), median.
figure() {
	[ -s "$TMP/$1.res" ] || { echo 0; return; }
	awk -v e="$2" '{ for (i = 1; i <= NF; i++) if (split($i, kv, "=") == 2) f[kv[1]] = kv[2]
		if (e == "rx_mib") v = f["rx_us"] ? f["rx_bytes"] / f["rx_us"] * 1e6 / 1048576 : 0
		if (e == "rx_fps") v = f["rx_us"] ? f["rx_frames"] / f["rx_us"] * 1e6 : 0
		if (e == "tx_mib") v = f["mib_s"]
		if (e == "tx_fps") v = f["frames_s"]
		if (e == "delivered") v = f["tap_pkts"] ? 100 * f["rx_frames"] / f["tap_pkts"] : 0
		if (e == "tap_drops") v = f["tap_drops"]
		printf "%.1f\n", v }' "$TMP/$1.res" | median
}

echo "virtio-net UDP to a host socket from the test guest, $N rounds of $MS ms," \
     "payload $SIZE bytes, $(date -u +%F), $(nproc) cores"
printf '%-34s %12s %12s %8s\n' figure shoal qemu ratio
for w in "rx_mib host received (MiB/s)" "rx_fps host received (frames/s)" \
         "tx_mib guest sent (MiB/s)" "tx_fps guest sent (frames/s)" \
         "delivered socket/TAP frames (%)" "tap_drops TAP rx drops"; do
	set -- $w; key=$1; shift
	s=$(figure shoal "$key"); q=$(figure qemu "$key")
	r=$(ratio "$s" "$q")
	printf '%-34s %12s %12s %8s\n' "$*" "$s" "$q" "$r"
done
for v in shoal qemu; do
	[ -s "$TMP/$v.res" ] && sed "s/^/$v: /" "$TMP/$v.res" || { echo "$v: no successful round"; rc=1; }
done
exit "${rc:-0}"
