#!/bin/bash
# img_interop.sh - `shoal img` against QEMU's own tools, both ways:
#  1. every image qemu-img makes (v2/v3, 4k..2M clusters, zlib/zstd
#     compression, extended L2, backing chains, internal snapshots) reads
#     back in Shoal exactly like the raw reference;
#  2. every image Shoal writes passes `qemu-img check` and matches the
#     reference under `qemu-img compare`.
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] || { fail "build" "build/shoal missing"; finish; }
command -v qemu-img >/dev/null || { skip "interop" "qemu-img not installed"; finish; }

# A 24 MiB reference: random data with zero holes and a tail of zeros.
REF=$TMP/ref.raw
head -c $((24 << 20)) /dev/zero >"$REF"
for i in 0 3 4 9 10 11 15 20; do
	dd if=/dev/urandom of="$REF" bs=512k seek=$((i * 2)) count=1 conv=notrunc status=none
done
dd if=/dev/urandom of="$REF" bs=1k seek=5000 count=3 conv=notrunc status=none

# ---- 1. qemu-img writes, Shoal reads ----
qemu_matrix() {
	local name=$1; shift
	local img=$TMP/q-$name.qcow2
	if ! qemu-img convert -O qcow2 "$@" "$REF" "$img" 2>"$TMP/err"; then
		skip "qemu->shoal $name" "qemu-img cannot make it: $(head -1 "$TMP/err")"; return
	fi
	if "$SHOAL" img compare "$REF" "$img" >"$TMP/out" 2>&1; then
		pass "qemu->shoal $name reads identically"
	else
		fail "qemu->shoal $name" "$(cat "$TMP/out")"
	fi
}
qemu_matrix v2-64k -o compat=0.10
qemu_matrix v3-64k -o compat=1.1
qemu_matrix v3-4k -o cluster_size=4k
qemu_matrix v3-512 -o cluster_size=512
qemu_matrix v3-2M -o cluster_size=2M
qemu_matrix v3-rb1 -o refcount_bits=1
qemu_matrix v3-rb64 -o refcount_bits=64
qemu_matrix extl2-64k -o extended_l2=on
qemu_matrix extl2-2M -o extended_l2=on,cluster_size=2M
qemu_matrix zlib -c -o compression_type=zlib
qemu_matrix zstd -c -o compression_type=zstd
qemu_matrix zstd-4k -c -o compression_type=zstd,cluster_size=4k
qemu_matrix zlib-v2 -c -o compat=0.10
qemu_matrix zlib-2M -c -o cluster_size=2M
qemu_matrix lazy -o lazy_refcounts=on
qemu_matrix prealloc-meta -o preallocation=metadata

# Zero clusters, subcluster writes and a three-level chain made by qemu-io.
qemu-img create -q -f raw "$TMP/qbase.raw" 24M
dd if="$REF" of="$TMP/qbase.raw" conv=notrunc status=none
cp "$REF" "$TMP/qexpect.raw"
qemu-img create -q -f qcow2 -b qbase.raw -F raw "$TMP/qmid.qcow2"
qemu-img create -q -f qcow2 -o extended_l2=on -b qmid.qcow2 -F qcow2 "$TMP/qtop.qcow2"
qemu-io -f qcow2 -c "write -P 0x5a 1M 64k" -c "write -z 2M 128k" "$TMP/qmid.qcow2" >/dev/null
qemu-io -f qcow2 -c "write -P 0x33 1100k 4k" -c "write -z 2100k 2k" -c "discard 6M 64k" \
	-c "write -P 0x77 10M 3k" "$TMP/qtop.qcow2" >/dev/null
# the same operations on a raw copy give the expected image
qemu-io -f raw -c "write -P 0x5a 1M 64k" -c "write -z 2M 128k" -c "write -P 0x33 1100k 4k" \
	-c "write -z 2100k 2k" -c "write -z 6M 64k" -c "write -P 0x77 10M 3k" "$TMP/qexpect.raw" >/dev/null
if "$SHOAL" img compare -F raw "$TMP/qtop.qcow2" "$TMP/qexpect.raw" >"$TMP/out" 2>&1; then
	pass "qemu->shoal raw<-qcow2<-qcow2(extended L2) chain with zero writes, discards, subclusters"
else
	fail "qemu->shoal chain" "$(cat "$TMP/out")"
fi

# Internal snapshots made by qemu-img: list and read each one.
cp "$TMP/q-v3-64k.qcow2" "$TMP/qsnap.qcow2"
qemu-img snapshot -c first "$TMP/qsnap.qcow2"
qemu-io -c "write -P 0xee 0 1M" "$TMP/qsnap.qcow2" >/dev/null
qemu-img snapshot -c second "$TMP/qsnap.qcow2"
"$SHOAL" img snapshot -l "$TMP/qsnap.qcow2" >"$TMP/out" 2>&1
grep -q first "$TMP/out" && grep -q second "$TMP/out" && pass "qemu snapshots listed" ||
	fail "qemu snapshots listed" "$(cat "$TMP/out")"
"$SHOAL" img convert -l first -O raw "$TMP/qsnap.qcow2" "$TMP/snap1.raw" &&
	cmp -s "$TMP/snap1.raw" "$REF" && pass "qemu snapshot 'first' reads as the reference" ||
	fail "qemu snapshot read" "differs"
"$SHOAL" img io -r -c "read -P 0xee 0 1M" "$TMP/qsnap.qcow2" >/dev/null &&
	pass "active layer after qemu snapshot" || fail "active layer after qemu snapshot"

# ---- 2. Shoal writes, qemu-img checks ----
shoal_matrix() {
	local name=$1; shift
	local img=$TMP/s-$name.qcow2 ok=1
	"$SHOAL" img convert -O qcow2 "$@" "$REF" "$img" >"$TMP/out" 2>&1 || { fail "shoal->qemu $name" "convert: $(cat "$TMP/out")"; return; }
	qemu-img check -q "$img" >"$TMP/out" 2>&1 || { ok=0; fail "shoal->qemu $name check" "$(cat "$TMP/out")"; }
	qemu-img compare -q "$REF" "$img" >"$TMP/out" 2>&1 || { ok=0; fail "shoal->qemu $name compare" "$(cat "$TMP/out")"; }
	[ $ok = 1 ] && pass "shoal->qemu $name: qemu-img check and compare"
}
shoal_matrix v3-64k
shoal_matrix v2-64k -o compat=0.10
shoal_matrix v3-4k -o cluster_size=4k
shoal_matrix v3-512-rb64 -o cluster_size=512,refcount_bits=64
shoal_matrix v3-2M -o cluster_size=2M
shoal_matrix extl2 -o extended_l2=on
shoal_matrix zlib -c
shoal_matrix zstd -c -o compression_type=zstd
shoal_matrix zstd-4k -c -o compression_type=zstd,cluster_size=4k
shoal_matrix prealloc-meta -o preallocation=metadata
shoal_matrix prealloc-full -o preallocation=full,cluster_size=256k

# Shoal overlays: writes on top of a qemu-made base, then a Shoal commit.
"$SHOAL" img create -q -f qcow2 -b q-v3-64k.qcow2 -F qcow2 "$TMP/sov.qcow2" >/dev/null
cp "$REF" "$TMP/sexpect.raw"
CMDS=(-c "write -P 0x42 100k 200k" -c "write -z 1M 64k" -c "discard 4M 1M" -c "write -P 0x99 23M 1000" -c flush)
"$SHOAL" img io "${CMDS[@]}" "$TMP/sov.qcow2" >/dev/null
qemu-io -f raw -c "write -P 0x42 100k 200k" -c "write -z 1M 64k" -c "write -z 4M 1M" \
	-c "write -P 0x99 23M 1000" "$TMP/sexpect.raw" >/dev/null
qemu-img check -q "$TMP/sov.qcow2" && qemu-img compare -q "$TMP/sexpect.raw" "$TMP/sov.qcow2" &&
	pass "shoal overlay on a qemu base: qemu-img check and compare" ||
	fail "shoal overlay on a qemu base"
# internal snapshots made by Shoal read by qemu
"$SHOAL" img snapshot -c snap1 "$TMP/sov.qcow2" >/dev/null
"$SHOAL" img io -c "write -P 0x11 0 2M" "$TMP/sov.qcow2" >/dev/null
qemu-img check -q "$TMP/sov.qcow2" && qemu-img snapshot -l "$TMP/sov.qcow2" | grep -q snap1 &&
	qemu-img convert -l snap1 -O raw "$TMP/sov.qcow2" "$TMP/sov-snap.raw" &&
	cmp -s "$TMP/sov-snap.raw" "$TMP/sexpect.raw" &&
	pass "shoal snapshot: qemu lists and reads it" || fail "shoal snapshot read by qemu"
"$SHOAL" img snapshot -a snap1 "$TMP/sov.qcow2" && "$SHOAL" img snapshot -d snap1 "$TMP/sov.qcow2" &&
	qemu-img check -q "$TMP/sov.qcow2" && qemu-img compare -q "$TMP/sexpect.raw" "$TMP/sov.qcow2" &&
	pass "shoal snapshot apply and delete: qemu-img check and compare" || fail "snapshot apply/delete"
# commit into a copy of the base
cp "$TMP/q-v3-64k.qcow2" "$TMP/cbase.qcow2"
"$SHOAL" img create -q -f qcow2 -b cbase.qcow2 -F qcow2 "$TMP/ctop.qcow2" >/dev/null
"$SHOAL" img io "${CMDS[@]}" "$TMP/ctop.qcow2" >/dev/null
"$SHOAL" img commit "$TMP/ctop.qcow2" >/dev/null &&
	qemu-img check -q "$TMP/cbase.qcow2" && qemu-img check -q "$TMP/ctop.qcow2" &&
	qemu-img compare -q "$TMP/sexpect.raw" "$TMP/cbase.qcow2" &&
	qemu-img compare -q "$TMP/sexpect.raw" "$TMP/ctop.qcow2" &&
	"$SHOAL" img compare "$TMP/sexpect.raw" "$TMP/ctop.qcow2" >/dev/null &&
	pass "commit: base holds the overlay's writes, overlay empty and still opens" || fail "commit"
# safe rebase onto nothing keeps the contents
"$SHOAL" img rebase -b "" "$TMP/sov.qcow2" >/dev/null && qemu-img check -q "$TMP/sov.qcow2" &&
	qemu-img compare -q "$TMP/sexpect.raw" "$TMP/sov.qcow2" &&
	! qemu-img info "$TMP/sov.qcow2" | grep -q "backing file" &&
	pass "rebase -b '' flattens the overlay" || fail "rebase flatten"
# resize
"$SHOAL" img create -q -f qcow2 -o cluster_size=4k "$TMP/rs.qcow2" 1M >/dev/null
"$SHOAL" img io -c "write -P 7 0 1M" "$TMP/rs.qcow2" >/dev/null
"$SHOAL" img resize "$TMP/rs.qcow2" 3G >/dev/null &&
	"$SHOAL" img io -c "write -P 8 2G 64k" "$TMP/rs.qcow2" >/dev/null && qemu-img check -q "$TMP/rs.qcow2" &&
	qemu-io -c "read -P 7 0 1M" -c "read -P 8 2G 64k" -c "read -P 0 1M 1M" "$TMP/rs.qcow2" | grep -vq Pattern &&
	[ "$(qemu-img info --output json "$TMP/rs.qcow2" | grep -o '"virtual-size": [0-9]*' | grep -o '[0-9]*$')" = $((3 << 30)) ] &&
	pass "resize 1M -> 3G (L1 table moves): qemu reads old and new data" || fail "resize"
# check finds refcounts that are too low (as qemu-img does) and -r all repairs them
"$SHOAL" img create -q -f qcow2 -o cluster_size=4k "$TMP/r.qcow2" 1M
"$SHOAL" img io -c "write -P 1 0 64k" "$TMP/r.qcow2" >/dev/null
python3 - "$TMP/r.qcow2" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
f.seek(48); rt, = struct.unpack(">Q", f.read(8))
f.seek(rt); rb, = struct.unpack(">Q", f.read(8))
f.seek(rb + 2 * 8); f.write(b"\0" * 10)      # clusters 8..12: refcount 0
PY
qemu-img check -q "$TMP/r.qcow2" >/dev/null 2>&1; qrc=$?
"$SHOAL" img check "$TMP/r.qcow2" >"$TMP/out" 2>&1; src=$?
[ $qrc = 2 ] && [ $src = 2 ] && grep -q "10 errors were found" "$TMP/out" &&
	"$SHOAL" img check -r all "$TMP/r.qcow2" >/dev/null && qemu-img check -q "$TMP/r.qcow2" &&
	"$SHOAL" img io -c "read -P 1 0 64k" "$TMP/r.qcow2" >/dev/null &&
	pass "check finds refcounts that are too low; -r all repairs them (qemu-img agrees)" ||
	fail "check/repair" "qemu $qrc shoal $src: $(cat "$TMP/out")"
# Persistent bitmaps (qemu-img bitmap): check counts their clusters, so a
# repair cannot free them; our first write clears their autoclear bit, and
# qemu then treats them as stale, as the spec says.
qemu-img create -q -f qcow2 "$TMP/bm.qcow2" 16M && qemu-io -c "write -P 1 0 1M" "$TMP/bm.qcow2" >/dev/null &&
	qemu-img bitmap --add "$TMP/bm.qcow2" b0 && qemu-io -c "write -P 2 0 128k" "$TMP/bm.qcow2" >/dev/null
if "$SHOAL" img check -r all "$TMP/bm.qcow2" >"$TMP/out" && grep -q "No errors" "$TMP/out" &&
   qemu-img check -q "$TMP/bm.qcow2" && qemu-img info "$TMP/bm.qcow2" | grep -q "name: b0"; then
	pass "image with persistent bitmaps: check and repair leave them intact"
else
	fail "bitmaps" "$(cat "$TMP/out")"
fi
"$SHOAL" img io -c "write -P 3 1M 4k" "$TMP/bm.qcow2" >/dev/null &&
	qemu-img check "$TMP/bm.qcow2" 2>&1 | grep -q "lacking bitmap support" &&
	pass "a Shoal write marks the bitmaps stale (autoclear bit cleared)" || fail "bitmap autoclear"
# JSON output parses
"$SHOAL" img info --output json "$TMP/s-zstd.qcow2" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["format-specific"]["data"]["compression-type"]=="zstd"' &&
	pass "info --output json" || fail "info --output json"
"$SHOAL" img check --output json "$TMP/s-zstd.qcow2" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["corruptions"]==0 and d["leaks"]==0' &&
	pass "check --output json" || fail "check --output json"
finish
