#!/bin/bash
# store_snapshot.sh - snapshots in the image store (issue 14 item 6,
# mechanism 34; docs/store.md "Snapshots in the store"), on the host, no
# KVM: five snapshot directories of one template (clones: the same 24 MiB
# memory but 256 KiB each of their own, a state file, a raw disk) and one
# whose disk is a qcow2 image already in the store (by chain identity),
# and one whose disk is a qcow2 overlay over that image (flattened: only
# the chunks of its own bytes are new).
# import-snapshot stores each; the clones after the first add a small share
# of their bytes; export-snapshot gives the files back byte for byte
# (memory sparse), the disk as OUTDIR/disk-0.raw, and manifest.json's disk
# pointing at it with its inode and time; ls/du/rm/gc/verify count
# snapshot objects; a changed disk, names taken, an unknown name and an
# existing OUTDIR are one clear line each; a flipped byte in a segment is
# named by verify and export (which leaves no OUTDIR); imports killed
# with SIGKILL leave each object whole or absent, and a writer clears the
# leftovers.  Then through `shoal store serve`: a client
# granted snapshot s1 pulls it (pull-snapshot) and exports it byte-equal,
# reads a Range of a part (/v1/snapshots/s1/memory/raw),
# is refused s2 (403) until granted, then pulls s2 fetching only what s1
# did not bring; a pull killed mid-way leaves no object and its rerun
# completes.  The KVM half (a real test-guest snapshot restored from
# the store) is store_snapshot_kvm.sh.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/store_lib.bash"

[ -x "$SHOAL" ] || { fail "build" "$SHOAL missing"; finish; }
for t in openssl curl python3; do
	command -v $t >/dev/null || { skip "store_snapshot" "$t not installed"; finish; }
done
cd "$TMP" || exit 1
SPID=
trap 'kill $SPID 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
J() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# ---- five clone snapshots of one template, and one over a stored qcow2 ----
python3 - <<'EOF'
import json, os, random
r = random.Random(34)
tmpl = bytearray(24 << 20)
for i in range(0, 10 << 20, 4096):          # 10 MiB used, the rest zero pages
    if r.random() < 0.7:
        tmpl[i:i + 4096] = r.randbytes(4096)
disk = r.randbytes(2 << 20) + bytes(6 << 20)
open('disk.raw', 'wb').write(disk)
for n in range(1, 6):
    d = 's%d' % n
    os.mkdir(d)
    m = bytearray(tmpl)
    off = (12 << 20) + n * (1 << 20)
    m[off:off + (256 << 10)] = r.randbytes(256 << 10)   # the clone's own pages
    with open(d + '/memory', 'wb') as f:                 # sparse: zero pages are holes
        for i in range(0, len(m), 65536):
            blk = m[i:i + 65536]
            if any(blk):
                f.seek(i)
                f.write(blk)
        f.truncate(len(m))
    open(d + '/state', 'wb').write(r.randbytes(20000))
EOF
mk_manifest() {	# mk_manifest DIR DISK [CHAIN-JSON]: a manifest.json naming DISK as its writable disk
	python3 - "$@" <<'EOF'
import json, os, sys
d, disk = sys.argv[1], os.path.abspath(sys.argv[2])
st = os.stat(disk)
rec = {"path": disk, "writable": True, "format": "raw", "size": st.st_size, "ino": st.st_ino,
       "mtime_ns": st.st_mtime_ns, "virtual_size": st.st_size, "overlay": disk + ".ov"}
if len(sys.argv) > 3:
    rec["format"] = "qcow2"
    rec["chain_id"] = json.loads(sys.argv[3])
json.dump({"format": "shoal-snapshot", "version": 1, "created": 0,
           "config": {"memory": "24M", "disks": [{"path": disk}]},
           "disks": [rec], "files": {}}, open(d + '/manifest.json', 'w'))
EOF
}
for n in 1 2 3 4 5; do mk_manifest s$n disk.raw; done
RAW=$(du -cb --apparent-size s1 disk.raw | tail -1 | cut -f1)

"$SHOAL" store init st >/dev/null || { fail "setup" "store init"; finish; }
"$SHOAL" store import-snapshot st s1 --name s1 --output json >i1.json 2>i1.err &&
	[ "$(J i1.json "'%d %d %d' % (d['files'], d['disks'], d['disks_by_reference'])")" = "3 1 0" ] &&
	pass "import-snapshot s1: 3 files and 1 disk, $(J i1.json "d['bytes']") bytes, $(J i1.json "d['stored_bytes']") stored" ||
	fail "import-snapshot s1" "$(cat i1.json i1.err)"
ok=1
for n in 2 3 4 5; do
	"$SHOAL" store import-snapshot st s$n --name s$n --output json >i$n.json 2>i$n.err || { ok=0; cat i$n.err; }
done
NEW2=$(J i2.json "d['new_bytes']")
[ $ok = 1 ] && [ "$NEW2" -lt $((1 << 20)) ] &&
	pass "the other clones' snapshots add little: s2 $NEW2 new bytes of $(J i2.json "d['bytes']")" ||
	fail "import s2..s5" "new_bytes $NEW2"
"$SHOAL" store du st --output json >du.json
STORED=$(J du.json "d['segment_bytes']")
[ "$(J du.json "d['snapshots']")" = 5 ] && [ "$STORED" -lt $((RAW * 2)) ] &&
	pass "du: 5 snapshots in $STORED bytes on disk, against $((RAW * 5)) bytes of snapshot directories and disks" ||
	fail "du" "$(cat du.json)"
"$SHOAL" store ls st --output json >ls.json &&
	[ "$(J ls.json "sorted(x['name'] for x in d if x.get('kind') == 'snapshot')")" = "['s1', 's2', 's3', 's4', 's5']" ] &&
	pass "ls --output json lists the snapshots (kind snapshot)" || fail "ls" "$(cat ls.json)"

# ---- export ----
"$SHOAL" store export-snapshot st s3 out3 2>e.err &&
	cmp s3/memory out3/memory && cmp s3/state out3/state && cmp disk.raw out3/disk-0.raw &&
	pass "export-snapshot s3: memory, state and disk byte-equal" || fail "export s3" "$(cat e.err)"
[ "$(du -k out3/memory | cut -f1)" -lt $(( (24 << 10) * 3 / 4 )) ] &&
	pass "the exported memory is sparse: $(du -k out3/memory | cut -f1) KiB on disk of 24576 KiB" ||
	fail "sparse memory" "$(du -k out3/memory)"
python3 - <<'EOF' && pass "manifest.json's disk is out3/disk-0.raw, its size, inode and time; the config's disk too" || fail "exported manifest.json" "$(cat out3/manifest.json)"
import json, os, sys
m = json.load(open('out3/manifest.json'))
d = m['disks'][0]
p = os.path.abspath('out3/disk-0.raw')
st = os.stat(p)
ok = (d['path'] == p and d['format'] == 'raw' and d['size'] == st.st_size and d['ino'] == st.st_ino
      and d['mtime_ns'] == st.st_mtime_ns and m['config']['disks'][0]['path'] == p and d['writable'])
sys.exit(0 if ok else 1)
EOF

"$SHOAL" store import-snapshot st out3 --name s3again --output json >i3.json 2>i3.err &&
	[ "$(J i3.json "'%d %d %d' % (d['files'], d['disks'], d['new_chunks'])")" = "3 1 1" ] &&
	pass "an export imports again (its disk-0.raw as its disk): one new chunk, its rewritten manifest.json" ||
	fail "re-import" "$(cat i3.json i3.err)"
"$SHOAL" store rm st s3again

# ---- refusals, one line each ----
refused() {	# refused NAME WANT-TEXT CMD...
	local n=$1 want=$2
	shift 2
	"$@" >r.out 2>r.err
	local rc=$?
	[ $rc -ne 0 ] && grep -q -- "$want" r.err && [ "$(wc -l <r.err)" = 1 ] &&
		pass "$n: $(cat r.err)" || fail "$n" "rc=$rc $(cat r.out r.err)"
}
refused "a snapshot name taken" "a snapshot named 's1' is already in the store" \
	"$SHOAL" store import-snapshot st s1 --name s1
refused "an image may not take a snapshot's name" "a snapshot named 's2' is already in the store" \
	"$SHOAL" store add st disk.raw --name s2
refused "export to an existing directory" "out3: already exists" "$SHOAL" store export-snapshot st s1 out3
refused "export of an unknown snapshot" "no snapshot named 'nosuch'" "$SHOAL" store export-snapshot st nosuch o
refused "import of a directory that is no snapshot" "not a snapshot directory" \
	"$SHOAL" store import-snapshot st st --name x
cp -a s1 s6 && cp disk.raw disk6.raw && mk_manifest s6 disk6.raw && echo x >>disk6.raw
refused "import of a snapshot whose disk changed" "disk6.raw: changed or replaced since the snapshot" \
	"$SHOAL" store import-snapshot st s6 --name s6
[ ! -e st/snapshots/s6 ] && [ -z "$(ls -A st/snapshots | grep -v '^s[1-5]$')" ] &&
	pass "the refused import left nothing in snapshots/" || fail "refused import leftovers" "$(ls -A st/snapshots)"

# ---- a disk that is an image of the store, by chain identity ----
"$SHOAL" img convert -O qcow2 disk.raw base.qcow2 && "$SHOAL" store add st base.qcow2 --name base >/dev/null &&
	CHAIN=$("$SHOAL" img info --output json base.qcow2 |
		python3 -c "import json,sys; c=json.load(sys.stdin)['shoal-chain']; print(json.dumps({'id': c['id'], 'generation': c['generation']}))") &&
	cp -a s1 s7 && mk_manifest s7 base.qcow2 "$CHAIN" &&
	"$SHOAL" store import-snapshot st s7 --name s7 --output json >i7.json 2>i7.err &&
	[ "$(J i7.json "d['disks_by_reference']")" = 1 ] &&
	pass "a qcow2 disk whose chain identity an image of the store has is stored by reference (image base)" ||
	fail "disk by reference" "$(cat i7.json i7.err)"
refused "rm of an image a snapshot refers to" "image 'base' is a disk of snapshots: s7" "$SHOAL" store rm st base
"$SHOAL" store export-snapshot st s7 out7 && cmp disk.raw out7/disk-0.raw && cmp s1/memory out7/memory &&
	pass "export of s7 writes the referenced image as its disk" || fail "export s7" ""

# A qcow2 overlay over that base, 64 KiB of its own: the disk goes in
# flattened, and only the chunks around its own bytes are new.
"$SHOAL" img create -f qcow2 -b "$PWD/base.qcow2" -F qcow2 ov.qcow2 >/dev/null &&
	"$SHOAL" img io -c "write -P 0x5a 1048576 65536" ov.qcow2 >/dev/null &&
	cp -a s1 s8 && mk_manifest s8 ov.qcow2 '{"id": "no-such-chain", "generation": 1}' &&
	"$SHOAL" store import-snapshot st s8 --name s8 --output json >i8.json 2>i8.err &&
	[ "$(J i8.json "d['disks_by_reference']")" = 0 ] && [ "$(J i8.json "d['new_bytes']")" -lt $((256 << 10)) ] &&
	"$SHOAL" store export-snapshot st s8 out8 && "$SHOAL" img compare ov.qcow2 out8/disk-0.raw >/dev/null &&
	pass "a qcow2 overlay over a stored base goes in as the guest sees it: $(J i8.json "d['new_bytes']") new bytes (its own 64 KiB and their chunks), exported equal" ||
	fail "overlay disk" "$(cat i8.json i8.err)"

# ---- rm, gc, verify ----
"$SHOAL" store rm st s5 && "$SHOAL" store gc st --output json >gc.json &&
	[ "$(J gc.json "d['dead_chunks'] > 0")" = True ] && "$SHOAL" store verify st >v.out 2>&1 &&
	"$SHOAL" store export-snapshot st s4 out4 && cmp s4/memory out4/memory &&
	[ ! -e st/snapshots/s5 ] &&
	pass "rm s5 + gc drops its own chunks ($(J gc.json "d['dead_chunks']")), verify is clean, s4 exports byte-equal" ||
	fail "rm/gc" "$(cat gc.json v.out)"
mkdir st/snapshots/.s9.tmp-1 && touch st/snapshots/.s9.tmp-1/memory.mf && "$SHOAL" store gc st >/dev/null &&
	[ ! -e st/snapshots/.s9.tmp-1 ] && pass "a writer removes a killed import's leftover (snapshots/.s9.tmp-1)" ||
	fail "leftover" "$(ls -A st/snapshots)"

# ---- SIGKILL during import: the object is whole or absent ----
"$SHOAL" store init stk >/dev/null
whole=0 absent=0 bad=0
for k in 1 2 3 4 5 6; do
	"$SHOAL" store import-snapshot stk s$((k % 4 + 1)) --name k$k >/dev/null 2>&1 &
	pid=$!
	sleep "0.$((RANDOM % 4))$((RANDOM % 10))"
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	if [ -e stk/snapshots/k$k ]; then
		"$SHOAL" store export-snapshot stk k$k ok$k 2>/dev/null && cmp -s ok$k/memory s$((k % 4 + 1))/memory &&
			whole=$((whole + 1)) || bad=$((bad + 1))
	else
		absent=$((absent + 1))
	fi
done
"$SHOAL" store gc stk >/dev/null 2>&1 && "$SHOAL" store verify stk >/dev/null 2>&1 &&
	[ -z "$(ls -A stk/snapshots | grep '^\.')" ] && [ $bad = 0 ] &&
	pass "6 imports killed (SIGKILL) at 0 to 0.4 s: $whole whole (export byte-equal), $absent absent, none half; gc clears the leftovers, verify clean" ||
	fail "killed imports" "whole=$whole absent=$absent bad=$bad $(ls -A stk/snapshots)"

# ---- damage ----
cp -a st stc
python3 - <<'EOF'
import glob, json
# flip bytes inside the record of a chunk only s2's memory has: s2's own pages
seg = sorted(glob.glob('stc/segments/*.seg'))
path = seg[0]
b = bytearray(open(path, 'rb').read())
b[len(b) // 2:len(b) // 2 + 16] = bytes(x ^ 0xff for x in b[len(b) // 2:len(b) // 2 + 16])
open(path, 'wb').write(b)
EOF
"$SHOAL" store verify stc >v.out 2>&1
rc=$?
[ $rc = 84 ] && grep -q "segment 00000001: chunk .*snapshot s[0-9]/" v.out &&
	pass "verify names the damaged chunk and the snapshot parts it breaks: $(head -1 v.out)" ||
	fail "verify damage" "rc=$rc $(cat v.out)"
bad=0
for n in 1 2 3 4 7; do
	"$SHOAL" store export-snapshot stc s$n oc$n 2>oc.err || { bad=$((bad + 1)); cp oc.err oc.bad; }
done
[ $bad -ge 1 ] && grep -q "snapshot s[0-9]/.* at offset [0-9]*: segment 00000001" oc.bad && [ -z "$(ls -d oc*.partial* 2>/dev/null)" ] &&
	[ "$(ls -d oc[0-9] 2>/dev/null | wc -l)" = $((5 - bad)) ] &&
	pass "export meets the damaged chunk: $(cat oc.bad); no directory left behind" ||
	fail "export damage" "bad=$bad $(cat oc.bad 2>/dev/null) $(ls -d oc*)"

# ---- through the image server ----
store_certs || { fail "setup" "openssl"; finish; }
"$SHOAL" store grant st c1.pem s1 >/dev/null && pass "grant c1 snapshot s1" || fail "grant s1" ""
store_serve st || { fail "serve" "$(cat serve.err)"; finish; }
U=https://127.0.0.1:$PORT
P="--from $U --cert c1.pem --key c1.key --ca ca.pem"
"$SHOAL" store init st2 >/dev/null
"$SHOAL" store pull-snapshot st2 s1 $P --output json >p1.json 2>p1.err &&
	"$SHOAL" store export-snapshot st2 s1 p1 && cmp s1/memory p1/memory && cmp s1/state p1/state &&
	cmp disk.raw p1/disk-0.raw &&
	pass "pull-snapshot s1 (granted): $(J p1.json "d['fetched']") chunks, $(J p1.json "d['fetched_bytes']") bytes; its export is byte-equal" ||
	fail "pull s1" "$(cat p1.json p1.err serve.err)"
refused "pull-snapshot of a snapshot not granted" "403: client .* has no grant for image 's2'" \
	"$SHOAL" store pull-snapshot st2 s2 $P
H=$(curl -sS --cacert ca.pem --cert c1.pem --key c1.key $U/v1/snapshots/s1 |
	python3 -c "import json,sys; d=json.load(sys.stdin); print([c['hash'] for c in d['parts']['memory']['chunks'] if 'hash' in c][0])")
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem $U/v1/snapshots/s1)
[ -n "$H" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem --cert c1.pem --key c1.key $U/v1/chunks/$H)" = 200 ] &&
	[ "$code" != 200 ] && pass "a granted snapshot's chunk is served (200); without a certificate the snapshot is refused ($code)" ||
	fail "chunks of a snapshot" "H=$H code=$code"
curl -sS --cacert ca.pem --cert c1.pem --key c1.key -r 1000000-1999999 -o part.bin $U/v1/snapshots/s1/memory/raw &&
	cmp part.bin <(tail -c +1000001 s1/memory | head -c 1000000) &&
	code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem --cert c1.pem --key c1.key $U/v1/snapshots/s2/memory/raw) &&
	[ "$code" = 403 ] &&
	pass "/v1/snapshots/s1/memory/raw with a Range gives those bytes of s1's memory; s2's (not granted) is 403" ||
	fail "snapshot part raw" "code=$code"
"$SHOAL" store grant st c1.pem s2 >/dev/null &&
	"$SHOAL" store pull-snapshot st2 s2 $P --output json >p2.json 2>p2.err &&
	"$SHOAL" store export-snapshot st2 s2 p2 && cmp s2/memory p2/memory &&
	[ "$(J p2.json "d['fetched_bytes'] * 4 < d['size']")" = True ] &&
	pass "granted, pull-snapshot s2 fetches $(J p2.json "d['fetched']") chunks ($(J p2.json "d['fetched_bytes']") bytes of $(J p2.json "d['size']")): the rest came with s1" ||
	fail "pull s2" "$(cat p2.json p2.err)"
"$SHOAL" store grant st c1.pem s3 >/dev/null
(SHOAL_TEST_PULL_KILL_AFTER=10 "$SHOAL" store pull-snapshot st2 s3 $P >/dev/null 2>&1; exit $?) 2>/dev/null
rc=$?
[ $rc = 137 ] && [ ! -e st2/snapshots/s3 ] &&
	"$SHOAL" store pull-snapshot st2 s3 $P --output json >p3.json 2>p3.err &&
	"$SHOAL" store export-snapshot st2 s3 p3 && cmp s3/memory p3/memory &&
	pass "a pull-snapshot killed after 10 chunks leaves no object; the rerun completes byte-equal, fetching $(J p3.json "d['fetched']") chunks" ||
	fail "killed pull-snapshot" "rc=$rc $(cat p3.json p3.err 2>/dev/null)"
refused "pull-snapshot of one already here" "a snapshot named 's2' is already here" \
	"$SHOAL" store pull-snapshot st2 s2 $P
"$SHOAL" store verify st2 >/dev/null 2>&1 && pass "verify of the pulling store is clean" || fail "verify st2" ""
kill $SPID; wait $SPID 2>/dev/null; SPID=
finish
