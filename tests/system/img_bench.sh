#!/bin/bash
# img_bench.sh - `shoal img bench` side by side with `qemu-img bench` on
# the same files.  In the fast suite it only checks that both tools run
# (tiny counts); BENCH_FULL=1 runs the matrix recorded in
# docs/benchmarks.md: raw, qcow2, and a qcow2 overlay over a qcow2 base;
# 4 KiB scattered reads and writes at queue depth 1 and 32, 64 KiB
# sequential at depth 8.  Never a pass/fail threshold on timings.
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] || { fail "build" "build/shoal missing"; finish; }
command -v qemu-img >/dev/null || { skip "bench" "qemu-img not installed"; finish; }
cd "$TMP" || exit 1
FULL=${BENCH_FULL:-0}
MB=$([ "$FULL" = 1 ] && echo 1024 || echo 64)
SIZE=${MB}M

fill() {	# fill IMAGE: write every byte (steady state, not first allocation)
	local sz=$MB
	for ((m = 0; m < sz; m += 256)); do
		"$SHOAL" img io -c "write -P $((m % 200 + 1)) ${m}M $(( sz - m < 256 ? sz - m : 256 ))M" "$1" >/dev/null
	done
}
"$SHOAL" img create -f raw raw.img $SIZE >/dev/null && fill raw.img
"$SHOAL" img create -f qcow2 q.qcow2 $SIZE >/dev/null && fill q.qcow2
"$SHOAL" img create -f qcow2 base.qcow2 $SIZE >/dev/null && fill base.qcow2
"$SHOAL" img create -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2 >/dev/null

STEP=1052672	# 1 MiB + 4 KiB: scattered 4 KiB requests, no read-ahead help
run() {		# run LABEL FMT FILE ARGS...
	local label=$1 fmt=$2 file=$3; shift 3
	local c=$([ "$FULL" = 1 ] && echo "$1" || echo 500); shift
	if out=$("$SHOAL" img bench --compare-qemu --rounds $([ "$FULL" = 1 ] && echo 5 || echo 1) \
		-f "$fmt" -c "$c" "$@" "$file" 2>&1); then
		echo "$out" | sed "s/^/  [$label] /" | grep -v Sending
		pass "bench $label"
	else
		fail "bench $label" "$(echo "$out" | tail -3)"
	fi
}
for img in "raw raw.img" "qcow2 q.qcow2" "overlay ov.qcow2"; do
	set -- $img; name=$1; file=$2; fmt=$([ $name = raw ] && echo raw || echo qcow2)
	run "$name 4k-scattered-read qd1" $fmt $file 20000 -d 1 -s 4k -S $STEP
	run "$name 4k-scattered-read qd32" $fmt $file 200000 -d 32 -s 4k -S $STEP
	run "$name 4k-scattered-write qd1" $fmt $file 20000 -d 1 -s 4k -S $STEP -w
	run "$name 4k-scattered-write qd32" $fmt $file 200000 -d 32 -s 4k -S $STEP -w
	run "$name 64k-seq-read qd8" $fmt $file 20000 -d 8 -s 64k
	run "$name 64k-seq-write qd8" $fmt $file 20000 -d 8 -s 64k -w
	[ "$FULL" = 1 ] || break
done
"$SHOAL" img check "$TMP/q.qcow2" >/dev/null && "$SHOAL" img check "$TMP/ov.qcow2" >/dev/null &&
	pass "images consistent after the benchmark" || fail "images after bench"
finish
