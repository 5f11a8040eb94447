#!/bin/bash
# bench/linux_blk.sh - disk I/O from inside Linux, Shoal's in-process
# virtio-blk against QEMU's virtio-blk, side by side in one run.
#
# Debian's cloud kernel and the guest kit's busybox (bench/lib.bash) boot
# under `shoal run --disk IMG` and under `qemu-system-x86_64 -accel kvm
# -M microvm,pcie=on -drive file=IMG,format=raw -device virtio-blk-pci` on
# the same raw image file (random bytes, so reads are not of holes), rounds
# interleaved with the order swapped every other round.  Inside, busybox
# `dd` with O_DIRECT (so every block is one virtio request, past the guest's
# page cache) reads and writes /dev/vda from its start:
#   read  4 KiB   dd if=/dev/vda of=/dev/null bs=4k  count=C4 iflag=direct
#   write 4 KiB   dd if=/dev/zero of=/dev/vda bs=4k  count=C4 oflag=direct
#   read  1 MiB   dd if=/dev/vda of=/dev/null bs=1M count=C1 iflag=direct
#   write 1 MiB   dd if=/dev/zero of=/dev/vda bs=1M count=C1 oflag=direct
# one request at a time (dd waits for each), each timed by the guest's clock
# (adjtimex, microseconds) around the dd.  The guest's I/O scheduler is set
# to "none" first, so that both devices see the same requests whatever
# their queue counts (Linux picks mq-deadline for a single-queue disk, none
# for a multi-queue one; Shoal offers 1 queue, QEMU 7.2 one per vCPU).
#
# The host side is the page cache for both: the image lives in /tmp (the
# KVM box's tmpfs), Shoal opens it buffered (its default), QEMU with its
# default cache=writeback and aio=threads.  So these are device-path
# figures: the VM exits, the VMM's request handling and the interrupts, not
# a disk.  Prints the median of ROUNDS x REPS samples per workload and
# VMM, and the ratio Shoal/QEMU (higher is better for Shoal).
#
#   bench/linux_blk.sh [-n ROUNDS] [-r REPS] [-c C4] [-C C1] [-M MACHINE] [-p]
#   (defaults: 3 rounds, 3 reps, 1024 4-KiB blocks, 32 1-MiB blocks,
#    microvm,pcie=on; the image is 256 MiB).  -p gives QEMU's device
#    packed=on (the packed virtqueue layout, which Shoal offers and Linux
#    takes; QEMU 7.2 offers the split layout unless told), to tell the
#    layout's share of a difference from the VMM's.
#
# Needs /dev/kvm (run it in the KVM box: scripts/kvm-box.sh --
# bench/linux_blk.sh), QEMU and the guest kit; exits 77 without them.
set -u
. "$(dirname "$0")/lib.bash"
N=3; REPS=3; C4=1024; C1=32; MACHINE=microvm,pcie=on; IMG_MIB=256; PACKED=
while getopts "n:r:c:C:M:p" o; do
	case $o in n) N=$OPTARG ;; r) REPS=$OPTARG ;; c) C4=$OPTARG ;; C) C1=$OPTARG ;;
	M) MACHINE=$OPTARG ;; p) PACKED=,packed=on ;; *) exit 64 ;; esac
done
[ "$C1" -le "$IMG_MIB" ] && [ $((C4 / 256)) -le "$IMG_MIB" ] || { echo "counts exceed the $IMG_MIB MiB image" >&2; exit 64; }
bench_require_linux

TMP=$(mktemp -d /tmp/shoal-bench.XXXXXX)
trap bench_cleanup EXIT
IMG=$TMP/disk.img
head -c "${IMG_MIB}M" /dev/urandom >"$IMG"
BENCH_INITRD=$TMP/initrd
bench_initrd "$BENCH_INITRD" "
dev=/dev/vda
[ -b \$dev ] || { r error no /dev/vda; exit 0; }
echo none >/sys/block/vda/queue/scheduler
r disk \$((\$(cat /sys/block/vda/size) / 2048)) MiB, \$(ls /sys/block/vda/mq | wc -l) queues, scheduler \$(cat /sys/block/vda/queue/scheduler), features \$(cat /sys/block/vda/device/features)
for i in \$(seq $REPS); do
	for w in 'read 4k 4096 $C4' 'write 4k 4096 $C4' 'read 1M 1048576 $C1' 'write 1M 1048576 $C1'; do
		set -- \$w
		if [ \$1 = read ]; then io=\"if=\$dev of=/dev/null iflag=direct\"
		else io=\"if=/dev/zero of=\$dev oflag=direct conv=notrunc\"; fi
		t0=\$(now_us)
		dd \$io bs=\$3 count=\$4 2>/tmp/dd.err || r error dd \$w: \$(tail -1 /tmp/dd.err)
		t1=\$(now_us)
		r result \$1-\$2 n=\$4 bytes=\$((\$3 * \$4)) us=\$((t1 - t0))
	done
done"

run_shoal() { bench_shoal "$1" --disk "$IMG"; }
run_qemu() {
	bench_qemu "$MACHINE" "$1" -drive "file=$IMG,if=none,id=d0,format=raw" \
		-device "virtio-blk-pci,drive=d0$PACKED"
}

# round VMM I: one boot, its result lines appended to VMM.res.
round() {
	local log=$TMP/$1.$2.log
	"run_$1" "$log"
	if bench_wait "$log" done; then
		bench_facts "$log" result >>"$TMP/$1.res"
		bench_facts "$log" uptime >>"$TMP/$1.uptime"
		[ "$2" = 1 ] && bench_facts "$log" disk | while read -r d; do
			echo "$1: ${d% features *}, negotiated $(virtio_names "${d##* }" "9:FLUSH 12:MQ 13:DISCARD 14:WRITE_ZEROES")"
		done
	else
		echo "$1 round $2: no \"bench: done\" line; console: $(tr -d '\r' <"$log" | tail -3 | tr '\n' '|'); VMM: $(head -c 300 "$log.vmm")" >&2
	fi
	bench_facts "$log" error | sed "s/^/$1 round $2: error: /" >&2
	bench_stop
}

echo "virtio-blk from inside Linux ($SHOAL_KIT_KVER), dd O_DIRECT, $N rounds x $REPS reps," \
     "$(date -u '+%F %H:%M UTC'), $(nproc) cpus, $(qemu-system-x86_64 --version | head -1)"
echo "shoal: --disk IMG (buffered); qemu: -M $MACHINE, virtio-blk-pci$PACKED, cache=writeback aio=threads"
for i in $(seq "$N"); do
	if [ $((i % 2)) = 1 ]; then round shoal "$i"; round qemu "$i"
	else round qemu "$i"; round shoal "$i"; fi
done

# figure VMM WORKLOAD UNIT: median over the samples, in IOPS or MiB/s.
figure() {
	[ -s "$TMP/$1.res" ] || { echo 0; return; }
	awk -v w="$2" -v unit="$3" '$1 == w { for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
		if (f["us"] > 0) printf "%.1f\n", unit == "iops" ? f["n"] / f["us"] * 1e6 : f["bytes"] / f["us"] * 1e6 / 1048576 }' \
		"$TMP/$1.res" | median
}
printf '%-24s %10s %10s %7s %s\n' workload shoal qemu ratio samples
for w in "read-4k iops" "write-4k iops" "read-1M mib" "write-1M mib"; do
	set -- $w
	s=$(figure shoal "$1" "$2"); q=$(figure qemu "$1" "$2")
	printf '%-24s %10s %10s %7s %s\n' "$1 ($([ "$2" = iops ] && echo IOPS || echo MiB/s))" "$s" "$q" \
		"$(ratio "$s" "$q")" "$(grep -c "^$1 " "$TMP/shoal.res" 2>/dev/null)/$(grep -c "^$1 " "$TMP/qemu.res" 2>/dev/null)"
done
echo "guest uptime at the hook's start (median):$(bench_uptimes shoal qemu)"
