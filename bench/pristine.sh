#!/bin/bash
# bench/pristine.sh - disk reads served from pristine copies (issue 13 item
# 6, block/pristine.c, docs/block.md "Pristine-block cache"): the base-image
# bytes N clones read from the file when they boot from one base image,
# with the shared cache and without it.
#
# The base is a raw image of SECT sectors holding the vblk sector pattern.
# Each clone is the test guest ($BUILD/shoal-guest, 1 vCPU, 64M) on its own
# new qcow2 overlay of the base, booted with "vblk-verify SECT 42; exit 0":
# it reads the whole base through the overlay and checks every sector (a
# clone whose check fails stops the benchmark).  The clones run one after
# another, in three arms per round:
#
#   with     `--disk OV,pristine=DIR`, one DIR for all N clones
#   private  `--disk OV,pristine=DIRi`, a new empty DIR for each clone: the
#            same code and counters, but nothing shared, so each clone
#            reads from the file what a clone without the option reads
#   none     no option (start-to-exit time only: no counters)
#
# The bytes are the VMM's own count (`-v`: the cache's closing line, "bytes
# read from the file"), summed over the N clones; the time is each clone's
# `shoal run` from exec to exit.  Prints the medians over ROUNDS rounds and
# the ratios.  Figures, never checked.  Inside the box the page cache holds
# the base either way: the bytes are what the VMMs asked the files for, not
# what the disk delivered.
#
#   bench/pristine.sh [-n CLONES] [-s SECTORS] [-r ROUNDS]
#   (defaults: 10 clones, 2048 sectors = 1 MiB, the most vblk-verify reads; 3 rounds)
#
# Needs /dev/kvm (run it in the KVM box: scripts/kvm-box.sh --
# bench/pristine.sh) and python3; exits 77 without them.
set -u
. "$(dirname "$0")/lib.bash"
N=10; SECT=2048; ROUNDS=3
while getopts "n:s:r:" o; do
	case $o in n) N=$OPTARG ;; s) SECT=$OPTARG ;; r) ROUNDS=$OPTARG ;; *) exit 64 ;; esac
done
[ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] ||
	bench_skip "/dev/kvm is not available; run it in the KVM box: scripts/kvm-box.sh -- $0"
command -v python3 >/dev/null || bench_skip "python3 is not installed"
for f in shoal shoal-guest; do
	[ -x "$BUILD/$f" ] || { echo "$(basename "$0"): build $BUILD/$f first (make)" >&2; exit 1; }
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

python3 - "$TMP/base.raw" "$SECT" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for s in range(n):
        f.write((f"shoal vblk seed=42 sector={s}".ljust(511, '.') + "\n").encode())
PY

# clone I OPTS: one clone; prints "FILE_BYTES HITS MS" (0 0 MS without a cache)
clone() {
	local ov=$TMP/ov$1.qcow2 t0 t1 line fb h
	rm -f "$ov"
	"$BUILD/shoal" img create -f qcow2 -b "$TMP/base.raw" -F raw "$ov" >/dev/null || exit 1
	t0=$(date +%s%N)
	timeout 120 "$BUILD/shoal" run -v --kernel "$BUILD/shoal-guest" --memory 64M \
		--console "file:$TMP/c.log" --cmdline "vblk-verify $SECT 42; exit 0" --timeout 60 \
		--disk "$ov$2" </dev/null 2>"$TMP/c.err"
	t1=$(date +%s%N)
	grep -q "vblk-verify ok sectors=$SECT" "$TMP/c.log" ||
		{ echo "clone $1 ($2): the guest's check failed: $(tail -2 "$TMP/c.log")" >&2; exit 1; }
	line=$(grep -o "pristine cache .*" "$TMP/c.err" | head -1)
	fb=$(sed -n 's/.* \([0-9]*\) bytes read from the file.*/\1/p' <<<"$line")
	h=$(sed -n 's/.*: \([0-9]*\) hits.*/\1/p' <<<"$line")
	echo "${fb:-0} ${h:-0} $(((t1 - t0) / 1000000))"
}

echo "pristine-block cache: $N clones of one base image ($((SECT / 2)) KiB read by each), the test" \
     "guest, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
	mkdir "$TMP/shared$r"
	for arm in with private none; do
		sum=0; hits=0
		for i in $(seq "$N"); do
			case $arm in
			with) opt=",pristine=$TMP/shared$r" ;;
			private) mkdir "$TMP/p$r.$i"; opt=",pristine=$TMP/p$r.$i" ;;
			none) opt="" ;;
			esac
			read -r fb h ms <<<"$(clone "$i" "$opt")" || exit 1
			[ -n "$ms" ] || exit 1
			sum=$((sum + fb)); hits=$((hits + h))
			echo "$ms" >>"$TMP/ms.$arm"
		done
		echo "$sum" >>"$TMP/bytes.$arm"
		echo "$hits" >>"$TMP/hits.$arm"
		[ "$arm" = none ] && echo "  round $r none: (no counters without the option)" ||
			echo "  round $r $arm: $sum bytes read from the base file, $hits cache hits"
	done
	rm -rf "$TMP/shared$r" "$TMP"/p"$r".*
done
bw=$(median <"$TMP/bytes.with"); bp=$(median <"$TMP/bytes.private")
echo "base bytes read by $N clones (median of $ROUNDS): with $bw, without (private caches) $bp," \
     "without/with $(ratio "$bp" "$bw")"
echo "cache hits by $N clones (median): with $(median <"$TMP/hits.with"), without $(median <"$TMP/hits.private")"
echo "one clone, exec to exit, ms (median of $((N * ROUNDS))): with $(median <"$TMP/ms.with")," \
     "private $(median <"$TMP/ms.private"), none $(median <"$TMP/ms.none")"
