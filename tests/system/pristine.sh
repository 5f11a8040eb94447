#!/bin/bash
# pristine.sh - disk reads served from pristine copies (block/pristine.c,
# issue 13 item 6): several test-guest VMs, each on its own qcow2 overlay of
# one raw base image holding the vblk sector pattern, read the same base
# (`vblk-verify`, which checks every sector in the guest; 1 MiB, its most):
#   - with `--disk OV,pristine=DIR` the first VM reads the whole base from
#     the file (no hits) and the next one is served from the cache (every
#     block a hit, no byte read from the file); the guests' data is right;
#   - two VMs at once on a fresh cache directory both read right data;
#   - without the option the VMs read the same data, and the metrics of a
#     VM with the option carry the counters (pristine_hits, pristine_bytes,
#     pristine_file_bytes, backing_read_bytes);
#   - the base changed (a byte of its pattern rewritten): a VM with the same
#     cache directory reads the new byte (the guest's check of that sector
#     fails exactly there), from a new cache file;
#   - a bad option value is refused with status 64.
# Prints the base bytes read with and without for the VMs run here.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm pristine
command -v python3 >/dev/null || { skip "pristine" "python3 is needed"; finish; }

SECT=2048                                       # 1 MiB, the whole base (vblk-verify's most)
python3 - "$TMP/base.raw" "$SECT" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for s in range(n):
        f.write((f"shoal vblk seed=42 sector={s}".ljust(511, '.') + "\n").encode())
PY
overlay() { "$SHOAL" img create -f qcow2 -b "$TMP/base.raw" -F raw "$TMP/$1.qcow2" >/dev/null; }

# vm NAME DISK-OPTS: boot, verify the base through an overlay; sets RC, LINE
# (the pristine cache's closing line) and the counts HITS FILE.
vm() {
	overlay "$1"
	timeout 120 "$SHOAL" run -v --kernel "$GUEST" --memory 64M --console "file:$TMP/$1.log" \
		--cmdline "vblk-verify $SECT 42; exit 0" --timeout 60 \
		--disk "$TMP/$1.qcow2$2" </dev/null 2>"$TMP/$1.err"; RC=$?
	LINE=$(grep -o "pristine cache .*" "$TMP/$1.err" | head -1)
	HITS=$(sed -n 's/.*: \([0-9]*\) hits.*/\1/p' <<<"$LINE")
	FILE=$(sed -n 's/.* \([0-9]*\) bytes read from the file.*/\1/p' <<<"$LINE")
}
ok_guest() { [ "$RC" -eq 0 ] && grep -q "vblk-verify ok sectors=$SECT seed=42" "$TMP/$1.log"; }

mkdir -m 0700 "$TMP/pc"
vm a ",pristine=$TMP/pc"
ok_guest a && [ "$HITS" = 0 ] && [ "$FILE" = $((SECT * 512)) ] \
	&& pass "first VM: data right, the whole base read from the file ($LINE)" \
	|| fail "first VM" "rc=$RC line=$LINE $(tail -2 "$TMP/a.log") $(tail -2 "$TMP/a.err")"
with=$FILE; first=$FILE
for n in b; do
	vm $n ",pristine=$TMP/pc"
	ok_guest $n && [ "$HITS" = $((SECT / 8)) ] && [ "$FILE" = 0 ] \
		&& pass "VM $n: data right, every block from the cache, nothing read from the file" \
		|| fail "VM $n" "rc=$RC line=$LINE $(tail -2 "$TMP/$n.log")"
	with=$((with + FILE))
done
[ "$(ls "$TMP/pc" | grep -c '\.pristine$')" = 1 ] && pass "one cache file for the base" \
	|| fail "cache files" "$(ls -la "$TMP/pc")"

# two at once on a fresh cache
mkdir -m 0700 "$TMP/pc2"
vm d ",pristine=$TMP/pc2" & pd=$!
vm e ",pristine=$TMP/pc2"; rce=$RC
wait "$pd"
RC=$rce ok_guest e && grep -q "vblk-verify ok sectors=$SECT" "$TMP/d.log" \
	&& pass "two VMs at once on one cache: both read right data" \
	|| fail "two VMs at once" "$(tail -1 "$TMP/d.log") $(tail -1 "$TMP/e.log") $(cat "$TMP/d.err" "$TMP/e.err" | tail -4)"

# without the option
vm f ""
ok_guest f && [ -z "$LINE" ] && pass "without the option: data right, no cache" \
	|| fail "without" "rc=$RC $(tail -2 "$TMP/f.log")"
without=$((2 * first))               # each VM reads what the first one read

# metrics of a VM with the option (after vblk-verify, at its shell)
overlay g
python3 - "$SHOAL" "$GUEST" "$TMP" "$SECT" "$(dirname "$0")" <<'PY'
import sys; sys.path.insert(0, sys.argv[5])
from vmtest import *
shoal, guest, tmp, sect = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
T = Test(shoal, guest, tmp)
vm = T.start("g", "vblk-verify %d 42; shell" % sect, extra=("--disk", tmp + "/g.qcow2,pristine=" + tmp + "/pc"))
wait_text(vm.log, "vblk-verify ok", 60)
m = ctl(vm.sock, {"cmd": "metrics"})
d = (m.get("disks") or [{}])[0]
T.check("metrics: pristine_hits %s, pristine_bytes, file bytes 0, backing_read_bytes 0" % d.get("pristine_hits"),
        d.get("pristine_hits") == sect // 8 and d.get("pristine_bytes") == sect * 512
        and d.get("pristine_file_bytes") == 0 and d.get("backing_read_bytes") == 0
        and d.get("pristine_refused") == 0, d)
ctl(vm.sock, {"cmd": "stop", "mode": "force"}); finish(vm.p)
T.exit()
PY
[ $? -eq 0 ] || T_FAILED=1

# the base changed: sector 100's text rewritten
printf 'CHANGED' | dd of="$TMP/base.raw" bs=1 seek=$((100 * 512)) conv=notrunc status=none
vm h ",pristine=$TMP/pc"
grep -q "verify bad vblk sector=100" "$TMP/h.log" && [ "$HITS" = 0 ] \
	&& [ "$(ls "$TMP/pc" | grep -c '\.pristine$')" = 2 ] \
	&& pass "changed base: the guest reads the new bytes (sector 100 differs), from a new cache" \
	|| fail "changed base" "rc=$RC line=$LINE $(grep -m1 "verify\|error" "$TMP/h.log")"

out=$("$SHOAL" run --kernel "$GUEST" --disk "$TMP/a.qcow2,pristine-size=1" 2>&1 </dev/null); rc=$?
[ "$rc" -eq 64 ] && grep -q "pristine-size" <<<"$out" && pass "pristine-size=1 refused: $out" \
	|| fail "bad pristine-size" "rc=$rc $out"

echo "figure: base bytes read from the file by VMs a and b: with $with, without $without"
finish
