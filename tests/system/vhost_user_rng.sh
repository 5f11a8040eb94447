#!/bin/bash
# tests/system/vhost_user_rng.sh - `shoal vhost-user`'s command line (flags,
# statuses, messages), then Shoal's virtio-rng model served to QEMU's
# vhost-user-rng-pci and read by Linux's virtio_rng driver (/dev/hwrng).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vhost_user_lib.bash"

# expect_usage NAME STATUS WORDS ARGS...: shoal exits STATUS and says WORDS.
expect_usage() {
	local name=$1 want=$2 words=$3 out rc
	shift 3
	out=$(timeout 10 "$SHOAL" vhost-user "$@" 2>&1); rc=$?
	if [ $rc -eq "$want" ] && echo "$out" | grep -q -- "$words"; then pass "cli: $name"
	else fail "cli: $name" "status $rc (want $want): $out"; fi
}

if [ -x "$SHOAL" ]; then
	expect_usage "no device" 64 "which device" 
	expect_usage "unknown device" 64 "not a vhost-user device" foo --socket "$TMP/s"
	expect_usage "no --socket" 64 "--socket PATH is required" rng
	expect_usage "blk without --disk" 64 "--disk FILE is required" blk --socket "$TMP/s"
	expect_usage "--disk for rng" 64 "--disk is for vhost-user blk" rng --socket "$TMP/s" --disk x
	expect_usage "two --disk" 64 "one --disk" blk --socket "$TMP/s" --disk a --disk b
	expect_usage "unknown option" 64 "unknown option" rng --socket "$TMP/s" --bogus
	expect_usage "bad --rate" 64 "--rate" rng --socket "$TMP/s" --rate 0
	expect_usage "net with a closed fd" 64 "not an open file descriptor" net --socket "$TMP/s" --net fd=99
	expect_usage "missing image" 66 "nonexistent" blk --socket "$TMP/s" --disk "$TMP/nonexistent.img"
	expect_usage "socket in a missing directory" 70 "cannot listen" rng --socket "$TMP/no/such/dir/s"
	expect_usage "--help" 0 "usage: shoal vhost-user" --help
	check "cli: no socket left behind by failures" test ! -e "$TMP/s"
fi

vu_require vhost-user-rng-pci
SOCK=$TMP/rng.sock
vu_initrd "$TMP/initrd" '
echo "vu-test: current $(cat /sys/class/misc/hw_random/rng_current)"
dd if=/dev/hwrng of=/tmp/r1 bs=1024 count=16 2>/dev/null
dd if=/dev/hwrng of=/tmp/r2 bs=1024 count=16 2>/dev/null
echo "vu-test: bytes $(cat /tmp/r1 | wc -c)"
echo "vu-test: zero $(tr -d "\000" </tmp/r1 | wc -c)"
cmp -s /tmp/r1 /tmp/r2 && echo "vu-test: same" || echo "vu-test: differ"'
vu_backend rng rng --socket "$SOCK" || finish
PID=$VU_PID
vu_qemu "$TMP/boot.log" "$TMP/initrd" -chardev "socket,id=c0,path=$SOCK" \
	-device vhost-user-rng-pci,chardev=c0; rc=$?
L=$TMP/boot.log
check "guest ran to its end (qemu status $rc)" grep -q "^vu-test: done" "$L"
check "Linux uses the vhost-user rng" test "$(vu_line "$L" current)" = virtio_rng.0
check "16 KiB read from /dev/hwrng" test "$(vu_line "$L" bytes)" = 16384
check "the bytes are not zeros" test "$(vu_line "$L" zero)" -gt 16000
check "two reads differ" grep -q "^vu-test: differ" "$L"
check "QEMU did not warn about the back end" test ! -s "$L.qemu"
kill -INT "$PID"; wait "$PID"; rc=$?
check "SIGINT stops the back end with status 0" test $rc -eq 0
check "back end logged connect, disconnect and the stop" \
	grep -q "front end disconnected" "$TMP/rng.log"
finish
