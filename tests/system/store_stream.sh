#!/bin/bash
# store_stream.sh - the store: block driver (issue 14 item 4, docs/store.md
# "Streaming") as `shoal img` sees it, against `shoal store serve` on
# loopback: a partial read fetches only the chunks it needs (counted); a
# full read (img convert) is byte-equal to the original and records the
# image in the cache, where `store get` rebuilds it; a second run fetches
# nothing; the prefetch thread fetches the rest by itself; with the server
# gone, cached chunks read (the manifest from the cache's copy) and an
# unfetched one is an error naming it; a chunk whose bytes do not match
# its hash (a fake server) is refused naming it and not kept; a
# read-write open and a bad spec are refused; the chunks the first run
# fetched on demand are recorded and lead the next cache's prefetch.  Host only, no KVM.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/store_lib.bash"

[ -x "$SHOAL" ] || { fail "build" "$SHOAL missing"; finish; }
for t in openssl python3 ss; do
	command -v $t >/dev/null || { skip "store_stream" "$t not installed"; finish; }
done
cd "$TMP" || exit 1
SPID=
FPID=
trap 'kill $SPID $FPID 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

# ---- keys and certificates (store_lib.bash) ----
store_certs || { fail "setup" "openssl"; finish; }

# ---- an image: 4 MiB of random bytes, 1 MiB of zeros, 3 MiB random ----
python3 - <<'EOF'
import random
r = random.Random(7)
open('a.raw', 'wb').write(r.randbytes(4 << 20) + bytes(1 << 20) + r.randbytes(3 << 20))
EOF
"$SHOAL" store init st >/dev/null && "$SHOAL" store add st a.raw --name a >/dev/null &&
	"$SHOAL" store grant st c1.pem a >/dev/null || { fail "setup" "store add/grant"; finish; }
CHUNKS=$("$SHOAL" store ls st --output json | python3 -c "import json,sys; i=json.load(sys.stdin)[0]; print(i['chunks'] - i['zero_chunks'])")

start_server() {
	"$SHOAL" store serve st --listen 127.0.0.1:0 --cert server.pem --key server.key --client-ca ca.pem \
		>serve.out 2>>serve.err &
	SPID=$!
	for _ in $(seq 100); do grep -q '^serving' serve.out 2>/dev/null && break; sleep 0.1; done
	PORT=$(sed -n 's/.*https:\/\/127.0.0.1:\([0-9]*\) .*/\1/p' serve.out)
	[ -n "$PORT" ]
}
stop_server() { kill $SPID 2>/dev/null; wait $SPID 2>/dev/null; SPID=; }
start_server && pass "setup: image a ($CHUNKS data chunks) served on port $PORT" ||
	{ fail "serve" "$(cat serve.err)"; finish; }
D() { echo "store:https://127.0.0.1:$PORT/a,cache=$1,cert=c1.pem,key=c1.key,ca=ca.pem${2:+,$2}"; }
# counters from the line printed at close: demand prefetch bytes missing
counts() { sed -n 's/.*fetched \([0-9]*\) chunks on demand, \([0-9]*\) by prefetch, \([0-9]*\) bytes .*; \([0-9]*\) of .*/\1 \2 \3 \4/p' "$1" | tail -1; }

# ---- a partial read fetches a fraction ----
"$SHOAL" img io -r -c "read 0 256k" "$(D c1 prefetch=off)" >io.out 2>io.err
rc=$?
read -r dem pre bytes miss < <(counts io.err)
[ $rc -eq 0 ] && [ -n "$dem" ] && [ "$dem" -gt 0 ] && [ "$pre" -eq 0 ] && [ "$dem" -lt $((CHUNKS / 4)) ] &&
	[ "$bytes" -lt $((1 << 20)) ] && [ "$miss" -eq $((CHUNKS - dem)) ] && [ -f c1/STORE ] &&
	pass "a 256 KiB read fetches $dem of $CHUNKS chunks ($bytes bytes) on demand into a new cache" ||
	fail "partial read" "rc=$rc $(cat io.err)"
"$SHOAL" img convert -O raw "$(D c1 prefetch=off)" whole.raw 2>conv.err
rc=$?
read -r dem2 pre2 bytes2 miss2 < <(counts conv.err)
[ $rc -eq 0 ] && cmp -s whole.raw a.raw && [ "$dem2" -eq $((CHUNKS - dem)) ] && [ "$miss2" -eq 0 ] &&
	pass "a full read (img convert) is byte-equal to the original; it fetched the other $dem2 chunks only" ||
	fail "full read" "rc=$rc $(cat conv.err) $(cmp whole.raw a.raw 2>&1)"
"$SHOAL" store get c1 a got.raw 2>get.err && cmp -s got.raw a.raw &&
	pass "once every chunk is in, the cache holds image a: store get equals the original" ||
	fail "store get from the cache" "$(cat get.err)"

# ---- the cache survives a restart ----
"$SHOAL" img compare "$(D c1)" a.raw >cmp.out 2>cmp.err
rc=$?
read -r dem3 pre3 bytes3 miss3 < <(counts cmp.err)
[ $rc -eq 0 ] && [ "$dem3" -eq 0 ] && [ "$pre3" -eq 0 ] && [ "$bytes3" -eq 0 ] &&
	pass "a second run reads it all from the cache: img compare equal, nothing fetched" ||
	fail "second run" "rc=$rc $(cat cmp.out cmp.err)"

# ---- prefetch fetches the rest by itself ----
SHOAL_TEST_STREAM_WAIT_PREFETCH=1 "$SHOAL" img io -r -c "read 0 4k" "$(D c2)" >io.out 2>io.err
rc=$?
read -r dem pre bytes miss < <(counts io.err)
"$SHOAL" store get c2 a got2.raw 2>get.err
[ $rc -eq 0 ] && [ "$miss" -eq 0 ] && [ "$pre" -gt 0 ] && [ $((dem + pre)) -eq "$CHUNKS" ] && cmp -s got2.raw a.raw &&
	pass "prefetch: a 4 KiB read fetched $dem on demand, the thread the other $pre; store get equals the original" ||
	fail "prefetch" "rc=$rc $(cat io.err get.err)"

# ---- the first run's read order leads the next prefetch ----
"$SHOAL" img io -r -c "read 6M 64k" -c "read 2M 16k" "$(D c5 prefetch=off)" >/dev/null 2>io.err
N=$(wc -l <c5/streams/a.order 2>/dev/null)
ok=1
for c in c6 c7; do	# c6 has c5's order file, c7 none (the control)
	"$SHOAL" store init $c >/dev/null && mkdir -p $c/streams || ok=0
	[ $c = c6 ] && cp c5/streams/a.order c6/streams/
	SHOAL_TEST_STREAM_WAIT_PREFETCH=1 SHOAL_TEST_STREAM_PREFETCH_MAX=$N "$SHOAL" img info "$(D $c)" >/dev/null 2>info.err || ok=0
	"$SHOAL" img io -r -c "read 6M 64k" -c "read 2M 16k" "$(D $c prefetch=off)" >/dev/null 2>io.err || ok=0
	read -r d[${c#c}] _ < <(counts io.err)
done
[ $ok = 1 ] && [ "${N:-0}" -gt 0 ] && [ "${d[6]}" -eq 0 ] && [ "${d[7]}" -gt 0 ] &&
	pass "the first run's $N demand fetches are recorded; a prefetch of $N chunks in that order leaves the same reads nothing to fetch (in manifest order: ${d[7]} fetched)" ||
	fail "read order" "ok=$ok N=$N d6=${d[6]} d7=${d[7]} $(cat info.err io.err)"

# ---- the server goes away ----
"$SHOAL" img io -r -c "read 0 1M" "$(D c3 prefetch=off)" >/dev/null 2>io.err ||
	fail "read 1 MiB into c3" "$(cat io.err)"
stop_server
"$SHOAL" img io -r -c "read 0 1M" "$(D c3 prefetch=off)" >io.out 2>io.err
rc=$?
[ $rc -eq 0 ] && grep -q "using the manifest kept in c3/streams/a.json" io.err &&
	pass "server gone: the cached first MiB still reads (manifest from the cache's copy)" ||
	fail "cached read without server" "rc=$rc $(cat io.err)"
"$SHOAL" img io -r -c "read 6M 64k" "$(D c3 prefetch=off)" >io.out 2>io.err
rc=$?
[ $rc -ne 0 ] && grep -q "chunk [0-9a-f]\{16\} (image a at offset [0-9]*) is not in the cache and cannot be fetched: https://127.0.0.1:$PORT/v1/chunks/" io.err &&
	pass "server gone: an unfetched block is an error naming the chunk: $(grep 'cannot be fetched' io.err | head -1)" ||
	fail "unfetched read without server" "rc=$rc $(cat io.err)"

# ---- refusals ----
start_server || fail "serve again" "$(cat serve.err)"
"$SHOAL" img info --output json "$(D c1)" >info.json 2>io.err &&
	python3 -c "import json,sys; j=json.load(open('info.json')); sys.exit(j['virtual-size'] != 8 << 20)" &&
	"$SHOAL" img map "$(D c1)" >map.out 2>>io.err &&
	pass "img info and img map take a store: disk (virtual size 8 MiB)" ||
	fail "img info/map" "$(cat info.json map.out io.err)"
"$SHOAL" img io -c "write 0 4k" "$(D c1)" >io.out 2>io.err
[ $? -ne 0 ] && grep -q "is read-only" io.err && pass "a read-write open is refused: $(grep read-only io.err)" ||
	fail "read-write open" "$(cat io.out io.err)"
"$SHOAL" img info "store:https://127.0.0.1:$PORT/a,cert=c1.pem" >io.out 2>io.err
[ $? -ne 0 ] && grep -q "needs cache=DIR" io.err && pass "a spec without cache= is refused: $(cat io.err)" ||
	fail "no cache=" "$(cat io.out io.err)"
"$SHOAL" img info "$(D c1 bogus=1)" >io.out 2>io.err
[ $? -ne 0 ] && grep -q "unknown or empty option 'bogus'" io.err && pass "an unknown option is refused" ||
	fail "bogus option" "$(cat io.out io.err)"
stop_server

# ---- a chunk whose bytes do not match its hash (a fake server) ----
mkdir -p fake/v1/images/one fake/v1/chunks
# a one-chunk image: a's first 8 KiB, named by its hash, served as random bytes
first=$(python3 -c "import hashlib; print(hashlib.sha256(open('a.raw','rb').read(8192)).hexdigest())")
echo "{\"name\": \"one\", \"size\": 8192, \"format\": \"raw\", \"chunks\": [{\"hash\": \"$first\", \"len\": 8192}]}" \
	>fake/v1/images/one/manifest
head -c 8192 /dev/urandom >fake/v1/chunks/$first
FPORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
(cd fake && exec openssl s_server -WWW -accept 127.0.0.1:$FPORT -cert ../server.pem -key ../server.key -quiet) \
	>/dev/null 2>&1 &
FPID=$!
for _ in $(seq 100); do ss -Htln "( sport = :$FPORT )" | grep -q . && break; sleep 0.1; done
"$SHOAL" img io -r -c "read 0 4k" "store:https://127.0.0.1:$FPORT/one,cache=c4,cert=c1.pem,key=c1.key,ca=ca.pem,prefetch=off" \
	>io.out 2>io.err
rc=$?
kept=$("$SHOAL" store du c4 --output json | python3 -c "import json,sys; print(json.load(sys.stdin)['chunks'])")
[ $rc -ne 0 ] && grep -q "chunk ${first:0:16} (image one at offset 0): the bytes received do not match its SHA-256 (refused)" io.err &&
	[ "$kept" = 0 ] &&
	pass "a server sending wrong bytes: the read fails naming the chunk, nothing kept: $(grep refused io.err)" ||
	fail "hash mismatch" "rc=$rc kept=$kept $(cat io.err)"
kill $FPID 2>/dev/null
wait $FPID 2>/dev/null
FPID=
finish
