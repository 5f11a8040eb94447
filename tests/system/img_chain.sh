#!/bin/bash
# img_chain.sh - chain identity (seed mechanisms 24 and 36): an overlay
# whose parent changed since it was made is refused, with both files and
# both generations named; --force overrides; rebase re-anchors; a write by
# another program (qemu-io) is detected through the autoclear bit; images
# made by qemu-img open normally.  Also backing-file loops and depth.
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] || { fail "build" "build/shoal missing"; finish; }
cd "$TMP" || exit 1

"$SHOAL" img create -f qcow2 base.qcow2 16M >/dev/null
"$SHOAL" img io -c "write -P 1 0 1M" base.qcow2 >/dev/null
"$SHOAL" img create -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 >/dev/null
"$SHOAL" img io -c "read -P 1 0 1M" -c "write -P 2 0 4k" top.qcow2 >/dev/null &&
	pass "fresh overlay opens and writes" || fail "fresh overlay"
"$SHOAL" img info --output json top.qcow2 | python3 -c '
import json,sys; d=json.load(sys.stdin)["shoal-chain"]; assert d["parent-generation"] >= 1 and d["parent-id"]' &&
	pass "overlay records the parent's id and generation" || fail "overlay records parent"

# Reading the base (read-only) or opening it read-write without writing
# leaves its generation alone.
"$SHOAL" img io -r -c "read -P 1 0 4k" base.qcow2 >/dev/null
"$SHOAL" img io -c "read -P 1 0 4k" base.qcow2 >/dev/null
"$SHOAL" img io -r -c "read -P 2 0 4k" top.qcow2 >/dev/null &&
	pass "reads of the base do not invalidate the overlay" || fail "reads invalidate"

# A write to the base: the overlay is refused, naming both files and gens.
gen=$("$SHOAL" img info --output json base.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["shoal-chain"]["generation"])')
"$SHOAL" img io -c "write -P 9 8M 4k" base.qcow2 >/dev/null
"$SHOAL" img io -r -c "read -P 2 0 4k" top.qcow2 >out 2>err; rc=$?
if [ $rc -ne 0 ] && grep -q "top.qcow2" err && grep -q "base.qcow2" err &&
   grep -q "generation $((gen + 1)), expected $gen" err && [ "$(grep -c . err)" = 1 ]; then
	pass "changed parent refused: $(cat err)"
else
	fail "changed parent refused" "rc=$rc $(cat err)"
fi
"$SHOAL" img io --force -r -c "read -P 2 0 4k" top.qcow2 >/dev/null 2>&1 &&
	pass "--force opens the chain anyway" || fail "--force"
"$SHOAL" img rebase top.qcow2 >/dev/null && "$SHOAL" img io -r -c "read -P 2 0 4k" top.qcow2 >/dev/null &&
	pass "rebase re-anchors the overlay to its current parent" || fail "rebase re-anchor"

# Another program writing the base clears our autoclear bit: refused too.
if command -v qemu-io >/dev/null; then
	qemu-io -c "write -P 7 9M 4k" base.qcow2 >/dev/null
	"$SHOAL" img io -r -c "read -P 2 0 4k" top.qcow2 >out 2>err; rc=$?
	[ $rc -ne 0 ] && grep -q "another program" err && pass "write by qemu-io to the parent detected" ||
		fail "foreign write detected" "rc=$rc $(cat err)"
	qemu-img check -q base.qcow2 && qemu-img check -q top.qcow2 &&
		pass "qemu-img accepts images with the chain extension" || fail "qemu-img check of chain images"
	qemu-img create -q -f qcow2 qbase.qcow2 16M && qemu-img create -q -f qcow2 -b qbase.qcow2 -F qcow2 qtop.qcow2 &&
		"$SHOAL" img io -c "write -P 3 0 4k" qtop.qcow2 >/dev/null &&
		"$SHOAL" img io -c "write -P 4 1M 4k" qbase.qcow2 >/dev/null &&
		"$SHOAL" img io -c "read -P 3 0 4k" -c "read -P 4 1M 4k" qtop.qcow2 >/dev/null &&
		pass "images without the extension (qemu-img) open normally" || fail "qemu images"
else
	skip "foreign write" "qemu-io not installed"
fi

# A replaced parent (same name, different image) is refused by id.
"$SHOAL" img create -f qcow2 p.qcow2 1M >/dev/null
"$SHOAL" img create -f qcow2 -b p.qcow2 -F qcow2 o.qcow2 >/dev/null
"$SHOAL" img create -f qcow2 p.qcow2 1M >/dev/null
"$SHOAL" img io -r -c "read 0 4k" o.qcow2 >out 2>err; rc=$?
[ $rc -ne 0 ] && grep -q "not the image this overlay was made from" err &&
	pass "replaced parent refused by id" || fail "replaced parent" "rc=$rc $(cat err)"

# Loops and depth.
"$SHOAL" img create -f qcow2 l1.qcow2 1M >/dev/null
"$SHOAL" img create -f qcow2 -b l1.qcow2 -F qcow2 l2.qcow2 >/dev/null
"$SHOAL" img rebase -u -b l2.qcow2 -F qcow2 l1.qcow2 >/dev/null 2>&1
"$SHOAL" img io -r -c "read 0 4k" l2.qcow2 >out 2>err; rc=$?
[ $rc -ne 0 ] && grep -q "backing file loop" err && pass "backing-file loop refused: $(cat err)" ||
	fail "loop" "rc=$rc $(cat err)"
"$SHOAL" img create -f raw d0 1M >/dev/null
prev=d0; pf=raw
for i in $(seq 1 40); do
	"$SHOAL" img create -f qcow2 -o chain_id=off -b $prev -F $pf d$i >/dev/null 2>err || break
	prev=d$i; pf=qcow2
done
[ "$prev" = d33 ] && grep -q "deeper than 32" err && pass "over-deep chain refused: $(cat err)" ||
	fail "deep chain" "last $prev: $(cat err)"
"$SHOAL" img io -r -c "read 0 4k" d32 >/dev/null 2>err && pass "a 33-image chain opens" ||
	fail "33 deep" "$(cat err)"
# --cache-size: a cache far smaller than the working set still gives right data
"$SHOAL" img create -f qcow2 -o cluster_size=4096 small-cache.qcow2 64M >/dev/null
if "$SHOAL" img --cache-size 64K io -c "write -P 0x3c 0 32M" small-cache.qcow2 >/dev/null 2>err &&
   "$SHOAL" img --cache-size 64K io -r -c "read -P 0x3c 0 32M" small-cache.qcow2 >/dev/null 2>>err &&
   qemu-img check -q small-cache.qcow2 2>>err; then
	pass "--cache-size 64K: 32 MiB through a tiny L2/refcount cache, data and image intact"
else
	fail "--cache-size" "$(cat err)"
fi
"$SHOAL" img --cache-size 1k info small-cache.qcow2 >/dev/null 2>err
[ $? -eq 64 ] && grep -q "cache-size" err && pass "--cache-size too small is a usage error" || fail "--cache-size bad" "$(cat err)"
finish
