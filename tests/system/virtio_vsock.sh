#!/bin/bash
# virtio_vsock.sh - Shoal's virtio-vsock from the outside.  The test guest
# has no vsock driver yet, so the packet state machine is covered by the
# unit tests (tests/unit/test_virtio_vsock.c); this script checks what a
# whole VMM run shows without one:
#   - the guest finds a modern-only virtio PCI function of type vsock;
#   - the VMM listens on the --vsock socket while it runs, and a host
#     program that connects before the driver is up is refused cleanly
#     (closed, no hang), and the VM keeps running;
#   - the socket is removed when the VMM exits;
#   - bad --vsock specs are usage errors.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

[ -r /dev/kvm ] || { skip "virtio-vsock" "/dev/kvm is not available"; finish; }
[ -x "$SHOAL" ] && [ -x "$GUEST" ] || { fail "virtio-vsock" "$SHOAL or $GUEST is not built"; finish; }

SOCK=$TMP/v.sock
# The driverless connect: a Python client started before the VMM (its own
# start can take seconds in a loaded KVM box, longer than the guest lives),
# which connects the moment the socket appears.
have_py=0
if command -v python3 >/dev/null; then
	have_py=1
	timeout 90 python3 - "$SOCK" "$TMP/py.ready" >"$TMP/py.out" 2>&1 <<'EOF' &
import os, socket, sys, time
open(sys.argv[2], "w").close()
end = time.time() + 60
while not os.path.exists(sys.argv[1]) and time.time() < end:
    time.sleep(0.01)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
    s.sendall(b"CONNECT 1234\n")
    d = s.recv(64)
    print("closed" if d == b"" else "got:" + d.decode(errors="replace"))
except socket.timeout:
    print("timeout")
except (ConnectionResetError, BrokenPipeError):
    print("reset")
except OSError as e:
    print("error:" + str(e))
EOF
	pypid=$!
	for _ in $(seq 600); do [ -e "$TMP/py.ready" ] && break; sleep 0.1; done
fi

"$SHOAL" run -k "$GUEST" --vsock cid=3,socket="$SOCK" --timeout 30 \
	--cmdline "vdevs; spin 8000; exit 0" </dev/null >"$TMP/run.log" 2>&1 &
pid=$!
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
if [ -S "$SOCK" ]; then pass "VMM listens on the vsock socket"; else fail "VMM listens on the vsock socket" "no $SOCK"; fi

if [ $have_py = 1 ]; then
	wait $pypid
	out=$(cat "$TMP/py.out")
	# No driver in the guest: nobody answers REQUEST, so the connection is
	# either closed (device not live) or left waiting; it must not get "OK".
	case $out in
	closed|reset|timeout) pass "host connect without a guest driver is not accepted ($out)" ;;
	*) fail "host connect without a guest driver is not accepted" "$out" ;;
	esac
else
	skip "host connect without a guest driver" "python3 is not installed"
fi

wait $pid
rc=$?
if [ $rc -eq 0 ]; then pass "VM ran to its exit with vsock"; else fail "VM ran to its exit with vsock" "status $rc: $(tail -3 "$TMP/run.log" | tr '\n' ' ')"; fi
if grep -q 'type=vsock legacy=0 modern=1' "$TMP/run.log"; then pass "guest sees a modern-only vsock function"
else fail "guest sees a modern-only vsock function" "$(grep 'vdev' "$TMP/run.log" | head -2 | tr '\n' ' ')"; fi
if [ ! -e "$SOCK" ]; then pass "socket removed at exit"; else fail "socket removed at exit" "$SOCK still there"; fi

"$SHOAL" run -k "$GUEST" --vsock cid=2,socket="$SOCK" </dev/null >"$TMP/bad.log" 2>&1
rc=$?
if [ $rc -eq 64 ]; then pass "CID 2 (the host) is a usage error"; else fail "CID 2 (the host) is a usage error" "status $rc"; fi
"$SHOAL" run -k "$GUEST" --vsock cid=3,socket="$TMP/$(printf 'x%.0s' $(seq 120))" </dev/null >"$TMP/bad2.log" 2>&1
rc=$?
if [ $rc -eq 64 ]; then pass "over-long socket path is a usage error"; else fail "over-long socket path is a usage error" "status $rc: $(tail -1 "$TMP/bad2.log")"; fi
finish
