#!/bin/bash
# store_vmkeys.sh - per-VM key pairs for the image server (issue 14 item
# 3, mechanism 23; docs/store.md "Per-VM keys"), as a user sees them.
# Keys made by `shoal store keygen` read in openssl and openssl's in
# shoal; a store with images a, b, c; host c1 granted a for itself, b only
# (and a) for VM 1 and c only for VM 2.  Over `shoal store serve` (mutual TLS,
# loopback), with curl and with shoal's own clients:
#   - without a proof c1 sees only a; with VM 1's proof a and b, not c;
#     with VM 2's, c and not b; chunks follow the same grants;
#   - a proof signed by openssl over the documented statement holds;
#   - VM 1's proof for c1 is refused on host c2, as are a proof out of
#     time, one valid too long, a changed signature, a malformed one and
#     one for a VM key no grant names (401, each with its reason);
#   - `shoal store pull --vm-key` and `--vm-proof` fetch b byte-equal, and
#     without either the pull is refused naming the grant; a store: disk
#     with vm-key= reads b whole;
#   - revoke --vm counts at the next request; a grants file whose VM key
#     does not match its fingerprint refuses everyone, naming the file.
# Runs on the host, no KVM.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/store_lib.bash"

[ -x "$SHOAL" ] || { fail "build" "$SHOAL missing"; finish; }
for t in openssl curl python3 xxd; do
	command -v $t >/dev/null || { skip "store_vmkeys" "$t not installed"; finish; }
done
cd "$TMP" || exit 1
SPID=
trap 'kill $SPID 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

store_certs c1 c2 || { fail "setup" "openssl"; finish; }
fp() { openssl x509 -in $1.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum | cut -c1-64; }
FP1=$(fp c1)

# ---- keys ----
"$SHOAL" store keygen vm1 >kg.out 2>&1 && openssl pkey -in vm1 -pubout 2>/dev/null | cmp -s - vm1.pub &&
	VM1=$(openssl pkey -pubin -in vm1.pub -outform DER | sha256sum | cut -c1-64) && grep -q "$VM1" kg.out &&
	[ "$(stat -c %a vm1)" = 600 ] &&
	pass "keygen: openssl reads the private key (mode 0600) and derives the same public key; the fingerprint printed is SHA-256 of its DER" ||
	fail "keygen" "$(cat kg.out)"
openssl genpkey -algorithm ed25519 -out vm2 2>/dev/null && openssl pkey -in vm2 -pubout -out vm2.pub &&
	VM2=$(openssl pkey -pubin -in vm2.pub -outform DER | sha256sum | cut -c1-64) ||
	{ fail "setup" "openssl genpkey"; finish; }
"$SHOAL" store keygen vm3 >/dev/null 2>&1 || fail "setup" "keygen vm3"
"$SHOAL" store keygen vm1 >kg.err 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "vm1: already there" kg.err && pass "keygen never overwrites a key: $(cat kg.err)" ||
	fail "keygen overwrite" "rc=$rc $(cat kg.err)"
openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out ec.key 2>/dev/null
"$SHOAL" store vm-proof ec.key --client c1.pem >vp.err 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "ec.key: not an Ed25519 private key" vp.err && pass "a P-256 key is refused as a VM key: $(cat vp.err)" ||
	fail "non-Ed25519 key" "rc=$rc $(cat vp.err)"

# ---- images and grants ----
python3 - <<'EOF'
import random
r = random.Random(3)
for n in 'abc':
    open(n + '.raw', 'wb').write(r.randbytes(3 << 20))
EOF
"$SHOAL" store init st >/dev/null && for i in a b c; do "$SHOAL" store add st $i.raw --name $i >/dev/null || break; done &&
	"$SHOAL" store grant st c1.pem a >/dev/null && "$SHOAL" store grant st c1.pem b --vm vm1.pub >g.out &&
	"$SHOAL" store grant st "$FP1" c --vm vm2 >>g.out && "$SHOAL" store grant st c1.pem a --vm vm1.pub >/dev/null &&
	"$SHOAL" store grants st --output json >grants.json &&
	python3 -c "
import json,sys
g = sorted((x['client'], x['image'], x.get('vm') or '') for x in json.load(open('grants.json')))
sys.exit(g != [('$FP1','a',''), ('$FP1','a','$VM1'), ('$FP1','b','$VM1'), ('$FP1','c','$VM2')])" &&
	grep -q "image b, for VM key $VM1" g.out &&
	pass "grant --vm by public key file and by private key file; grants --output json names each VM key" ||
	fail "grants" "$(cat g.out grants.json)"
store_serve st || { fail "serve" "$(cat serve.err)"; finish; }
URL=https://127.0.0.1:$PORT

# C CLIENT PATH [PROOF]: curl as CLIENT; prints the status, body in c.body
C() {
	local h=()
	[ -n "${3:-}" ] && h=(-H "Shoal-VM-Proof: $3")
	curl -s -o c.body -w '%{http_code}' --cacert ca.pem --cert $1.pem --key $1.key "${h[@]}" "$URL$2"
}
names() { python3 -c "import json; print(' '.join(sorted(i['name'] for i in json.load(open('c.body'))['images'])))"; }
P1=$("$SHOAL" store vm-proof vm1 --client c1.pem)
P2=$("$SHOAL" store vm-proof vm2 --client "$FP1" --valid 600)

s=$(C c1 /v1/images) && [ "$s" = 200 ] && [ "$(names)" = a ] &&
	[ "$(C c1 /v1/images/b/manifest)" = 403 ] && grep -q "has no grant for image 'b'" c.body &&
	pass "without a proof c1 lists only a, and b is 403" || fail "no proof" "$s $(cat c.body)"
s=$(C c1 /v1/images "$P1") && [ "$s" = 200 ] && [ "$(names)" = "a b" ] &&	# a once, granted twice
	[ "$(C c1 /v1/images/b/manifest "$P1")" = 200 ] && [ "$(C c1 /v1/images/c/manifest "$P1")" = 403 ] &&
	grep -q "for itself or for VM key ${VM1:0:16}" c.body &&
	pass "with VM 1's proof c1 lists a and b and reads b's manifest; c (VM 2's) is 403 naming the VM key" ||
	fail "VM 1 proof" "$s $(cat c.body)"
s=$(C c1 /v1/images/c/manifest "$P2") && [ "$s" = 200 ] && [ "$(C c1 /v1/images/b/manifest "$P2")" = 403 ] &&
	pass "with VM 2's proof (openssl's key, proof for the fingerprint) c is 200 and b 403" || fail "VM 2 proof" "$s $(cat c.body)"
C c1 /v1/images/b/manifest "$P1" >/dev/null
CH=$(python3 -c "import json; print(json.load(open('c.body'))['chunks'][0]['hash'])")
[ "$(C c1 /v1/chunks/$CH)" = 403 ] && [ "$(C c1 /v1/chunks/$CH "$P1")" = 200 ] &&
	[ "$(head -c 100 b.raw | xxd -p)" = "$(head -c 100 c.body | xxd -p)" ] &&
	pass "a chunk of b: 403 without a proof, its bytes with VM 1's" || fail "chunk" "$(cat c.body | head -c 300)"

# a proof made by openssl over the statement docs/store.md gives
U=$(($(date +%s) + 300))
printf 'shoal-vm-proof v1\nclient %s\nvm %s\nuntil %s\n' "$FP1" "$VM1" $U >stmt
SIG=$(openssl pkeyutl -sign -inkey vm1 -rawin -in stmt | xxd -p | tr -d '\n')
s=$(C c1 /v1/images/b/manifest "v1 $VM1 $U $SIG") && [ "$s" = 200 ] &&
	pass "a proof signed by openssl pkeyutl over the documented statement holds" || fail "openssl proof" "$s $(cat c.body)"

# ---- refusals, each 401 with its reason ----
refused() {	# WHAT CLIENT PROOF PATTERN
	local s
	s=$(C $2 /v1/images/b/manifest "$3")
	[ "$s" = 401 ] && grep -q "$4" c.body && pass "$1: 401, $(python3 -c "import json; print(json.load(open('c.body'))['error'])")" ||
		fail "$1" "$s $(cat c.body)"
}
refused "VM 1's proof for c1 used by host c2" c2 "$P1" "bad signature"
refused "a proof out of time" c1 "$("$SHOAL" store vm-proof vm1 --client c1.pem --until $(($(date +%s) - 60)))" "ran out"
refused "a proof valid for 30 days" c1 "$("$SHOAL" store vm-proof vm1 --client c1.pem --until $(($(date +%s) + 30 * 86400)))" "more than the 604800 s"
refused "a changed signature" c1 "${P1%?}$( [ "${P1: -1}" = 0 ] && echo 1 || echo 0)" "bad signature"
refused "a proof with VM 2's key claiming VM 1" c1 "v1 $VM1 ${P2#v1 * }" "bad signature"
refused "a malformed proof" c1 "v1 nonsense" "malformed"
refused "a proof of a VM key no grant names" c1 "$("$SHOAL" store vm-proof vm3 --client c1.pem)" "is named by no grant"
s=$(C c1 /v1/images/a/manifest) && [ "$s" = 200 ] && pass "the server serves on after the refusals" || fail "serves on" "$s"

# ---- shoal's clients ----
pull() { "$SHOAL" store pull "$1" b --from "$URL" --cert c1.pem --key c1.key --ca ca.pem "${@:2}"; }
"$SHOAL" store init p1 >/dev/null && "$SHOAL" store init p2 >/dev/null && "$SHOAL" store init p3 >/dev/null
pull p1 >p.out 2>p.err
rc=$?
[ $rc -ne 0 ] && grep -q "403: client ${FP1:0:16}... has no grant for image 'b'" p.err &&
	pass "pull of b without a VM key is refused: $(cat p.err)" || fail "pull without key" "rc=$rc $(cat p.out p.err)"
pull p1 --vm-key vm1 >p.out 2>p.err && "$SHOAL" store get p1 b got1.raw 2>>p.err && cmp -s got1.raw b.raw &&
	pull p2 --vm-proof "$P1" >>p.out 2>>p.err && "$SHOAL" store get p2 b got2.raw 2>>p.err && cmp -s got2.raw b.raw &&
	pass "pull --vm-key and pull --vm-proof fetch b; store get equals the original" ||
	fail "pull with key" "$(cat p.out p.err)"
pull p3 --vm-key vm2 >p.out 2>p.err
rc=$?
[ $rc -ne 0 ] && grep -q "no grant for image 'b' (for itself or for VM key ${VM2:0:16}" p.err &&
	pass "pull of b with VM 2's key is refused: $(cat p.err)" || fail "pull with the other key" "rc=$rc $(cat p.err)"
"$SHOAL" img convert -O raw "store:$URL/b,cache=sc,cert=c1.pem,key=c1.key,ca=ca.pem,vm-key=vm1" streamed.raw 2>s.err &&
	cmp -s streamed.raw b.raw &&
	pass "a store: disk with vm-key= reads b whole (img convert), byte-equal" || fail "stream with vm-key" "$(cat s.err)"
"$SHOAL" img info "store:$URL/b,cache=sc2,cert=c1.pem,key=c1.key,ca=ca.pem" >/dev/null 2>s.err
rc=$?
[ $rc -ne 0 ] && grep -q "403" s.err && pass "the same disk without vm-key= is refused: $(head -1 s.err)" ||
	fail "stream without vm-key" "rc=$rc $(cat s.err)"

# ---- revoke, damage ----
"$SHOAL" store revoke st c1.pem b --vm vm1.pub >/dev/null && s=$(C c1 /v1/images/b/manifest "$P1") && [ "$s" = 403 ] &&
	pass "revoke --vm: VM 1's proof no longer gets b (403 at the next request)" || fail "revoke --vm" "$s $(cat c.body)"
"$SHOAL" store revoke st c1.pem b --vm vm1.pub >r.err 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "has no grant for image 'b' for VM key" r.err && pass "revoking it again names what is not there: $(cat r.err)" ||
	fail "revoke twice" "rc=$rc $(cat r.err)"
python3 - <<EOF
import json
g = json.load(open('st/grants'))
for x in g['grants']:
    if x.get('vm'):
        x['vm'] = '0' * 64
json.dump(g, open('st/grants', 'w'))
EOF
s=$(C c1 /v1/images/a/manifest) && [ "$s" = 500 ] && grep -q "st/grants: damaged grants file (entry 1: its VM key)" c.body &&
	pass "a grant whose VM key does not match its fingerprint: the server refuses everyone naming the file" ||
	fail "damaged VM grant" "$s $(cat c.body)"
finish
