#!/bin/bash
# virtio_blk_direct.sh - virtio-blk on images opened with O_DIRECT on the
# host (`--disk FILE,direct`): the test guest's `vblk` driver writes its
# sector pattern and a zeroed range through `shoal run`, on raw and qcow2
# images and read-only, and the host checks what landed in the files, that
# none of it went through the page cache, and that a file system without
# O_DIRECT is refused with one clear line.
#
# The images live on a file system that takes O_DIRECT (/var/tmp, else the
# build directory): /tmp may be tmpfs, which before Linux 6.6 refuses it.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] && [ -f "$GUEST" ] || { skip "virtio-blk direct" "build/shoal or build/shoal-guest not built"; finish; }
[ -c /dev/kvm ] && [ -r /dev/kvm ] || { skip "virtio-blk direct" "/dev/kvm is not available"; finish; }
command -v python3 >/dev/null || { skip "virtio-blk direct" "python3 is needed to check the images"; finish; }

# direct_ok DIR: can a file in DIR be written with O_DIRECT?
direct_ok() {
	dd if=/dev/zero of="$1/probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null
	local rc=$?
	rm -f "$1/probe"
	return $rc
}

DDIR=
for base in /var/tmp "$ROOT/build"; do
	d=$(mktemp -d "$base/shoal-direct.XXXXXX" 2>/dev/null) || continue
	if direct_ok "$d"; then DDIR=$d; break; fi
	rmdir "$d"
done
trap 'rm -rf "$TMP" "$DDIR"' EXIT
[ -n "$DDIR" ] || { skip "virtio-blk direct" "neither /var/tmp nor build/ takes O_DIRECT"; finish; }

# guest CMDLINE LOG DISK-ARGS...: boot the test guest; returns shoal's status.
guest() {
	local cmd=$1 log=$2; shift 2
	timeout 120 "$SHOAL" run --kernel "$GUEST" --memory 256M --cmdline "$cmd" \
		--console "file:$log" --timeout 60 "$@" </dev/null 2>"$log.stderr"
}

report() { grep -o "shoal-guest: $2 .*" "$1" | head -1; }

# pattern_ok IMAGE(raw) SECTORS SEED: as in virtio_blk.sh - sector s holds
# "shoal vblk seed=SEED sector=s" padded with '.' to 511 bytes and a
# newline; the 8 sectors after the pattern are zero (write-zeroes).
pattern_ok() {
	python3 - "$1" "$2" "$3" <<'EOF'
import sys
img, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(img, 'rb').read()
for s in range(n):
    want = (f"shoal vblk seed={seed} sector={s}".ljust(511, '.') + "\n").encode()
    if data[s * 512:(s + 1) * 512] != want:
        sys.exit(f"sector {s} differs: {data[s * 512:s * 512 + 40]!r}")
if data[n * 512:(n + 8) * 512] != bytes(8 * 512):
    sys.exit("write-zeroes range is not zero")
EOF
}

# cached FILE: pages of FILE in the host page cache (empty if unknown).
cached() { command -v fincore >/dev/null && fincore -nb -o PAGES "$1" 2>/dev/null | tr -d ' '; }

HELP=$(guest "help; exit 0" "$TMP/help.log"; cat "$TMP/help.log")
grep -q "vblk" <<<"$HELP" || { skip "virtio-blk direct" "the test guest has no vblk command yet"; finish; }

# ---- raw, modern and legacy drivers ----
n=0
for gmode in auto legacy; do
	n=$((n + 1))
	img=$DDIR/raw$n.img
	truncate -s 4M "$img"
	seed=$((200 + n))
	guest "virtio-mode $gmode; vblk 128 $seed; exit 0" "$TMP/raw$n.log" \
		--disk "$img,direct,serial=direct-$n"; rc=$?
	name="raw, direct, driver $gmode"
	if [ "$rc" -eq 0 ] && grep -q "vblk ok .* serial=direct-$n ro=0 sectors=128" "$TMP/raw$n.log"; then
		pass "$name: vblk ok"
	else
		fail "$name" "rc=$rc $(report "$TMP/raw$n.log" vblk) $(head -c 300 "$TMP/raw$n.log.stderr")"
		continue
	fi
	pages=$(cached "$img")
	if [ -z "$pages" ]; then
		skip "$name: page cache" "fincore (util-linux) is not installed"
	else
		[ "$pages" -eq 0 ] && pass "$name: nothing of the image in the host page cache" \
			|| fail "$name: page cache" "$pages pages of the image are cached"
	fi
	why=$(pattern_ok "$img" 128 "$seed" 2>&1) && pass "$name: host file holds the guest's sectors" \
		|| fail "$name: host file" "$why"
done

# ---- a raw size off the 4 KiB alignment (145 sectors) ----
img=$DDIR/odd.img
truncate -s $((145 * 512)) "$img"
guest "vblk 128 31; exit 0" "$TMP/odd.log" --disk "$img,direct"; rc=$?
size=$(stat -c %s "$img")
[ "$rc" -eq 0 ] && grep -q "vblk ok .* capacity=145 " "$TMP/odd.log" && [ "$size" -eq $((145 * 512)) ] \
	&& pattern_ok "$img" 128 31 && pass "raw of 145 sectors, direct: pattern lands, size unchanged" \
	|| fail "odd-sized raw" "rc=$rc size=$size $(report "$TMP/odd.log" vblk)"

# ---- qcow2: metadata and data through one O_DIRECT fd ----
if command -v qemu-img >/dev/null; then
	q=$DDIR/disk.qcow2
	qemu-img create -q -f qcow2 "$q" 16M
	guest "vblk 2048 19; exit 0" "$TMP/q.log" --disk "$q,direct,serial=qd"; rc=$?
	[ "$rc" -eq 0 ] && grep -q "vblk ok mode=modern capacity=32768 serial=qd" "$TMP/q.log" \
		&& pass "qcow2, direct: vblk ok over 2048 sectors" \
		|| fail "qcow2 direct" "rc=$rc $(report "$TMP/q.log" vblk) $(head -c 300 "$TMP/q.log.stderr")"
	qemu-img check -q "$q" && pass "qcow2, direct: qemu-img check is clean" || fail "qcow2 direct: qemu-img check"
	qemu-img convert -O raw "$q" "$TMP/q.raw"
	why=$(pattern_ok "$TMP/q.raw" 2048 19 2>&1) && pass "qcow2, direct: contents read back by qemu-img" \
		|| fail "qcow2 direct contents" "$why"
else
	skip "qcow2 direct" "qemu-img is not installed"
fi

# ---- read-only ----
head -c 1M /dev/urandom >"$DDIR/ro.img"
before=$(md5sum <"$DDIR/ro.img")
guest "vblk; exit 0" "$TMP/ro.log" --disk "$DDIR/ro.img,readonly,direct"; rc=$?
[ "$rc" -eq 0 ] && grep -q "vblk ok .* ro=1" "$TMP/ro.log" && pass "read-only, direct: guest sees ro=1" \
	|| fail "read-only direct" "rc=$rc $(report "$TMP/ro.log" vblk)"
[ "$before" = "$(md5sum <"$DDIR/ro.img")" ] && pass "read-only, direct: image unchanged" \
	|| fail "read-only direct: image changed"

# ---- a file system without O_DIRECT: one line, exit 66 ----
shm=$(mktemp -d /dev/shm/shoal-direct.XXXXXX 2>/dev/null)
if [ -z "$shm" ]; then
	skip "no O_DIRECT" "/dev/shm is not writable"
elif direct_ok "$shm"; then
	skip "no O_DIRECT" "tmpfs here takes O_DIRECT (Linux >= 6.6): nothing to refuse"
else
	truncate -s 1M "$shm/x.img"
	out=$("$SHOAL" run --kernel "$GUEST" --disk "$shm/x.img,direct" 2>&1 </dev/null); rc=$?
	[ "$rc" -eq 66 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "x.img.*O_DIRECT" <<<"$out" \
		&& pass "no O_DIRECT on tmpfs: exit 66, one line ($out)" || fail "no O_DIRECT" "rc=$rc $out"
fi
[ -n "$shm" ] && rm -rf "$shm"
finish
