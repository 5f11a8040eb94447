#!/bin/bash
# store.sh - `shoal store` as a user sees it (issue 14, docs/store.md): two
# images that share most content (a raw one and a qcow2 one made from an
# edited copy), and a qcow2 chain, go into one store; the second adds few
# new bytes; get rebuilds each byte for byte (cmp, qemu-img compare);
# ls --output json parses; a flipped byte in a segment is one clear error
# naming the segment and the images on get and verify, and the other image
# still reads; rm + gc frees chunks and keeps the live ones; add and gc
# killed with SIGKILL 50 times at random points lose no chunk of a live image; bad input
# (missing store, unknown name, non-image file, a name twice) is one line
# each.  Runs on the host: no KVM.
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] || { fail "build" "$SHOAL missing"; finish; }
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
	{ skip "store" "qemu-img/qemu-io not installed"; finish; }
cd "$TMP" || exit 1

# a.raw: 12 MiB of disk-like data: text-ish blocks, random blocks, zeros.
python3 - <<'EOF'
import random
r = random.Random(14)
words = [bytes(r.choice(b'abcdefghijklmnopqrstuvwxyz') for _ in range(r.randint(2, 9))) for _ in range(3000)]
out = bytearray()
while len(out) < 12 << 20:
	k = r.random()
	if k < 0.5:
		out += b' '.join(r.choice(words) for _ in range(800))[:4096].ljust(4096, b'\n')
	elif k < 0.8:
		out += r.randbytes(4096)
	else:
		out += bytes(4096 * r.randint(1, 8))
open('a.raw', 'wb').write(out[:12 << 20])
# b: a copy with a few edits (a file rewritten, a few bytes here and there)
b = bytearray(out[:12 << 20])
b[5 << 20:(5 << 20) + 65536] = r.randbytes(65536)
for off in (1000, 7 << 20, 11 << 20):
	b[off:off + 12] = b'edited bytes'
open('b.raw', 'wb').write(b)
EOF
qemu-img convert -f raw -O qcow2 b.raw b.qcow2 || { fail "setup" "qemu-img convert"; finish; }
# a chain: base.qcow2 <- top.qcow2 with one write in the top
qemu-img convert -f raw -O qcow2 a.raw base.qcow2 &&
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 &&
	qemu-io -c "write -P 0x5a 3M 64k" top.qcow2 >/dev/null &&
	qemu-img convert -O raw top.qcow2 top.raw || { fail "setup" "chain"; finish; }

# one_line RC FILE WHAT: PASS if RC is non-zero and FILE is one line with WHAT.
one_line() {
	if [ "$1" -ne 0 ] && [ "$(grep -c . "$2")" = 1 ] && grep -q -- "$3" "$2"; then
		pass "$4: $(cat "$2")"
	else
		fail "$4" "rc=$1 $(cat "$2")"
	fi
}

"$SHOAL" store init st >/dev/null && pass "init" || fail "init"
"$SHOAL" store add st a.raw --name a --output json >a.json && pass "add a.raw" || fail "add a.raw" "$(cat a.json)"
"$SHOAL" store add st b.qcow2 --name b --output json >b.json && pass "add b.qcow2" || fail "add b.qcow2"
read -r bnew bsize bchunks bnc < <(python3 -c "import json; j=json.load(open('b.json')); print(j['new_bytes'], j['size'], j['chunks'], j['new_chunks'])")
echo "figures: b adds $bnew new bytes of $bsize ($bnc of $bchunks chunks); a: $(cat a.json | tr -d '\n ')"
[ "$bnew" -lt $((bsize / 10)) ] && pass "b shares most of a: $bnew of $bsize bytes new" ||
	fail "dedup" "b adds $bnew of $bsize bytes"

"$SHOAL" store get st a a.out && cmp -s a.raw a.out && pass "get a: byte-equal" || fail "get a" "differs"
"$SHOAL" store get st b b.out && cmp -s b.raw b.out && pass "get b (from qcow2): byte-equal" || fail "get b"
"$SHOAL" store get st b b2.qcow2 --format qcow2 && qemu-img compare -q b.raw b2.qcow2 &&
	qemu-img check -q b2.qcow2 && pass "get --format qcow2: same content, clean image" || fail "get qcow2"
"$SHOAL" store add st top.qcow2 --name top >/dev/null && "$SHOAL" store get st top top.out &&
	cmp -s top.raw top.out && pass "a qcow2 chain goes in as the guest sees it" || fail "chain"

"$SHOAL" store ls st --output json >ls.json &&
	python3 -c "import json; j=json.load(open('ls.json')); assert sorted(i['name'] for i in j)==['a','b','top']; assert all(i['size']==12<<20 for i in j); assert [i['format'] for i in j]==['raw','qcow2','qcow2']" &&
	pass "ls --output json parses, three images" || fail "ls json" "$(cat ls.json)"
"$SHOAL" store verify st >v.out && pass "verify: $(cat v.out)" || fail "verify" "$(cat v.out)"

# --- a flipped byte in a segment ---
cp -r st bad
seg=$(ls bad/segments/*.seg | head -1)
python3 -c "
import sys
f = open(sys.argv[1], 'r+b'); f.seek(70); c = f.read(1); f.seek(70); f.write(bytes([c[0] ^ 0x40]))" "$seg"
segname=$(basename "$seg" .seg)
rc=0; "$SHOAL" store get bad a x.out 2>err || rc=$?
one_line $rc err "segment $segname: chunk .*breaks images: a" "corrupt segment: get names segment, chunk and images"
[ ! -e x.out ] && pass "no half-written output left" || fail "get left x.out"
rc=0; "$SHOAL" store verify bad >/dev/null 2>err || rc=$?
[ $rc = 84 ] && grep -q "segment $segname" err && grep -q "1 problems" err &&
	pass "verify: exit 84, names the segment, one problem" || fail "verify corrupt" "rc=$rc $(cat err)"

# --- rm + gc ---
"$SHOAL" store du st --output json >du0.json
"$SHOAL" store rm st a && "$SHOAL" store rm st top && "$SHOAL" store gc st --output json >gc.json &&
	"$SHOAL" store du st --output json >du1.json &&
	python3 -c "import json; a=json.load(open('du0.json')); b=json.load(open('du1.json')); g=json.load(open('gc.json')); assert g['dead_chunks']>0 and b['chunks']==a['chunks']-g['dead_chunks'] and b['segment_bytes']<a['segment_bytes']" &&
	pass "rm + gc: $(tr -d '\n ' <gc.json)" || fail "gc" "$(cat gc.json du0.json du1.json)"
"$SHOAL" store get st b b.out && cmp -s b.raw b.out && "$SHOAL" store verify st >/dev/null &&
	pass "b intact after gc" || fail "b after gc"

# --- SIGKILL at random points of add and gc: 50 kills ---
ok=1 landed=0
for i in $(seq 1 25); do
	"$SHOAL" store add st a.raw --name a >/dev/null 2>&1 &
	pid=$!; sleep "0.$(printf %02d $((RANDOM % 30)))"
	kill -KILL $pid 2>/dev/null && landed=$((landed + 1)); wait $pid 2>/dev/null
	"$SHOAL" store rm st a >/dev/null 2>&1
	"$SHOAL" store gc st >/dev/null 2>&1 &
	pid=$!; sleep "0.$(printf %02d $((RANDOM % 30)))"
	kill -KILL $pid 2>/dev/null && landed=$((landed + 1)); wait $pid 2>/dev/null
	# get re-hashes every chunk of b
	if ! "$SHOAL" store get st b b.out 2>err || ! cmp -s b.raw b.out; then
		ok=0; fail "kill round $i" "$(cat err)"; break
	fi
done
[ $ok = 1 ] && "$SHOAL" store verify st >/dev/null 2>err &&
	pass "50 SIGKILLs at random points of add and gc ($landed landed mid-run): b read back intact after each, verify clean" ||
	fail "kills" "$(cat err)"

# --- bad input: one line each ---
rc=0; "$SHOAL" store ls nostore 2>err || rc=$?
one_line $rc err "nostore: no such store" "missing store"
mkdir empty; rc=0; "$SHOAL" store ls empty 2>err || rc=$?
one_line $rc err "not a Shoal store" "a directory that is no store"
rc=0; "$SHOAL" store get st nosuch x 2>err || rc=$?
one_line $rc err "no image named 'nosuch'" "unknown name"
echo "not an image" >note.txt; rc=0; "$SHOAL" store add st note.txt 2>err || rc=$?
one_line $rc err "note.txt: not a disk image" "non-image file"
rc=0; "$SHOAL" store add st b.qcow2 --name b 2>err || rc=$?
one_line $rc err "already in the store" "a name twice"
rc=0; "$SHOAL" store add st b.qcow2 --name ../evil 2>err || rc=$?
one_line $rc err "image name '../evil'" "a name with a slash"
rc=0; "$SHOAL" store init st 2>err || rc=$?
one_line $rc err "not empty" "init over a store"
finish
