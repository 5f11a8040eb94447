#!/bin/bash
# bench/virtio_blk.sh - disk I/O from inside the test guest, Shoal against
# QEMU, side by side in one run.
#
# The test guest's `vblk-bench` (guest/virtio_blk_bench.c) drives a
# virtio-blk device from ring 3: 4 KiB random reads and writes at queue
# depth 1 and 32, and 1 MiB sequential reads and writes at depth 2.  The
# same guest binary runs under `shoal run --disk FILE` and under
# `qemu-system-x86_64 -M microvm,pcie=on -device virtio-blk-pci` on the same
# raw file (filled with random data first, so reads are not of holes),
# rounds interleaved.  By default the host page cache is in play for both
# (QEMU's default cache=writeback, Shoal's buffered open); with -d both open
# the file O_DIRECT instead (Shoal `--disk FILE,direct`, QEMU
# `cache=none`), and the file lives under /var/tmp, since /tmp may be a
# tmpfs that refuses O_DIRECT.  Prints the median of N rounds per workload
# and the ratio Shoal/QEMU (higher is better for Shoal).
#
#   bench/virtio_blk.sh [-d] [-n ROUNDS] [-t MS_PER_RUN]
set -u
. "$(dirname "$0")/lib.bash"   # median, ratio, BUILD
N=3; MS=300; DIRECT=0
while getopts "dn:t:" o; do
	case $o in d) DIRECT=1 ;; n) N=$OPTARG ;; t) MS=$OPTARG ;; *) exit 64 ;; esac
done
if [ "$DIRECT" = 1 ]; then
	TMP=$(mktemp -d /var/tmp/shoal-bench.XXXXXX); SDISK=,direct; QCACHE=,cache=none
	MODE="host O_DIRECT (shoal --disk FILE,direct, qemu cache=none)"
else
	TMP=$(mktemp -d /tmp/shoal-bench.XXXXXX); SDISK=; QCACHE=
	MODE="host page cache (qemu cache=writeback)"
fi
trap 'rm -rf "$TMP"' EXIT
IMG=$TMP/disk.img
dd if=/dev/urandom of="$IMG" bs=1M count=256 status=none
CMD="vblk-bench $MS; exit 0"

run_shoal() {
	"$BUILD/shoal" run --kernel "$BUILD/shoal-guest" --disk "$IMG$SDISK" --console "file:$1" \
		--cmdline "$CMD" --timeout 300 </dev/null 2>/dev/null
}
run_qemu() {
	qemu-system-x86_64 -accel kvm -M microvm,pcie=on -m 256 -display none -nodefaults \
		-no-user-config -serial "file:$1" -device isa-debug-exit,iobase=0xf4,iosize=1 \
		-drive "file=$IMG,if=none,id=d0,format=raw$QCACHE" -device virtio-blk-pci,drive=d0 \
		-kernel "$BUILD/shoal-guest" -append "$CMD" </dev/null 2>/dev/null
}

for i in $(seq "$N"); do
	run_shoal "$TMP/shoal.$i.log"
	run_qemu "$TMP/qemu.$i.log"
done

field() { grep -ho "vblk-bench $2 bs=[0-9]* qd=$3 .*" "$TMP"/$1.*.log | sed -n "s/.* $4=\([0-9]*\).*/\1/p"; }

echo "virtio-blk from the test guest, $N rounds of $MS ms per workload, $(date -u +%F), $(nproc) cores"
echo "$MODE"
printf '%-22s %12s %12s %8s\n' workload shoal qemu ratio
for w in "randread 1 iops" "randread 32 iops" "randwrite 1 iops" "randwrite 32 iops" \
         "seqread 2 mib_s" "seqwrite 2 mib_s"; do
	set -- $w
	s=$(field shoal "$1" "$2" "$3" | median); q=$(field qemu "$1" "$2" "$3" | median)
	r=$(ratio "$s" "$q")
	printf '%-22s %12s %12s %8s\n' "$1 qd$2 ($3)" "$s" "$q" "$r"
done
