#!/bin/bash
# virtio_blk.sh - virtio-blk (and virtio-console) end to end: the test guest's
# `vblk` and `vcon` drivers against Shoal's devices, in every interface mode
# (transitional device driven as legacy and as modern, legacy-only,
# modern-only), on raw and qcow2 images; then the host checks what landed in
# the files: the guest's sector pattern, the zeroed range, an untouched
# read-only image, and `qemu-img check` on the qcow2 image.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] && [ -f "$GUEST" ] || { skip "virtio-blk" "build/shoal or build/shoal-guest not built"; finish; }
[ -c /dev/kvm ] && [ -r /dev/kvm ] || { skip "virtio-blk" "/dev/kvm is not available"; finish; }
command -v python3 >/dev/null || { skip "virtio-blk" "python3 is needed to check the images"; finish; }

# guest CMDLINE LOG DISK-ARGS...: boot the test guest; returns shoal's status.
guest() {
	local cmd=$1 log=$2; shift 2
	timeout 120 "$SHOAL" run --kernel "$GUEST" --memory 256M --cmdline "$cmd" \
		--console "file:$log" --timeout 60 "$@" </dev/null 2>"$log.stderr"
}

# report LOG WORD: the guest's report line starting with WORD.
report() { grep -o "shoal-guest: $2 .*" "$1" | head -1; }

# pattern_ok IMAGE(raw) SECTORS SEED: sector s holds "shoal vblk seed=SEED
# sector=s" padded with '.' to 511 bytes and a newline; the 8 sectors after
# the pattern are zero (write-zeroes).
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

HELP=$(guest "help; exit 0" "$TMP/help.log"; cat "$TMP/help.log")
if ! grep -q "vblk" <<<"$HELP"; then
	skip "virtio-blk" "the test guest has no vblk command yet"
	finish
fi

# ---- raw image, each interface mode ----
# disk mode : guest driver mode : expected mode in the report
n=0
for m in transitional:auto:modern transitional:legacy:legacy transitional:modern:modern \
	 legacy:auto:legacy modern:auto:modern modern:legacy:none; do
	IFS=: read -r dmode gmode want <<<"$m"
	n=$((n + 1))
	img=$TMP/raw$n.img
	truncate -s 4M "$img"
	seed=$((100 + n))
	guest "virtio-mode $gmode; vblk 128 $seed; exit 0" "$TMP/raw$n.log" \
		--disk "$img,serial=disk-$n,mode=$dmode"; rc=$?
	line=$(report "$TMP/raw$n.log" vblk)
	name="raw, device $dmode, driver $gmode"
	if [ "$want" = none ]; then
		# a modern-only device has no legacy interface: the driver finds nothing
		grep -q "error vblk: .*no legacy interface" "$TMP/raw$n.log" && ! grep -q "vblk ok" "$TMP/raw$n.log" \
			&& pass "$name: the driver finds no legacy interface" \
			|| fail "$name" "expected no legacy interface: $(tail -2 "$TMP/raw$n.log")"
		continue
	fi
	if [ "$rc" -eq 0 ] && grep -q "vblk ok mode=$want capacity=8192 serial=disk-$n ro=0 sectors=128" <<<"$line"; then
		pass "$name: vblk ok (mode=$want)"
	else
		fail "$name" "rc=$rc ${line:-$(tail -3 "$TMP/raw$n.log")}"
		continue
	fi
	why=$(pattern_ok "$img" 128 "$seed" 2>&1) && pass "$name: host file holds the guest's sectors" \
		|| fail "$name: host file" "$why"
done

# ---- several queues, two disks: the second one is dev=1 ----
truncate -s 2M "$TMP/a.img"; truncate -s 2M "$TMP/b.img"
guest "vblk 64 7 dev=1; vdevs; exit 0" "$TMP/two.log" --disk "$TMP/a.img,queues=4" \
	--disk "$TMP/b.img,queues=2"; rc=$?
[ "$rc" -eq 0 ] && grep -q "vblk ok" "$TMP/two.log" && pattern_ok "$TMP/b.img" 64 7 \
	&& cmp -s "$TMP/a.img" <(head -c 2M /dev/zero) \
	&& pass "two disks with 4 and 2 queues: dev=1 is the second image" \
	|| fail "two disks" "rc=$rc $(report "$TMP/two.log" vblk)"

# ---- qcow2 ----
if command -v qemu-img >/dev/null; then
	q=$TMP/disk.qcow2
	qemu-img create -q -f qcow2 "$q" 16M
	guest "vblk 2048 9; exit 0" "$TMP/q.log" --disk "$q,serial=qc"; rc=$?
	[ "$rc" -eq 0 ] && grep -q "vblk ok mode=modern capacity=32768 serial=qc" "$TMP/q.log" \
		&& pass "qcow2: vblk ok over 2048 sectors" || fail "qcow2" "rc=$rc $(report "$TMP/q.log" vblk)"
	qemu-img check -q "$q" && pass "qcow2: qemu-img check is clean" || fail "qcow2: qemu-img check"
	qemu-img convert -O raw "$q" "$TMP/q.raw"
	why=$(pattern_ok "$TMP/q.raw" 2048 9 2>&1) && pass "qcow2: contents read back by qemu-img" \
		|| fail "qcow2 contents" "$why"
	guest "virtio-mode legacy; vblk 64 10; exit 0" "$TMP/q2.log" --disk "$q"; rc=$?
	[ "$rc" -eq 0 ] && qemu-img check -q "$q" && pass "qcow2: legacy driver, image still clean" \
		|| fail "qcow2 legacy" "rc=$rc $(report "$TMP/q2.log" vblk)"
else
	skip "qcow2" "qemu-img is not installed"
fi

# ---- read-only ----
head -c 1M /dev/urandom >"$TMP/ro.img"
before=$(md5sum <"$TMP/ro.img")
guest "vblk; exit 0" "$TMP/ro.log" --disk "$TMP/ro.img,readonly"; rc=$?
[ "$rc" -eq 0 ] && grep -q "vblk ok .* ro=1" "$TMP/ro.log" && pass "read-only: writes refused, guest sees ro=1" \
	|| fail "read-only" "rc=$rc $(report "$TMP/ro.log" vblk)"
[ "$before" = "$(md5sum <"$TMP/ro.img")" ] && pass "read-only: image unchanged" || fail "read-only: image changed"

# ---- hostile requests: broken rings stop the device, a reset recovers it ----
if grep -q "vhostile" <<<"$HELP"; then
	truncate -s 1M "$TMP/h.img"
	guest "vhostile all; virtio-mode legacy; vhostile all; exit 0" "$TMP/h.log" \
		--disk "$TMP/h.img" --rng; rc=$?
	good=$(grep -c "vhostile .* recovered=1 others=ok" "$TMP/h.log")
	[ "$rc" -eq 0 ] && [ "$good" -eq 10 ] \
		&& pass "hostile rings (5 kinds, modern and legacy): device stopped, recovered after reset" \
		|| fail "hostile rings" "rc=$rc, $good of 10 recovered: $(grep -m1 -v "recovered=1" <(grep vhostile "$TMP/h.log"))"
else
	skip "hostile rings" "the test guest has no vhostile command yet"
fi

# ---- errors at VM creation ----
out=$("$SHOAL" run --kernel "$GUEST" --disk "$TMP/missing.img" 2>&1 </dev/null); rc=$?
[ "$rc" -eq 66 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "missing.img" <<<"$out" \
	&& pass "missing image: exit 66, one line ($out)" || fail "missing image" "rc=$rc $out"

# ---- virtio-console ----
if grep -q "vcon" <<<"$HELP"; then
	printf 'typed-on-the-host\n' >"$TMP/con.in"
	guest "vcon hello from vcon; virtio-mode legacy; vcon second line; exit 0" "$TMP/con.log" \
		--virtio-console "file:$TMP/con.out,in=$TMP/con.in"; rc=$?
	[ "$rc" -eq 0 ] && [ "$(cat "$TMP/con.out")" = "hello from vcon
second line" ] && pass "virtio-console: modern and legacy output lands in the file" \
		|| fail "virtio-console output" "rc=$rc $(head -c 200 "$TMP/con.out" 2>/dev/null)"
	grep -q "vcon ok mode=modern wrote=16 read=18 text=typed-on-the-host" "$TMP/con.log" \
		&& pass "virtio-console: input file reaches the guest" \
		|| fail "virtio-console input" "$(report "$TMP/con.log" vcon)"
else
	skip "virtio-console" "the test guest has no vcon command yet"
fi
finish
