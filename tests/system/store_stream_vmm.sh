#!/bin/bash
# store_stream_vmm.sh - a store: disk in the VMM, with the test guest
# (docs/store.md, "Streaming into a VM"); the Linux guest's reads are
# slow_linux_store_stream.sh's.  Against `shoal store serve` on loopback:
#   - a running VMM with --disk store:...,store-cache=...,readonly (seccomp
#     on, the default): every one of its threads is filtered (Seccomp: 2 in
#     /proc), the disk's loader and prefetch threads included;
#   - the control socket's disk-add of a store: disk is refused,
#     naming why, and the VM runs on;
#   - the same disk without readonly is refused (a store: disk is
#     read-only), and so is one under --jail (root only), each with its line.
# tier: kvm
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/store_lib.bash"
require_kvm store_stream_vmm
for t in openssl python3; do
	command -v $t >/dev/null || { skip "store_stream_vmm" "$t not installed"; finish; }
done
cd "$TMP" || exit 1
SPID=
VPID=
trap 'kill $VPID $SPID 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

# ---- keys and certificates (store_lib.bash) ----
store_certs || { fail "setup" "openssl"; finish; }
head -c 2M /dev/urandom >a.raw
"$SHOAL" store init st >/dev/null && "$SHOAL" store add st a.raw --name a >/dev/null &&
	"$SHOAL" store grant st c1.pem a >/dev/null || { fail "setup" "store add/grant"; finish; }
store_serve st || { fail "serve" "$(cat serve.err)"; finish; }
D() { echo "store:https://127.0.0.1:$PORT/a,store-cache=$TMP/$1,store-cert=$TMP/c1.pem,store-key=$TMP/c1.key,store-ca=$TMP/ca.pem"; }
wait_sock() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }

# ---- a running VMM with a store: disk: every thread filtered ----
"$SHOAL" run --kernel "$GUEST" --cmdline shell --console none --disk "$(D c1),readonly" \
	--api-socket "$TMP/v.sock" --timeout 120 </dev/null 2>v.err &
VPID=$!
if wait_sock "$TMP/v.sock"; then
	n=0 filtered=0
	for t in /proc/$VPID/task/*; do
		n=$((n + 1))
		grep -q '^Seccomp:[[:space:]]*2$' "$t/status" && filtered=$((filtered + 1))
	done
	# the store's threads exist: its loader, one more than a plain disk's
	# VMM, and while it runs its prefetch, one more again (it ends once
	# the image is all here: a box's clean-clone run once counted 5)
	[ "$n" -ge 5 ] && [ "$filtered" = "$n" ] &&
		pass "a VMM with a store: disk runs, and every thread is filtered ($filtered of $n)" ||
		fail "every thread of a VMM with a store: disk is filtered" "$filtered of $n; $(cat v.err)"
	# the control socket's disk-add (shoal disk add resolves FILE as a local path first)
	out=$(python3 - "$TMP/v.sock" "$(D c2)" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sys.argv[1])
s.sendall(json.dumps({"cmd": "disk-add", "path": sys.argv[2], "readonly": True}).encode() + b"\n")
print(s.makefile("rb").readline().decode().strip())
PY
)
	[[ $out == *"cannot be added to a running VM"* ]] && sleep 0.5 && kill -0 $VPID 2>/dev/null &&
		pass "disk-add of a store: disk is refused, and the VM runs on: ${out:0:200}" ||
		fail "disk-add of a store: disk is refused" "$out; $(tail -2 v.err)"
else
	fail "a VMM with a store: disk starts" "$(cat v.err)"
fi
kill $VPID 2>/dev/null
wait $VPID 2>/dev/null
VPID=
grep -q "forbidden syscall" v.err && fail "no seccomp kill" "$(grep forbidden v.err)"

# ---- refusals at start ----
out=$("$SHOAL" run --kernel "$GUEST" --cmdline poweroff --console none --disk "$(D c3)" 2>&1); rc=$?
[ $rc -ne 0 ] && [[ $out == *"a store: disk is read-only"* ]] &&
	pass "--disk store:... without readonly is refused: $(echo "$out" | head -1 | cut -c1-160)" ||
	fail "--disk store:... without readonly is refused" "rc=$rc $out"
if [ "$(id -u)" = 0 ]; then
	mkdir -p root
	out=$("$SHOAL" run --jail "$TMP/root" --kernel "$GUEST" --cmdline poweroff --console none \
		--disk "$(D c4),readonly" --timeout 60 </dev/null 2>&1); rc=$?
	[ $rc -ne 0 ] && [[ $out == *"cannot be used by a jailed VMM yet"* ]] &&
		pass "--jail with a store: disk is refused: $(echo "$out" | grep jailed | head -1 | cut -c1-160)" ||
		fail "--jail with a store: disk is refused" "rc=$rc $out"
else
	skip "--jail with a store: disk" "needs root"
fi
finish
