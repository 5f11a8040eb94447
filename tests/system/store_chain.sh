#!/bin/bash
# store_chain.sh - a qcow2 backing chain kept as a chain in the image store
# (issue 14 item 2, docs/store.md "Chains"): `shoal store add --chain` of
# top.qcow2 over mid.qcow2 over base.qcow2 (each made by Shoal, so each
# carries a chain identity) stores three images, each linked to its
# parent, the two upper ones costing only their changed chunks;
# `shoal store get --chain` rebuilds the three files with the same
# identities, the overlays holding only the clusters that differ (QEMU's
# qemu-img compares the rebuilt top with the original and checks each
# file), keeps a parent file already there with the right identity and
# refuses one with another; an overlay added later over a stored base
# links by itself; rm of a parent is refused; verify names a missing
# parent; a raw base ends the chain; a snapshot whose disk is an overlay
# over a stored image (or is one) is imported linked to it and
# export-snapshot --chain gives the chain back with its identities; and
# `shoal store pull` and pull-snapshot, and `shoal store push` into another
# store, keep the link where the receiving store has the parent.  Runs on
# the host, no KVM.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/store_lib.bash"

[ -x "$SHOAL" ] || { fail "build" "$SHOAL missing"; finish; }
for t in qemu-img python3 openssl; do
	command -v $t >/dev/null || { skip "store_chain" "$t not installed"; finish; }
done
cd "$TMP" || exit 1
SPID=
trap 'kill $SPID 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

# chain FILE: "id generation parent-id parent-generation" of its shoal-chain
chain() {
	"$SHOAL" img info --output json "$1" | python3 -c "
import json, sys
c = json.load(sys.stdin).get('shoal-chain') or {}
print(c.get('id', '-'), c.get('generation', '-'), c.get('parent-id', '-'), c.get('parent-generation', '-'))"
}
# alloc FILE: clusters allocated in that file itself
alloc() { qemu-img map --output json "$1" | python3 -c "
import json, sys
print(sum(e['length'] for e in json.load(sys.stdin) if e['data'] and e['depth'] == 0) // 65536)"; }

# ---- the chain: base (8 MiB of data), mid (3 writes), top (2 writes) ----
head -c 8M /dev/urandom >data.raw
"$SHOAL" img convert -O qcow2 data.raw base.qcow2 >/dev/null 2>&1 &&
	"$SHOAL" img create -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 >/dev/null &&
	"$SHOAL" img io -c "write -P 0x11 1M 256k" -c "write -z 3M 64k" -c "write -P 0x22 7M 100k" mid.qcow2 >/dev/null &&
	"$SHOAL" img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 >/dev/null &&
	"$SHOAL" img io -c "write -P 0x33 2M 64k" -c "write -P 0x44 5M 300k" top.qcow2 >/dev/null &&
	[ "$(chain base.qcow2 | cut -d' ' -f1)" != - ] ||
	{ fail "setup" "could not make the chain"; finish; }
"$SHOAL" store init st >/dev/null
"$SHOAL" store add st top.qcow2 --name app --chain --output json >add.json 2>add.err &&
	"$SHOAL" store ls st --output json >ls.json &&
	python3 - <<'EOF'
import json, sys
ls = {i['name']: i for i in json.load(open('ls.json'))}
add = json.load(open('add.json'))
ok = (ls['app']['parent'] == 'mid.qcow2' and ls['mid.qcow2']['parent'] == 'base.qcow2'
      and ls['base.qcow2']['parent'] is None and add['new_bytes'] < 1 << 20
      and [(l['name'], l['added']) for l in add['layers']] == [('base.qcow2', True), ('mid.qcow2', True)]
      and add['layers'][1]['new_bytes'] < 1 << 20)
sys.exit(0 if ok else 1)
EOF
rc=$?
[ $rc = 0 ] && pass "add --chain: base.qcow2, mid.qcow2 and app, each linked to its parent; app cost $(python3 -c "import json; print(json.load(open('add.json'))['new_bytes'])") new bytes of 8 MiB" ||
	fail "add --chain" "$(cat add.json add.err ls.json)"
[ "$(od -An -tu4 -j8 -N4 st/images/base.qcow2 | tr -d ' ')" = 1 ] && [ "$(od -An -tu4 -j8 -N4 st/images/app | tr -d ' ')" = 2 ] &&
	pass "an image without a parent keeps manifest version 1; a linked one is version 2" ||
	fail "manifest versions" "$(od -An -tu4 -j8 -N4 st/images/base.qcow2) $(od -An -tu4 -j8 -N4 st/images/app)"

# ---- get --chain ----
mkdir out
"$SHOAL" store get st app out/app.qcow2 --chain >get.out 2>get.err &&
	qemu-img compare out/app.qcow2 top.qcow2 >cmp.out 2>&1 && qemu-img check out/app.qcow2 >/dev/null 2>&1 &&
	qemu-img check out/mid.qcow2 >/dev/null 2>&1 && qemu-img check out/base.qcow2 >/dev/null 2>&1 &&
	pass "get --chain writes out/base.qcow2, out/mid.qcow2, out/app.qcow2; qemu-img compare: the top equals the original, qemu-img check: all three clean" ||
	fail "get --chain" "$(cat get.out get.err cmp.out)"
ok=1
for f in base mid; do [ "$(chain out/$f.qcow2)" = "$(chain $f.qcow2)" ] || ok=0; done
[ "$(chain out/app.qcow2)" = "$(chain top.qcow2)" ] || ok=0
[ $ok = 1 ] && pass "each rebuilt file has its original's chain identity (id, generation, parent id and generation): $(chain out/app.qcow2)" ||
	fail "identities" "$(for f in base mid; do chain $f.qcow2; chain out/$f.qcow2; done; chain top.qcow2; chain out/app.qcow2)"
a_top=$(alloc top.qcow2) a_out=$(alloc out/app.qcow2) a_mid=$(alloc out/mid.qcow2)
[ "$a_out" -le "$a_top" ] && [ "$a_mid" -le 8 ] && [ "$a_out" -ge 1 ] &&
	pass "the overlays hold only what differs: app $a_out clusters (the original $a_top), mid $a_mid of 128" ||
	fail "overlay allocation" "app $a_out (orig $a_top), mid $a_mid"

# a parent already there with the same identity is kept; one with another is refused
mkdir out2 out3
cp base.qcow2 out2/base.qcow2 && touch -d @1000000000 out2/base.qcow2
"$SHOAL" store get st app out2/app.qcow2 --chain >get2.out 2>get2.err &&
	grep -q "out2/base.qcow2: kept" get2.out && [ "$(stat -c %Y out2/base.qcow2)" = 1000000000 ] &&
	qemu-img compare out2/app.qcow2 top.qcow2 >/dev/null 2>&1 &&
	pass "a base already there with the same identity is kept as it is (only mid and app written)" ||
	fail "keep base" "$(cat get2.out get2.err)"
"$SHOAL" img convert -O qcow2 data.raw out3/base.qcow2 >/dev/null 2>&1
"$SHOAL" store get st app out3/app.qcow2 --chain >get3.out 2>get3.err
rc=$?
[ $rc -ne 0 ] && grep -q "out3/base.qcow2: there already, but not image 'base.qcow2' of the store" get3.err &&
	[ ! -e out3/app.qcow2 ] && [ ! -e out3/mid.qcow2 ] &&
	pass "a base there with another identity is refused, nothing left: $(cat get3.err)" ||
	fail "foreign base" "rc=$rc $(cat get3.err) $(ls out3)"

# ---- links by themselves; rm; verify ----
"$SHOAL" img create -f qcow2 -b base.qcow2 -F qcow2 other.qcow2 >/dev/null &&
	"$SHOAL" img io -c "write -P 0x55 0 64k" other.qcow2 >/dev/null &&
	"$SHOAL" store add st other.qcow2 >/dev/null 2>&1 && "$SHOAL" store ls st >ls.out &&
	grep -q "^other.qcow2 .* base.qcow2$" ls.out &&
	pass "an overlay added without --chain over a stored base links to it by itself (ls: PARENT base.qcow2)" ||
	fail "auto link" "$(cat ls.out)"
"$SHOAL" store rm st base.qcow2 >rm.out 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "image 'base.qcow2' is the parent of mid.qcow2, other.qcow2 in a chain" rm.out &&
	pass "rm of a parent is refused: $(cat rm.out)" || fail "rm parent" "rc=$rc $(cat rm.out)"
cp -a st st-broken && rm st-broken/images/mid.qcow2
"$SHOAL" store verify st-broken >v.out 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "image app: its parent 'mid.qcow2' is not in the store" v.out &&
	pass "verify names an image whose parent is gone: $(grep parent v.out)" || fail "verify parent" "rc=$rc $(cat v.out)"

# ---- a raw base ends the chain ----
head -c 4M /dev/urandom >rawbase.raw
"$SHOAL" img create -f qcow2 -b rawbase.raw -F raw ov.qcow2 >/dev/null &&
	"$SHOAL" img io -c "write -P 0x66 64k 64k" ov.qcow2 >/dev/null &&
	"$SHOAL" store add st ov.qcow2 --chain >ov.out 2>ov.err && "$SHOAL" store ls st --output json >ls2.json &&
	grep -q "rawbase.raw: no chain identity (a raw image)" ov.err &&
	python3 -c "import json,sys; sys.exit(next(i for i in json.load(open('ls2.json')) if i['name']=='ov.qcow2')['parent'] is not None)" &&
	mkdir out4 && "$SHOAL" store get st ov.qcow2 out4/ov.qcow2 --chain >/dev/null 2>&1 &&
	qemu-img compare out4/ov.qcow2 ov.qcow2 >/dev/null 2>&1 && [ "$(ls out4)" = ov.qcow2 ] &&
	pass "a raw base ends the chain (said so): ov.qcow2 is stored flat and rebuilt as one image equal to the original" ||
	fail "raw base" "$(cat ov.out ov.err)"

# ---- snapshots: a disk that is an overlay over a stored image keeps its chain ----
# snapdir DIR DISK: a snapshot directory whose writable disk is DISK (qcow2, its identity recorded)
snapdir() {
	mkdir "$1" && head -c 1M /dev/urandom >"$1/memory" && head -c 4096 /dev/urandom >"$1/state" &&
		python3 - "$1" "$2" "$(chain "$2")" <<'EOF'
import json, os, sys
d, disk, ch = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3].split()
st = os.stat(disk)
rec = {"path": disk, "writable": True, "format": "qcow2", "size": st.st_size, "ino": st.st_ino,
       "mtime_ns": st.st_mtime_ns, "virtual_size": 8 << 20, "overlay": disk + ".ov",
       "chain_id": {"id": ch[0], "generation": int(ch[1])}}
json.dump({"format": "shoal-snapshot", "version": 1, "created": 0,
           "config": {"memory": "1M", "disks": [{"path": disk}]},
           "disks": [rec], "files": {}}, open(d + '/manifest.json', 'w'))
EOF
}
"$SHOAL" img create -f qcow2 -b base.qcow2 -F qcow2 frozen.qcow2 >/dev/null &&
	"$SHOAL" img io -c "write -P 0x77 6M 192k" frozen.qcow2 >/dev/null && snapdir sn frozen.qcow2 &&
	"$SHOAL" store import-snapshot st sn --name sn1 --output json >si.json 2>si.err &&
	python3 -c "
import json, sys
d = json.load(open('st/snapshots/sn1/snapshot.json'))['disks'][0]
sys.exit(d.get('parent', {}).get('image') != 'base.qcow2' or json.load(open('si.json'))['new_bytes'] > 2 << 20)" &&
	pass "import-snapshot: a disk that is an overlay over image base.qcow2 is linked to it (and costs only its own chunks)" ||
	fail "snapshot import with a parent" "$(cat si.json si.err st/snapshots/sn1/snapshot.json)"
"$SHOAL" store export-snapshot st sn1 outS --chain >se.out 2>se.err &&
	qemu-img compare outS/disk-0.qcow2 frozen.qcow2 >/dev/null 2>&1 && qemu-img check outS/disk-0.qcow2 >/dev/null 2>&1 &&
	[ "$(chain outS/disk-0.qcow2)" = "$(chain frozen.qcow2)" ] && [ "$(chain outS/base.qcow2)" = "$(chain base.qcow2)" ] &&
	python3 -c "
import json, os, sys
d = json.load(open('outS/manifest.json'))['disks'][0]
st = os.stat('outS/disk-0.qcow2')
sys.exit(not (d['format'] == 'qcow2' and d['path'] == os.path.abspath('outS/disk-0.qcow2') and d['ino'] == st.st_ino
              and d['chain_id']['id'] == '$(chain frozen.qcow2 | cut -d' ' -f1)'))" &&
	pass "export-snapshot --chain: disk-0.qcow2 over base.qcow2 in OUTDIR, equal to the frozen disk, with its identity; manifest.json names it (qcow2, its chain identity)" ||
	fail "snapshot export --chain" "$(cat se.out se.err; cat outS/manifest.json 2>&1 | head -c 600)"
"$SHOAL" store export-snapshot st sn1 outR >/dev/null 2>&1 && [ -f outR/disk-0.raw ] && [ ! -e outR/base.qcow2 ] &&
	qemu-img compare -f raw -F qcow2 outR/disk-0.raw frozen.qcow2 >/dev/null 2>&1 &&
	pass "export-snapshot without --chain still writes the disk as one raw file, equal" || fail "snapshot export raw" "$(ls outR)"
snapdir sm mid.qcow2 && "$SHOAL" store import-snapshot st sm --name sm1 >/dev/null 2>&1 &&
	"$SHOAL" store export-snapshot st sm1 outM --chain >sm.out 2>&1 &&
	grep -q '"image": "mid.qcow2"' st/snapshots/sm1/snapshot.json &&
	qemu-img compare outM/disk-0.qcow2 mid.qcow2 >/dev/null 2>&1 && [ "$(chain outM/disk-0.qcow2)" = "$(chain mid.qcow2)" ] &&
	[ "$(chain outM/base.qcow2)" = "$(chain base.qcow2)" ] &&
	pass "a snapshot disk stored by reference to image mid.qcow2 comes back as mid's chain (over base.qcow2)" ||
	fail "snapshot by reference --chain" "$(cat sm.out; cat st/snapshots/sm1/snapshot.json)"
"$SHOAL" store rm st base.qcow2 >rm2.out 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "sn1" rm2.out && pass "rm of an image a snapshot's disk is linked to is refused: $(cat rm2.out)" ||
	fail "rm base of a snapshot" "rc=$rc $(cat rm2.out)"

# ---- pull keeps the link where the puller has the parent ----
store_certs || { fail "setup" "openssl"; finish; }
for i in base.qcow2 mid.qcow2 app sn1; do "$SHOAL" store grant st c1.pem $i >/dev/null; done
store_serve st || { fail "serve" "$(cat serve.err)"; finish; }
pull() { "$SHOAL" store pull "$1" "$2" --from https://127.0.0.1:$PORT --cert c1.pem --key c1.key --ca ca.pem >/dev/null 2>>pull.err; }
"$SHOAL" store init p1 >/dev/null && "$SHOAL" store init p2 >/dev/null
pull p1 base.qcow2 && pull p1 mid.qcow2 && pull p1 app && pull p2 app &&
	"$SHOAL" store ls p1 >p1.out && "$SHOAL" store ls p2 >p2.out &&
	grep -q "^app .* mid.qcow2$" p1.out && grep -q "^mid.qcow2 .* base.qcow2$" p1.out && grep -q "^app .* -$" p2.out &&
	mkdir out5 && "$SHOAL" store get p1 app out5/app.qcow2 --chain >/dev/null 2>&1 &&
	qemu-img compare out5/app.qcow2 top.qcow2 >/dev/null 2>&1 && [ "$(chain out5/app.qcow2)" = "$(chain top.qcow2)" ] &&
	pass "pull of base, mid and app keeps the chain (rebuilt equal, same identity); app pulled alone stands alone" ||
	fail "pull chain" "$(cat pull.err p1.out p2.out)"
pulls() { "$SHOAL" store pull-snapshot "$1" sn1 --from https://127.0.0.1:$PORT --cert c1.pem --key c1.key --ca ca.pem >/dev/null 2>>pull.err; }
pulls p1 && pulls p2 && "$SHOAL" store export-snapshot p1 sn1 outP1 --chain >/dev/null 2>>pull.err &&
	"$SHOAL" store export-snapshot p2 sn1 outP2 --chain >/dev/null 2>>pull.err &&
	[ -f outP1/disk-0.qcow2 ] && [ "$(chain outP1/disk-0.qcow2)" = "$(chain frozen.qcow2)" ] &&
	qemu-img compare outP1/disk-0.qcow2 frozen.qcow2 >/dev/null 2>&1 &&
	[ -f outP2/disk-0.raw ] && qemu-img compare -f raw -F qcow2 outP2/disk-0.raw frozen.qcow2 >/dev/null 2>&1 &&
	pass "pull-snapshot keeps the disk's link where the store has base.qcow2 (export --chain: the chain), and drops it where not (a raw disk, equal)" ||
	fail "pull-snapshot chain" "$(cat pull.err; ls outP1 outP2 2>&1)"

# ---- push: the authoring side, into another store ----
push() { "$SHOAL" store push st "$1" --to "$2" --output json >push.json 2>push.err; }
J() { python3 -c "import json; print(json.load(open('push.json'))$1)"; }
push base.qcow2 q1 && [ "$(J "['copied']")" -gt 0 ] && push mid.qcow2 q1 && push app q1 && [ "$(J "['kept_parent']")" = True ] &&
	"$SHOAL" store ls q1 >q1.out && grep -q "^app .* mid.qcow2$" q1.out && mkdir outQ &&
	"$SHOAL" store get q1 app outQ/app.qcow2 --chain >/dev/null 2>&1 && qemu-img compare outQ/app.qcow2 top.qcow2 >/dev/null 2>&1 &&
	[ "$(chain outQ/app.qcow2)" = "$(chain top.qcow2)" ] &&
	pass "push of base.qcow2, mid.qcow2 and app into a new store keeps the chain (rebuilt equal, same identity); app copied only $(J "['copied']") chunks, $(J "['present']") were there" ||
	fail "push chain" "$(cat push.json push.err q1.out 2>&1)"
push sn1 q1 && [ "$(J "['kind']")" = snapshot ] && [ "$(J "['kept_parent']")" = True ] &&
	"$SHOAL" store export-snapshot q1 sn1 outQS --chain >/dev/null 2>&1 && qemu-img compare outQS/disk-0.qcow2 frozen.qcow2 >/dev/null 2>&1 &&
	cmp -s outQS/memory sn/memory && cmp -s outQS/state sn/state &&
	pass "push of snapshot sn1: memory and state byte-equal, its disk's chain kept (export --chain equal to the frozen disk)" ||
	fail "push snapshot" "$(cat push.json push.err)"
push sn1 q2 && [ "$(J "['kept_parent']")" = False ] && "$SHOAL" store export-snapshot q2 sn1 outQ2 --chain >/dev/null 2>&1 &&
	[ -f outQ2/disk-0.raw ] && qemu-img compare -f raw -F qcow2 outQ2/disk-0.raw frozen.qcow2 >/dev/null 2>&1 &&
	pass "push of sn1 into a store without base.qcow2: the disk stands alone (a raw disk on export, equal)" ||
	fail "push snapshot without its base" "$(cat push.json push.err)"
push app q1
rc=$?
[ $rc -ne 0 ] && grep -q "an image named 'app' is already in the store" push.err && pass "push of a name the other store has is refused: $(cat push.err)" ||
	fail "push twice" "rc=$rc $(cat push.err)"
push nosuch q1
rc=$?
[ $rc -ne 0 ] && grep -q "no image named 'nosuch'" push.err && pass "push of an unknown name: $(cat push.err)" ||
	fail "push unknown" "rc=$rc $(cat push.err)"
finish
