#!/bin/bash
# bench/virtiofs_share.sh - one file tree shared by N Linux VMs through
# virtio-fs, against each VM having its own copy of the tree as a disk
# (issue 14, item 5: "10 VMs share one copy in host memory";
# docs/benchmarks.md, "One file tree for ten VMs").  Needs real KVM, so it
# runs in the KVM box:
#
#   scripts/kvm-box.sh -q --cpus 1 --memory 4096 --timeout 2400 -- \
#       env BUILD=$PWD/build bash bench/virtiofs_share.sh [-n VMS] [-s MIB] [-v VARIANTS]
#
#   -n VMS       VMs per variant (10)
#   -s MIB       size of the tree (64): distinct random data in 256 KiB files
#   -v LIST      variants, comma-separated, run in this order (fs-auto,fs-none,disk):
#                fs-auto  --fs, one Debian virtiofsd per VM, all on the same
#                         host directory, `-o cache=auto` (the guest caches
#                         file data in its page cache)
#                fs-none  the same with `-o cache=none` (the guest's FUSE
#                         opens files direct-I/O: no file data in its page cache)
#                disk     each VM gets its own copy of an ext4 image of the
#                         tree (`--disk COPY,readonly`), the usual way
#
# The VMs boot one after another (each waits for the one before to be
# ready; ten booting at once froze the one-vCPU box), and read one after
# another too; they run under nice 5, and so do the virtiofsd.
# Each VM: the guest kit's Debian cloud kernel (scripts/guest-kit.sh), 1
# vCPU, 256 MiB, its serial console on stdin/stdout (stdin a FIFO this
# script holds open).  The hook mounts the tree (`mount -t virtiofs shared`
# or the ext4 disk read-only), reports "ready" and its page cache (Cached in
# /proc/meminfo), then waits for a line on its console; when every VM of
# the variant is ready the script measures the host, sends each VM "go" in turn,
# and each guest reads the whole tree (md5sum of every file, then an md5sum
# of that list: one checksum of names and bytes) and reports the checksum
# and its page cache again.  The script checks every guest's checksum is
# the host's (a mismatch is printed, and the exit status is 1).
#
# Host memory, measured at "ready" and after every guest has read the tree
# (the difference is what reading the tree cost): MemAvailable and Cached
# (/proc/meminfo), the sum of the PSS (/proc/PID/smaps_rollup) of the VMMs
# and, apart, of the virtiofsd processes (with their children: the C
# virtiofsd forks for its sandbox), and the host copies of the tree's
# data: the resident bytes of the tree's files or of the image copies
# (fincore).  In the box /tmp is tmpfs, so those files are in memory from
# the moment they are written: a copy of the data on the host costs its
# size whether a VM reads it or not (on a host with a disk it would be page
# cache, filled on read and reclaimable).  The guests' own page cache
# copies are the sum of their Cached growth, and show again on the host as
# growth of the VMMs' PSS (guest RAM the guest touched).
#
# Bounded: each wait has a limit; every VMM and virtiofsd started here is
# killed by its pid on exit.  No figure has a threshold.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
SHOAL=$BUILD/shoal
VIRTIOFSD=${VIRTIOFSD:-/usr/lib/qemu/virtiofsd}
N=10
MIB=64
VARIANTS=fs-auto,fs-none,disk
WAIT=${WAIT:-300}
while getopts n:s:v: o; do
	case $o in
	n) N=$OPTARG ;;
	s) MIB=$OPTARG ;;
	v) VARIANTS=$OPTARG ;;
	*) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
	esac
done
die() { echo "virtiofs_share: $*" >&2; exit 1; }
say() { echo "virtiofs_share: $*" >&2; }

[ -c /dev/kvm ] || die "/dev/kvm is not here; run it in the KVM box (see the head of this script)"
[ "$(id -u)" = 0 ] || die "needs root (virtiofsd's sandbox, drop_caches)"
[ -x "$SHOAL" ] || die "$SHOAL is not built"
[ -x "$VIRTIOFSD" ] || die "$VIRTIOFSD is not installed (Debian package qemu-system-common)"
for t in cpio fincore mkfs.ext4 md5sum; do command -v $t >/dev/null || die "$t is not installed"; done
kit=$("$ROOT/scripts/guest-kit.sh" -q) || die "the guest kit is not available (scripts/guest-kit.sh)"
eval "$kit"

W=$(mktemp -d /tmp/virtiofs-share.XXXXXX)
VMM_PIDS=()
VFS_PIDS=()
FIFO_FDS=()
stop_all() {
	local p fd
	for p in "${VMM_PIDS[@]}" "${VFS_PIDS[@]}"; do
		# shellcheck disable=SC2046  # one pid a word
		[ -n "$p" ] && kill -9 $(descendants "$p") "$p" 2>/dev/null
	done
	for p in "${VMM_PIDS[@]}" "${VFS_PIDS[@]}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
	for fd in "${FIFO_FDS[@]}"; do exec {fd}>&-; done
	VMM_PIDS=(); VFS_PIDS=(); FIFO_FDS=()
}
descendants() {
	local c
	for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
		echo "$c"
		descendants "$c"
	done
}
trap 'stop_all 2>/dev/null; rm -rf "$W"' EXIT

# ---- the tree, its checksum, and its ext4 image ----
TREE=$W/tree
nfiles=$((MIB * 4))
for i in $(seq 0 $((nfiles - 1))); do
	d=$TREE/d$((i % 8))
	[ -d "$d" ] || mkdir -p "$d"
	head -c 262144 /dev/urandom >"$d/f$i.bin"
done
WANT=$(cd "$TREE" && find . -type f | sort | xargs md5sum | md5sum | cut -c1-32)
IMG=$W/tree.img
mkfs.ext4 -q -F -E root_owner=0:0 -d "$TREE" "$IMG" $((MIB + MIB / 4 + 8))M >/dev/null ||
	die "mkfs.ext4 of the tree failed"
say "tree: $nfiles files, $MIB MiB, checksum $WANT; ext4 image $(($(stat -c %s "$IMG") / 1048576)) MiB"

# ---- the guest's hook, in an initramfs appended to the kit's ----
mkdir -p "$W/ov/test"
cat >"$W/ov/test/hook" <<'EOF'
#!/bin/sh
t() { echo "linux-test: $*"; }
cached() { sed -n 's/^Cached: *\([0-9]*\) kB/\1/p' /proc/meminfo; }
mode=$(sed -n 's/.*vs\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
mkdir -p /mnt/t
if [ "$mode" = disk ]; then
	mount -t ext4 -o ro /dev/vda /mnt/t 2>/tmp/err || { t "mount failed $(cat /tmp/err)"; exec sleep 100000; }
else
	mount -t virtiofs shared /mnt/t 2>/tmp/err || { t "mount failed $(cat /tmp/err)"; exec sleep 100000; }
fi
sync; echo 3 >/proc/sys/vm/drop_caches
t "ready cached_kb=$(cached)"
read go </dev/ttyS0
sum=$(cd /mnt/t && find . -type f | sort | xargs md5sum | md5sum | cut -c1-32)
t "read sum=$sum cached_kb=$(cached)"
exec sleep 100000
EOF
chmod 755 "$W/ov/test/hook"
(cd "$W/ov" && find . | cpio -o -H newc -R 0:0 --quiet | gzip) >"$W/ov.cpio.gz" || die "cpio failed"
cat "$SHOAL_KIT_INITRD" "$W/ov.cpio.gz" >"$W/initrd"

meminfo() { sed -n "s/^$1: *\([0-9]*\) kB/\1/p" /proc/meminfo; }
pss_of() {   # PSS in kB of the pids and all their descendants
	local p s=0 v
	for p in "$@" $(for q in "$@"; do descendants "$q"; done); do
		v=$(sed -n 's/^Pss: *\([0-9]*\) kB/\1/p' /proc/"$p"/smaps_rollup 2>/dev/null)
		s=$((s + ${v:-0}))
	done
	echo $s
}
resident_kb() {   # bytes of the files in memory (fincore), in kB
	fincore -b -n -o RES "$@" | awk '{s += $1} END {printf "%d\n", s / 1024}'
}
fact() { sed -n "s/.*linux-test: $2 //p" "$W/vm$1.log" | tr -d '\r' | tail -1; }
wait_one() {   # I WHAT: until VM I has "linux-test: WHAT" (bounded)
	local end=$((SECONDS + WAIT))
	while [ $SECONDS -lt $end ]; do
		grep -q "linux-test: $2" "$W/vm$1.log" 2>/dev/null && return 0
		if grep -q "linux-test: mount failed" "$W/vm$1.log" 2>/dev/null; then
			say "vm$1: $(grep -h "linux-test: mount failed" "$W/vm$1.log" | head -1)"
			return 1
		fi
		kill -0 "${VMM_PIDS[$1]}" 2>/dev/null || { say "vm$1 exited: $(tail -2 "$W/vm$1.vmm")"; return 1; }
		sleep 1
	done
	say "vm$1: no \"$2\" after ${WAIT}s"
	return 1
}

RESULTS=$W/results
: >"$RESULTS"
STATUS=0
run_variant() {
	local v=$1 i args sock cache data t0 fd
	say "== $v: $N VMs =="
	rm -f "$W"/vm*.log "$W"/vm*.vmm "$W"/disk*.img
	case $v in
	fs-auto) cache=auto ;;
	fs-none) cache=none ;;
	disk) cache="" ;;
	*) die "unknown variant $v" ;;
	esac
	if [ "$v" = disk ]; then
		for i in $(seq "$N"); do cp "$IMG" "$W/disk$i.img"; done
		data=("$W"/disk*.img)
	else
		data=("$TREE"/d*/*)
	fi
	sync; echo 3 >/proc/sys/vm/drop_caches
	local avail0
	avail0=$(meminfo MemAvailable)
	t0=$SECONDS
	for i in $(seq "$N"); do
		args=()
		if [ -n "$cache" ]; then
			sock=$W/vfs$i.sock
			nice -n 5 "$VIRTIOFSD" --socket-path="$sock" -o source="$TREE" -o cache=$cache \
				>"$W/virtiofsd$i.txt" 2>&1 &
			VFS_PIDS[$i]=$!
			for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
			[ -S "$sock" ] || die "virtiofsd $i: no socket: $(tail -2 "$W/virtiofsd$i.txt")"
			args=(--fs "tag=shared,socket=$sock")
			mode=fs
		else
			args=(--disk "$W/disk$i.img,readonly")
			mode=disk
		fi
		mkfifo "$W/fifo$i"
		exec {fd}<>"$W/fifo$i"
		FIFO_FDS[$i]=$fd
		nice -n 5 "$SHOAL" run --kernel "$SHOAL_KIT_VMLINUX" --initrd "$W/initrd" --cpus 1 --memory 256M \
			--cmdline "console=ttyS0 quiet kit.quiet kit.poweroff kit.run=/test/hook vs.mode=$mode" \
			--console stdio --timeout $((WAIT * N * 2 + 300)) "${args[@]}" \
			<"$W/fifo$i" >"$W/vm$i.log" 2>"$W/vm$i.vmm" &
		VMM_PIDS[$i]=$!
		# one boot at a time: ten at once on the box's one vCPU froze it
		if ! wait_one "$i" ready; then STATUS=1; stop_all 2>/dev/null; rm -f "$W"/fifo*; return; fi
	done
	local boot_s=$((SECONDS - t0))
	sleep 2
	local avail1 cached1 vmm1 vfs1 gc1=0
	avail1=$(meminfo MemAvailable); cached1=$(meminfo Cached)
	vmm1=$(pss_of "${VMM_PIDS[@]}"); vfs1=$( [ -n "$cache" ] && pss_of "${VFS_PIDS[@]}" || echo 0)
	for i in $(seq "$N"); do gc1=$((gc1 + $(fact "$i" ready | sed 's/.*cached_kb=//'))); done
	t0=$SECONDS
	for i in $(seq "$N"); do
		echo go >"$W/fifo$i"
		if ! wait_one "$i" "read sum="; then STATUS=1; stop_all 2>/dev/null; rm -f "$W"/fifo*; return; fi
	done
	local read_s=$((SECONDS - t0))
	sleep 2
	local avail2 cached2 vmm2 vfs2 res2 gc2=0 agree=0 s
	avail2=$(meminfo MemAvailable); cached2=$(meminfo Cached)
	vmm2=$(pss_of "${VMM_PIDS[@]}"); vfs2=$( [ -n "$cache" ] && pss_of "${VFS_PIDS[@]}" || echo 0)
	res2=$(resident_kb "${data[@]}")
	for i in $(seq "$N"); do
		s=$(fact "$i" read | sed 's/.*sum=\([0-9a-f]*\).*/\1/')
		gc2=$((gc2 + $(fact "$i" read | sed 's/.*cached_kb=//')))
		if [ "$s" = "$WANT" ]; then agree=$((agree + 1)); else say "vm$i: checksum $s, the host's $WANT"; STATUS=1; fi
	done
	echo "$v: $agree of $N guests read checksum $WANT (the host's); boot to ready ${boot_s}s, all reads ${read_s}s"
	# MiB: host copies of the data (resident data files), the guests' page
	# cache growth (their own count, summed), PSS of VMMs + virtiofsd at
	# ready and its growth on read, MemAvailable drop from before the VMs
	# started and on read, host Cached growth on read
	printf '%s %d %d %d %d %d %d %d %d %d %d %d\n' "$v" "$N" "$agree" \
		$((res2 / 1024)) $(((gc2 - gc1) / 1024)) $(((vmm1 + vfs1) / 1024)) \
		$(((vmm2 + vfs2 - vmm1 - vfs1) / 1024)) $(((vfs2 - vfs1) / 1024)) \
		$(((avail0 - avail2) / 1024)) $(((avail1 - avail2) / 1024)) $(((cached2 - cached1) / 1024)) \
		"$read_s" >>"$RESULTS"
	stop_all 2>/dev/null
	rm -f "$W"/fifo* "$W"/disk*.img
}

for v in ${VARIANTS//,/ }; do run_variant "$v"; done

echo
echo "tree: $nfiles files, $MIB MiB of random data; $N VMs of 256 MiB, 1 vCPU each; MiB = 2^20 bytes"
echo "host copies:  resident bytes of the data files (the tree's files, or the N image copies; tmpfs)"
echo "guest caches: the guests' own page cache (Cached) growth while reading, summed over the VMs"
echo "PSS:          the VMMs' and virtiofsd processes' PSS summed, at ready; +read: its growth on read"
echo "              (of which virtiofsd: vfsd; guest RAM is shared with virtiofsd, so PSS moves between them)"
echo "avail drop:   MemAvailable before the VMs started minus after the reads; +read: the drop on read"
printf '%-8s %4s %6s | %12s | %13s | %8s %8s %8s | %10s %8s | %12s | %7s\n' \
	variant VMs agree "host copies" "guest caches" PSS "+read" "(vfsd)" "avail drop" "+read" "host Cached" "read s"
while read -r v n agree res gcd pss pssd vfsd adrop aread cread rs; do
	printf '%-8s %4s %6s | %12s | %13s | %8s %8s %8s | %10s %8s | %12s | %7s\n' "$v" "$n" "$agree" "$res" "+$gcd" \
		"$pss" "+$pssd" "+$vfsd" "$adrop" "$aread" "+$cread" "$rs"
done <"$RESULTS"
exit $STATUS
