#!/bin/bash
# bench/store_stream_boot.sh - a Linux guest on a disk that streams from an
# image server, against the same image local (issue 14 item 4, docs/store.md
# "Streaming into a VM"; figures in docs/benchmarks.md).
#
# The image: an ext4 file system of SIZE MiB (mkfs.ext4 -d) holding about
# DATA MiB of real files copied from this host's /usr (libraries, Python,
# shared data: what a root file system holds) and a static program
# (tests/linux/vsock_echo), imported into a store and served by `shoal
# store serve` on loopback (mutual TLS, certificates made here).  The guest
# is the guest kit's Debian kernel and busybox initramfs: its init runs from
# the initramfs, so no disk block is needed to reach init.  The measurement
# point is therefore the first real use of the disk: the guest's hook
# mounts the ext4 (read-write, on a qcow2 overlay) and runs the program
# from it, then reports "bench: ran".
#
# Each round boots, in turn:
#   local     the overlay over the image as a local raw file
#   stream    the overlay over store:https://127.0.0.1:PORT/fs with an empty
#             cache, prefetch off: every block the guest reads is fetched
#             on demand, one chunk per request
#   prefetch  the same with prefetch on (the default), an empty cache
#   probe     an empty cache, prefetch off, and a hook that does nothing:
#             what the kernel read before init (its partition scan)
# and records: the time from `shoal run` to the "bench: ran" line on the
# console (host clock: VMM start, manifest fetch, kernel boot, mount and
# program included), the guest's own mount-and-run time (its clock, from
# before `mount` to after the program), and from the VMM's counters line at
# its exit (the guest powers off right after the point): the bytes fetched
# and their share of the image.  Medians over the rounds; ratios against
# local.  Figures, never checked; in the KVM box only ratios mean anything.
#
#   bench/store_stream_boot.sh [-s SIZE_MIB] [-d DATA_MIB] [-n ROUNDS]   (256, 96, 3)
#   scripts/kvm-box.sh -q --cpus 1 -- env BUILD=$PWD/build bench/store_stream_boot.sh
set -u
. "$(dirname "$0")/lib.bash"
SIZE=256
DATA=96
ROUNDS=3
BENCH_CPUS=1
while getopts s:d:n: o; do
	case $o in
	s) SIZE=$OPTARG ;;
	d) DATA=$OPTARG ;;
	n) ROUNDS=$OPTARG ;;
	*) echo "usage: $0 [-s SIZE_MIB] [-d DATA_MIB] [-n ROUNDS]" >&2; exit 64 ;;
	esac
done
bench_require_linux
for t in mkfs.ext4 openssl python3; do
	command -v $t >/dev/null || bench_skip "$t is not installed"
done
SHOAL=$BUILD/shoal
TMP=$(mktemp -d /tmp/shoal-bench-stream.XXXXXX)
SPID=
trap 'bench_cleanup_all' EXIT
bench_cleanup_all() {
	[ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
	bench_cleanup
}
cd "$TMP" || exit 1

mk() {
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key -out $1.csr -subj /CN=$1 2>/dev/null &&
		openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $1.pem -days 2 \
			-extfile <(echo "$2") 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
	-subj /CN=bench-ca 2>/dev/null && mk server "subjectAltName=IP:127.0.0.1" &&
	mk client "extendedKeyUsage=clientAuth" || exit 1

# ---- the image: real files from /usr, the program ----
mkdir -p src/bin
cp "$BUILD/tests/linux/vsock_echo" src/bin/ || { echo "build tests/linux first (make tests)" >&2; exit 1; }
DATA=$DATA python3 - <<'EOF' || exit 1
import os, shutil
want, got = int(os.environ['DATA']) << 20, 0
for top in ('/usr/lib/x86_64-linux-gnu', '/usr/lib/python3', '/usr/share'):
    for d, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if got >= want or os.path.islink(p) or not os.path.isfile(p) or \
                    os.path.getsize(p) > min(8 << 20, want - got):
                continue
            q = os.path.join('src', p.lstrip('/'))
            os.makedirs(os.path.dirname(q), exist_ok=True)
            try:
                shutil.copyfile(p, q)
                got += os.path.getsize(q)
            except OSError:
                pass
print("files: %d MiB" % (got >> 20))
EOF
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -d src fs.img "${SIZE}M" >/dev/null || exit 1
rm -rf src
"$SHOAL" store init st >/dev/null && "$SHOAL" store add st fs.img --name fs >/dev/null &&
	"$SHOAL" store grant st client.pem fs >/dev/null || exit 1
"$SHOAL" store serve st --listen 127.0.0.1:0 --cert server.pem --key server.key --client-ca ca.pem \
	>serve.out 2>serve.err &
SPID=$!
for _ in $(seq 100); do grep -q '^serving' serve.out 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/.*https:\/\/127.0.0.1:\([0-9]*\) .*/\1/p' serve.out)
[ -n "$PORT" ] || { cat serve.err >&2; exit 1; }
IMG_BYTES=$(stat -c %s fs.img)

BENCH_INITRD=$TMP/use.img
bench_initrd "$BENCH_INITRD" '
mkdir -p /mnt/s
t0=$(now_us)
mount -t ext4 /dev/vda /mnt/s || r "mount failed"
/mnt/s/bin/vsock_echo >/dev/null 2>&1
t1=$(now_us)
r ran $((t1 - t0))
umount /mnt/s'
bench_initrd "$TMP/probe.img" ':'

now_ns() { date +%s%N; }
counts() { sed -n 's/.*fetched \([0-9]*\) chunks on demand, \([0-9]*\) by prefetch, \([0-9]*\) bytes .*/\1 \2 \3/p' "$1" | tail -1; }

# boot MODE ROUND: one boot; appends to $TMP/MODE.{wall,guest,bytes}
boot() {
	local mode=$1 k=$2 log=$TMP/$1.$2.log src t0 t1 dem pre bytes
	src="store:https://127.0.0.1:$PORT/fs,cache=$TMP/cache.$mode.$k,cert=$TMP/client.pem,key=$TMP/client.key,ca=$TMP/ca.pem"
	case $mode in
	local) "$SHOAL" img create -q -f qcow2 -b "$TMP/fs.img" -F raw "$TMP/ov.$mode.$k.qcow2" ;;
	prefetch) "$SHOAL" img create -q -f qcow2 -b "$src" -F raw "$TMP/ov.$mode.$k.qcow2" 2>/dev/null ;;
	*) "$SHOAL" img create -q -f qcow2 -b "$src,prefetch=off" -F raw "$TMP/ov.$mode.$k.qcow2" 2>/dev/null ;;
	esac
	# the overlay's creation opened the source once (its size): start from an empty cache
	rm -rf "$TMP/cache.$mode.$k"
	BENCH_INITRD=$TMP/use.img
	[ "$mode" = probe ] && BENCH_INITRD=$TMP/probe.img
	t0=$(now_ns)
	bench_shoal "$log" --disk "$TMP/ov.$mode.$k.qcow2"
	if [ "$mode" = probe ]; then
		bench_wait "$log" done || { echo "$mode $k: no done; $(tail -3 "$log.vmm")" >&2; bench_stop; return 1; }
	else
		while ! grep -q "bench: ran" "$log" 2>/dev/null && kill -0 "$BENCH_PID" 2>/dev/null; do sleep 0.02; done
		t1=$(now_ns)
		grep -q "bench: ran" "$log" || { echo "$mode $k: no ran; $(tail -3 "$log.vmm")" >&2; bench_stop; return 1; }
		echo $(((t1 - t0) / 1000000)) >>"$TMP/$mode.wall"
		bench_facts "$log" ran | awk '{ print $1 / 1000 }' >>"$TMP/$mode.guest"
	fi
	# the kit powers off after the hook; the counters line comes at the VMM's exit
	for _ in $(seq 300); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.1; done
	bench_stop
	read -r dem pre bytes < <(counts "$log.vmm")
	[ "$mode" = local ] || echo "${bytes:-0}" >>"$TMP/$mode.bytes"
	printf '%-8s round %d: %s ms to ran, guest mount+run %s ms, fetched %s bytes (%s on demand, %s by prefetch)\n' \
		"$mode" "$k" "$(tail -1 "$TMP/$mode.wall" 2>/dev/null || echo -)" \
		"$(tail -1 "$TMP/$mode.guest" 2>/dev/null || echo -)" "${bytes:--}" "${dem:--}" "${pre:--}"
}

modes=(local stream prefetch probe)
for k in $(seq "$ROUNDS"); do
	for i in "${!modes[@]}"; do	# the order rotates every round
		boot "${modes[$(((i + k) % ${#modes[@]}))]}" "$k"
	done
done

echo
echo "image: ${SIZE} MiB ext4 ($IMG_BYTES bytes), ~${DATA} MiB of files from /usr; $ROUNDS rounds, medians"
lw=$(median <"$TMP/local.wall")
lg=$(median <"$TMP/local.guest")
printf '%-9s %10s %8s %14s %8s %12s %8s\n' mode "to ran ms" ratio "mount+run ms" ratio "fetched MiB" share
for m in local stream prefetch probe; do
	w=$(cat "$TMP/$m.wall" 2>/dev/null | median)
	g=$(cat "$TMP/$m.guest" 2>/dev/null | median)
	b=$(cat "$TMP/$m.bytes" 2>/dev/null | median)
	[ "$m" = probe ] && w=- && g=-
	printf '%-9s %10s %8s %14s %8s %12s %8s\n' "$m" "$w" "$( [ "$w" = - ] && echo - || ratio "$w" "$lw")" \
		"$g" "$( [ "$g" = - ] && echo - || ratio "$g" "$lg")" \
		"$( [ "$m" = local ] && echo - || awk -v b="$b" 'BEGIN { printf "%.2f", b / 1048576 }')" \
		"$( [ "$m" = local ] && echo - || awk -v b="$b" -v s="$IMG_BYTES" 'BEGIN { printf "%.2f %%", 100 * b / s }')"
done
