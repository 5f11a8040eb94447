#!/bin/bash
# img_crash.sh - crash consistency: a `shoal img io` writer is killed
# (SIGKILL) at random points; after each kill the image must pass
# `qemu-img check` (leaks allowed, exit 0 or 3) and hold every write that
# was acknowledged before the last completed flush.  Writes after that
# flush may or may not have landed, per 4 KiB block, but nothing else may
# appear.  CRASH_ITERS sets the number of kills (slow_img_crash.sh runs
# many more).  Each run alternates configurations: plain, over a raw
# backing file, 4 KiB clusters (many L2 tables and refcount blocks).
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] || { fail "build" "build/shoal missing"; finish; }
command -v qemu-img >/dev/null || { skip "crash" "qemu-img not installed"; finish; }
command -v python3 >/dev/null || { skip "crash" "python3 not installed"; finish; }
ITERS=${CRASH_ITERS:-8}
cd "$TMP" || exit 1

# gen.py SEED N: a script of N operations on 4 KiB blocks of a 32 MiB disk.
cat >gen.py <<'PY'
import random, sys
r = random.Random(int(sys.argv[1])); n = int(sys.argv[2])
for i in range(n):
    k = r.random()
    blk = r.randrange(8192); cnt = min(8192 - blk, r.choice([1, 1, 2, 3, 16, 40]))
    if k < 0.75:
        print("write -P %d %d %d" % (i % 250 + 1, blk * 4096, cnt * 4096))
    elif k < 0.85:
        print("write -z %d %d" % (blk * 4096, cnt * 4096))
    elif k < 0.9:
        print("discard %d %d" % (blk * 4096, cnt * 4096))
    else:
        print("flush")
print("flush")
PY
# verify.py SCRIPT OUT IMAGE.raw BASE|-: per-block acceptable values.
cat >verify.py <<'PY'
import sys
script, out, img, base = sys.argv[1:5]
ops = [l.split() for l in open(script)]
flushed = sum(1 for l in open(out) if l.startswith("flushed"))
basedata = open(base, "rb").read() if base != "-" else None
def base_val(b):
    if basedata is None: return 0
    return basedata[b * 4096]
blocks = 8192
must = [None] * blocks            # value as of the last acknowledged flush
later = [set() for _ in range(blocks)]
nf = 0
for op in ops:
    if op[0] == "flush":
        nf += 1; continue
    if op[0] == "write" and op[1] == "-P":
        v, off, ln = int(op[2]), int(op[3]), int(op[4])
    else:
        v, off, ln = 0, int(op[-2]), int(op[-1])
    for b in range(off // 4096, (off + ln) // 4096):
        if nf < flushed: must[b] = v
        else: later[b].add(v)
data = open(img, "rb").read()
bad = 0
for b in range(blocks):
    blk = data[b * 4096:(b + 1) * 4096]
    want = must[b] if must[b] is not None else base_val(b)
    ok = {want} | later[b]
    if blk != bytes([blk[0]]) * 4096 or blk[0] not in ok:
        bad += 1
        if bad < 4: print("block %d: got %r..., allowed %s" % (b, blk[:4], sorted(ok)))
print("flushes acknowledged: %d, bad blocks: %d" % (flushed, bad))
sys.exit(1 if bad else 0)
PY
# a raw base whose every 4 KiB block holds one value
python3 -c '
import sys
sys.stdout.buffer.write(b"".join(bytes([(b * 7) % 251 + 1]) * 4096 for b in range(8192)))' >base.raw

ok=0
for i in $(seq 1 "$ITERS"); do
	case $((i % 3)) in
	0) "$SHOAL" img create -q -f qcow2 img.qcow2 32M >/dev/null; b=- ;;
	1) "$SHOAL" img create -q -f qcow2 -b base.raw -F raw img.qcow2 >/dev/null; b=base.raw ;;
	2) "$SHOAL" img create -q -f qcow2 -o cluster_size=4k img.qcow2 32M >/dev/null; b=- ;;
	esac
	python3 gen.py "$i$RANDOM" 40000 >script
	"$SHOAL" img io img.qcow2 <script >out 2>err &
	pid=$!
	sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	qemu-img check img.qcow2 >check.out 2>&1; rc=$?
	if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
		fail "crash $i: qemu-img check" "exit $rc: $(grep -v Leaked check.out | head -5)"
		continue
	fi
	qemu-img convert -O raw img.qcow2 img.raw
	if ! python3 verify.py script out img.raw $b >verify.out; then
		fail "crash $i: acknowledged data" "$(cat verify.out)"
		continue
	fi
	# the crashed image is still usable: repair leaks, write again
	"$SHOAL" img check -r all img.qcow2 >/dev/null
	"$SHOAL" img io -c "write -P 5 0 64k" -c "read -P 5 0 64k" img.qcow2 >/dev/null &&
		qemu-img check -q img.qcow2 || { fail "crash $i: reuse after repair"; continue; }
	ok=$((ok + 1))
	grep -q "^flushed $(grep -c '^flush' script)$" out && echo "  (run $i finished before the kill)"
	echo "  crash $i: $(tail -1 verify.out), qemu-img check exit $rc"
done
# The verifier itself must be able to fail: plant a value never written.
if [ -f img.raw ]; then
	printf '\xff%.0s' $(seq 1 4096) | dd of=img.raw bs=4096 seek=77 conv=notrunc status=none
	python3 verify.py script out img.raw $b >/dev/null && fail "verifier catches a planted bad block" ||
		pass "verifier catches a planted bad block"
fi
[ $ok = "$ITERS" ] && pass "$ITERS kills: image consistent, acknowledged writes kept"
finish
