#!/bin/bash
# store_serve.sh - `shoal store serve`, grants and `shoal store pull` as a
# user sees them (issue 14 item 3, docs/store.md "The image server"): a CA,
# a server certificate and two client certificates made here with openssl;
# two images (and a third for the kill) in a store; grants for one client.
# curl without a certificate, with one the CA did not sign, and with the
# other client's is refused (401, 401, 403); the granted client lists,
# reads manifests and chunks, and /raw with Range resumes byte-equal to
# `shoal store get`; pull into a second store rebuilds the same bytes, a
# pull killed mid-way (SIGKILL) is completed by a rerun that fetches only
# the rest; a revoke counts at the next request; garbage (junk TLS, junk
# TCP, an over-long URL, huge headers, a body) is refused and the server
# serves on; the connection limit holds; a corrupted segment is a 500
# naming the segment, the chunk and the image while other requests work;
# and pull refuses a chunk whose bytes do not match its hash (a fake
# server: openssl s_server -WWW).  Loopback only; runs on the host, no KVM.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/store_lib.bash"

[ -x "$SHOAL" ] || { fail "build" "$SHOAL missing"; finish; }
for t in openssl curl python3 ss; do
	command -v $t >/dev/null || { skip "store_serve" "$t not installed"; finish; }
done
cd "$TMP" || exit 1
SPID=
FPID=
HOLD=
trap 'kill $SPID $FPID $HOLD 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

# ---- keys and certificates (store_lib.bash) ----
store_certs c1 c2 &&
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rogue.key \
		-out rogue.pem -days 2 -subj /CN=rogue 2>/dev/null || { fail "setup" "openssl"; finish; }
fp() { openssl x509 -in $1.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum | cut -c1-64; }
FP1=$(fp c1)
FP2=$(fp c2)

# ---- images: a (3 MiB), b (a's first 2 MiB, 1 MiB of its own, 1 MiB of zeros), c (8 MiB) ----
python3 - <<'EOF'
import random
r = random.Random(23)
a = r.randbytes(3 << 20)
open('a.raw', 'wb').write(a)
open('b.raw', 'wb').write(a[:2 << 20] + r.randbytes(1 << 20) + bytes(1 << 20))
open('c.raw', 'wb').write(r.randbytes(8 << 20))
EOF
"$SHOAL" store init st >/dev/null && for i in a b c; do "$SHOAL" store add st $i.raw --name $i >/dev/null || break; done &&
	pass "setup: store with images a, b, c" || { fail "setup" "store add"; finish; }

# ---- grants ----
"$SHOAL" store grant st c1.pem a >/dev/null && "$SHOAL" store grant st "$FP1" c >/dev/null &&
	"$SHOAL" store grant st c2.pem b >/dev/null && "$SHOAL" store revoke st c2.pem b >/dev/null &&
	"$SHOAL" store grants st --output json >grants.json &&
	python3 -c "import json,sys; g=json.load(open('grants.json')); sys.exit(sorted((x['client'],x['image']) for x in g)!=[('$FP1','a'),('$FP1','c')])" &&
	pass "grant by certificate and by fingerprint, revoke; grants --output json lists (c1, a), (c1, c) with the public key's SHA-256" ||
	fail "grants" "$(cat grants.json)"
"$SHOAL" store grant st c1.pem nosuch >g.err 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "no image named 'nosuch'" g.err && pass "grant of an unknown image is refused: $(cat g.err)" ||
	fail "grant unknown image" "rc=$rc $(cat g.err)"
"$SHOAL" store grant st 1234 a >g.err 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "neither a SHA-256 fingerprint" g.err && pass "grant of a bad client is refused: $(cat g.err)" ||
	fail "grant bad client" "rc=$rc $(cat g.err)"

# ---- the server ----
start_server() {	# start_server EXTRA-ARGS...: sets SPID, PORT, U
	"$SHOAL" store serve st --listen 127.0.0.1:0 --cert server.pem --key server.key --client-ca ca.pem "$@" \
		>serve.out 2>>serve.err &
	SPID=$!
	for _ in $(seq 100); do grep -q '^serving' serve.out 2>/dev/null && break; sleep 0.1; done
	PORT=$(sed -n 's/.*https:\/\/127.0.0.1:\([0-9]*\) .*/\1/p' serve.out)
	U=https://127.0.0.1:$PORT
	[ -n "$PORT" ]
}
stop_server() { kill $SPID 2>/dev/null; wait $SPID 2>/dev/null; SPID=; }
start_server && pass "serve: $(cat serve.out)" || { fail "serve" "$(cat serve.err)"; finish; }

C="curl -sS --cacert ca.pem"
C1="$C --cert c1.pem --key c1.key"
C2="$C --cert c2.pem --key c2.key"
# req NAME WANT-CODE WANT-TEXT CURL-ARGS...: one request; its status and body
req() {
	local n=$1 want=$2 text=$3 code
	shift 3
	code=$("$@" -o body -w '%{http_code}' 2>curl.err)
	if [ "$code" = "$want" ] && grep -q -- "$text" body; then
		pass "$n: $code $(head -c 200 body | LC_ALL=C tr -c '[:print:]' '.')"
	else
		fail "$n" "want $want '$text', got $code: $(head -c 300 body | LC_ALL=C tr -c '[:print:]' '.') $(cat curl.err)"
	fi
}
req "no client certificate: 401" 401 "no client certificate" $C $U/v1/images
req "a certificate the client CA did not sign: 401" 401 "not signed by this server's client CA" \
	$C --cert rogue.pem --key rogue.key $U/v1/images
req "client 2 (no grants) lists nothing" 200 '"images":\[\]' $C2 $U/v1/images
req "client 2 may not read image a: 403" 403 "has no grant for image 'a'" $C2 $U/v1/images/a/manifest
req "client 1 lists a and c" 200 "\"client\":\"$FP1\"" $C1 $U/v1/images
python3 -c "import json,sys; sys.exit(sorted(i['name'] for i in json.load(open('body'))['images'])!=['a','c'])" &&
	pass "client 1's list is exactly a and c" || fail "client 1's list" "$(cat body)"
req "client 1 may not read image b: 403" 403 "has no grant for image 'b'" $C1 $U/v1/images/b/manifest
req "an unknown image is 403 too (names are not disclosed)" 403 "has no grant for image 'nosuch'" \
	$C1 $U/v1/images/nosuch/manifest
req "client 1 reads a's manifest" 200 '"chunks":\[' $C1 $U/v1/images/a/manifest
cp body a.manifest
req "client 1 may not read b's bytes: 403" 403 "has no grant for image 'b'" $C1 $U/v1/images/b/raw

# chunk hashes: shared by a and b, and b's own
"$SHOAL" store grant st c2.pem b >/dev/null
$C2 $U/v1/images/b/manifest -o b.manifest
"$SHOAL" store revoke st c2.pem b >/dev/null
read -r SHARED BONLY < <(python3 - <<'EOF'
import json
a = [c['hash'] for c in json.load(open('a.manifest'))['chunks'] if 'hash' in c]
b = [c['hash'] for c in json.load(open('b.manifest'))['chunks'] if 'hash' in c]
print([h for h in a if h in b][0], [h for h in b if h not in a][0])
EOF
)
req "a chunk of a granted image: 200" 200 "" $C1 $U/v1/chunks/$SHARED
[ "$(sha256sum <body | cut -c1-64)" = "$SHARED" ] && pass "the chunk's bytes match its name" ||
	fail "chunk bytes" "sha256 differs"
req "a chunk only in an image not granted: 403" 403 "is in no image granted to it" $C1 $U/v1/chunks/$BONLY
req "a malformed chunk name: 400" 400 "not a SHA-256" $C1 $U/v1/chunks/xyz
req "an unknown path: 404" 404 "no such path" $C1 $U/v1/nothing
req "a malformed image name: 400" 400 "image name" $C1 "$U/v1/images/.hidden/manifest"
req "POST: 405" 405 "only GET and HEAD" $C1 -X POST -d x $U/v1/images
req "a GET with a body: 400" 400 "a request body is not taken" $C1 -X GET -d x $U/v1/images
req "revoked client 2 (b) is refused at once: 403" 403 "no grant for image 'b'" $C2 $U/v1/images/b/manifest

# ---- /raw and Range ----
"$SHOAL" store get st a a.get && cmp -s a.get a.raw || fail "store get a"
req "client 1 reads a's bytes (/raw)" 200 "" $C1 $U/v1/images/a/raw
cmp -s body a.get && pass "/raw equals shoal store get" || fail "/raw" "differs"
$C1 -r 0-1234566 $U/v1/images/a/raw -o part -w '%{http_code}' >code 2>/dev/null
$C1 -C - $U/v1/images/a/raw -o part -w '%{http_code}' >>code 2>/dev/null
[ "$(cat code)" = "206206" ] && cmp -s part a.get && pass "a transfer cut at 1234567 bytes resumes (curl -C -, 206) byte-equal" ||
	fail "range resume" "codes $(cat code), $(stat -c %s part) bytes"
$C1 -r -1000 $U/v1/images/a/raw -o tail.got -D hdr 2>/dev/null
cmp -s tail.got <(tail -c 1000 a.get) && grep -qi "content-range: bytes 3144728-3145727/3145728" hdr &&
	pass "suffix range -1000: the last 1000 bytes, Content-Range right" || fail "suffix range" "$(cat hdr)"
req "a range past the end: 416" 416 "not one satisfiable range" $C1 -r 4000000-4000010 $U/v1/images/a/raw
req "a malformed range: 416" 416 "not one satisfiable range" $C1 -H "Range: bytes=abc" $U/v1/images/a/raw

# ---- pull ----
"$SHOAL" store init st2 >/dev/null
"$SHOAL" store pull st2 a --from $U --cert c1.pem --key c1.key --ca ca.pem --output json >pull.json 2>pull.err &&
	"$SHOAL" store get st2 a a2.raw && cmp -s a2.raw a.raw &&
	pass "pull a into a second store; get there equals the original ($(python3 -c "import json; j=json.load(open('pull.json')); print(j['fetched'], 'chunks fetched')"))" ||
	fail "pull a" "$(cat pull.err)"
"$SHOAL" store pull st2 a --from $U --cert c1.pem --key c1.key --ca ca.pem --output json >pull.json 2>&1 &&
	python3 -c "import json,sys; j=json.load(open('pull.json')); sys.exit(not j['up_to_date'] or j['fetched'])" &&
	pass "a second pull fetches nothing (up to date)" || fail "pull again" "$(cat pull.json)"
"$SHOAL" store pull st2 b --from $U --cert c1.pem --key c1.key --ca ca.pem >pull.out 2>pull.err
rc=$?
[ $rc -ne 0 ] && grep -q "403: client .* has no grant for image 'b'" pull.err && [ "$(grep -c . pull.err)" = 1 ] &&
	pass "pull of an image not granted: one line, rc=$rc: $(cat pull.err)" || fail "pull b" "rc=$rc $(cat pull.err)"
"$SHOAL" store pull st2 a --from $U --cert c1.pem --key c1.key >pull.out 2>pull.err
rc=$?
[ $rc -ne 0 ] && grep -qi "certificate" pull.err && pass "pull without --ca (the server's CA unknown) is refused: $(cat pull.err)" ||
	fail "pull without ca" "rc=$rc $(cat pull.err)"

# Killed (SIGKILL) after 600 of c's 1000-odd chunks: no image c, the
# committed chunks kept; a rerun fetches only the rest and c reads back equal.
rc=$( (SHOAL_TEST_PULL_KILL_AFTER=600 "$SHOAL" store pull st2 c --from $U --cert c1.pem --key c1.key \
	--ca ca.pem >/dev/null 2>&1; echo $?) 2>/dev/null)
"$SHOAL" store ls st2 --output json >ls.json
[ $rc = 137 ] && ! grep -q '"name": "c"' ls.json && pass "pull killed (SIGKILL) after 600 chunks: rc 137, no image c yet" ||
	fail "pull kill" "rc=$rc $(cat ls.json)"
"$SHOAL" store pull st2 c --from $U --cert c1.pem --key c1.key --ca ca.pem --output json >pull.json 2>pull.err
read -r total present fetched < <(python3 -c "import json; j=json.load(open('pull.json')); print(j['chunks'], j['present'], j['fetched'])" 2>/dev/null)
"$SHOAL" store get st2 c c2.raw 2>/dev/null && cmp -s c2.raw c.raw &&
	[ "${present:-0}" -ge 256 ] && [ "$((present + fetched))" = "$total" ] &&
	pass "the rerun completes: $present chunks were kept, $fetched fetched of $total; c reads back equal" ||
	fail "pull rerun" "present=$present fetched=$fetched total=$total $(cat pull.err)"
"$SHOAL" store verify st2 >/dev/null 2>&1 && pass "the second store verifies" || fail "verify st2"

# ---- writers run beside the server (it lets the store go when idle) ----
head -c 1M a.raw >d.raw
"$SHOAL" store add st d.raw --name d >/dev/null && "$SHOAL" store grant st c1.pem d >/dev/null &&
	req "an image added while the server runs is served at once" 200 '"chunks"' $C1 $U/v1/images/d/manifest
"$SHOAL" store rm st d && req "a granted image removed: 404" 404 "no image named 'd'" $C1 $U/v1/images/d/manifest ||
	fail "store rm while serving"

# ---- garbage: the server serves on ----
head -c 4000 /dev/urandom | timeout 10 openssl s_client -connect 127.0.0.1:$PORT -quiet >/dev/null 2>&1
(exec 3<>/dev/tcp/127.0.0.1/$PORT && head -c 4000 /dev/urandom >&3 && exec 3>&-) 2>/dev/null
printf 'GET / HTTP/1.1\r\n\r\n' | timeout 10 openssl s_client -connect 127.0.0.1:$PORT -quiet >/dev/null 2>&1
req "an over-long URL (20000 bytes): 414" 414 "" $C1 "$U/v1/images/$(head -c 20000 /dev/zero | tr '\0' a)/raw"
req "headers over 16 KiB: 431" 431 "" $C1 -H "X-Big: $(head -c 20000 /dev/zero | tr '\0' b)" $U/v1/images
req "after junk TLS, junk TCP and oversized requests the server still answers" 200 '"images"' $C1 $U/v1/images
kill -0 $SPID 2>/dev/null && pass "the server is still running" || fail "server died" "$(tail -5 serve.err)"

# ---- the connection limit ----
stop_server
start_server --max-connections 2 || fail "serve --max-connections 2" "$(cat serve.err)"
mkfifo hold && exec 4<>hold	# their stdin: open, never written
for i in 1 2; do
	openssl s_client -connect 127.0.0.1:$PORT -quiet <hold >/dev/null 2>&1 &
	HOLD="$HOLD $!"
done
for _ in $(seq 100); do [ "$(ss -Htn state established "( sport = :$PORT )" | wc -l)" -ge 2 ] && break; sleep 0.1; done
code=$($C1 --max-time 10 $U/v1/images -o /dev/null -w '%{http_code}' 2>/dev/null)
grep -q "reached connection limit" serve.err && [ "$code" = 000 ] &&
	pass "with 2 connections held open, a third is closed (--max-connections 2)" ||
	fail "connection limit" "code=$code $(tail -3 serve.err)"
kill $HOLD 2>/dev/null
wait $HOLD 2>/dev/null
HOLD=
exec 4>&-
# libmicrohttpd counts a closed connection out when its thread ends: retry
for _ in $(seq 50); do
	[ "$($C1 $U/v1/images -o /dev/null -w '%{http_code}' 2>/dev/null)" = 200 ] && break
	sleep 0.1
done
req "once they close, a new connection is served" 200 '"images"' $C1 $U/v1/images
stop_server
start_server || fail "serve again" "$(cat serve.err)"

# ---- a corrupted segment ----
seg=st/segments/00000001.seg
python3 - "$seg" <<'EOF'
import sys
f = open(sys.argv[1], 'r+b'); f.seek(1 << 20); b = f.read(16); f.seek(1 << 20)
f.write(bytes(x ^ 0x55 for x in b))
EOF
"$SHOAL" store verify st >verify.out 2>&1
BAD=$(sed -n 's/.*segment 00000001: chunk \([0-9a-f]\{16\}\).*/\1/p' verify.out | head -1)
BADFULL=$(python3 -c "import json; print([c['hash'] for c in json.load(open('a.manifest'))['chunks'] if c.get('hash','').startswith('$BAD')][0])" 2>/dev/null)
if [ -z "$BADFULL" ]; then
	fail "corrupt segment" "no chunk of a named by verify: $(cat verify.out)"
else
	req "the damaged chunk: 500 naming the segment, the chunk and image a" 500 \
		"segment 00000001: chunk $BAD.*it breaks images: a" $C1 $U/v1/chunks/$BADFULL
	off=$(python3 -c "
import json; o = 0
for c in json.load(open('a.manifest'))['chunks']:
    if c.get('hash') == '$BADFULL': print(o); break
    o += c['len']")
	req "a Range starting in the damaged chunk: 500 naming it" 500 "image a at offset $off: segment 00000001: chunk $BAD" \
		$C1 -r $off- $U/v1/images/a/raw
	$C1 $U/v1/images/a/raw -o /dev/null 2>curl.err
	rc=$?
	[ $rc -ne 0 ] && grep -q "GET /v1/images/a/raw: cut at byte .*segment 00000001: chunk $BAD" serve.err &&
		pass "a whole /raw is cut at the damaged chunk (curl rc=$rc), and the server log names it" ||
		fail "raw cut" "rc=$rc $(tail -2 serve.err)"
	"$SHOAL" store init st3 >/dev/null
	"$SHOAL" store pull st3 a --from $U --cert c1.pem --key c1.key --ca ca.pem >pull.out 2>pull.err
	rc=$?
	kept=$("$SHOAL" store du st3 --output json | python3 -c "import json,sys; print(json.load(sys.stdin)['chunks'])")
	[ $rc -ne 0 ] && grep -q "500: image a at offset $off: segment 00000001: chunk $BAD" pull.err && [ "$kept" -gt 0 ] &&
		pass "pull of the damaged image fails naming the segment, keeping the $kept chunks before it: $(cat pull.err)" ||
		fail "pull damaged" "rc=$rc kept=$kept $(cat pull.err)"
	req "other requests still work: c's manifest" 200 '"chunks"' $C1 $U/v1/images/c/manifest
fi
stop_server

# ---- the client refuses a chunk whose bytes do not match its hash ----
# A one-chunk image, so the pull asks for the chunk by name.
mkdir -p fake/v1/images/one fake/v1/chunks
first=$(python3 -c "import json; print(json.load(open('a.manifest'))['chunks'][0]['hash'])")
flen=$(python3 -c "import json; print(json.load(open('a.manifest'))['chunks'][0]['len'])")
echo "{\"name\": \"one\", \"size\": $flen, \"format\": \"raw\", \"chunks\": [{\"hash\": \"$first\", \"len\": $flen}]}" \
	>fake/v1/images/one/manifest
head -c "$flen" /dev/urandom >fake/v1/chunks/$first
FPORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
(cd fake && exec openssl s_server -WWW -accept 127.0.0.1:$FPORT -cert ../server.pem -key ../server.key -quiet) \
	>/dev/null 2>&1 &
FPID=$!
for _ in $(seq 100); do ss -Htln "( sport = :$FPORT )" | grep -q . && break; sleep 0.1; done
"$SHOAL" store init st4 >/dev/null
"$SHOAL" store pull st4 one --from https://127.0.0.1:$FPORT --cert c1.pem --key c1.key --ca ca.pem >pull.out 2>pull.err
rc=$?
"$SHOAL" store ls st4 --output json >ls.json
[ $rc -ne 0 ] && grep -q "chunk ${first:0:16} (image one at offset 0): the bytes received do not match its SHA-256 (refused)" pull.err &&
	grep -q '^\[\]' ls.json && "$SHOAL" store du st4 --output json | grep -q '"chunks": 0' &&
	pass "a server sending wrong bytes: pull refuses, keeps nothing: $(cat pull.err)" ||
	fail "hash mismatch" "rc=$rc $(cat pull.err) $(cat ls.json)"
kill $FPID 2>/dev/null
wait $FPID 2>/dev/null
FPID=
finish
