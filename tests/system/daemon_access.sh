#!/bin/bash
# daemon_access.sh - the API called as other users (issue 16, item 1 and
# the daemon's part of item 5), with no KVM needed: only refusals and
# creates.  Run as root: the callers are uid 65534 (nobody) and two more
# unprivileged uids, each reaching the socket through its group.
#
#   - who may do what: no grant, nothing (403); a group's "read" grant reads
#     and no more; a user's "admin" grant creates;
#   - files an admin names: only beneath --allow-dir; /etc/shadow as kernel,
#     initrd or disk, a symbolic link or "/proc/self/root" or ".." out, a
#     qcow2 of the caller's whose backing file is root's, a console file in
#     a root-only directory, a vsock socket in /etc, a TAP fd: 403, and
#     nothing opened, created or truncated;
#   - the VMM itself refuses a kernel swapped for a link out after create;
#   - one caller holds at most --max-peer-connections connections (429), a
#     request that trickles in is cut at --request-timeout;
#   - the database and the state directory are not world-readable;
#   - the socket's group: --socket-group, else "shoal" where it exists.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
	skip daemon_access "needs root and setpriv (callers run as other uids)"; finish
fi

OK=$TMP/ok                      # the one allowed directory
mkdir -p "$OK" "$TMP/rootonly"
chmod 0711 "$TMP"
chown 65534:65534 "$OK"          # the caller's own image directory
chmod 0700 "$TMP/rootonly"
echo "root's secret" >"$TMP/secret"
chmod 0600 "$TMP/secret"
cp /bin/true "$OK/vmlinux"      # a regular file: the daemon never boots one here
chmod 0644 "$OK/vmlinux"

# the socket's group (--socket-group): every caller below has group 65534
DAEMON_DEFAULT_ALLOW=0 start_daemon --allow-dir "$OK" --grant user:65534=admin \
	--grant group:4321=read --max-peer-connections 6 --request-timeout 3 --socket-group 65534 \
	|| { fail "daemon starts"; finish; }
check "--socket-group: the API socket is mode 0660, group 65534" \
	test "$(stat -c '%a %g' "$SHOAL_SOCKET")" = "660 65534"
out=$("$SHOALD" --state-dir "$TMP/st-bad" --socket "$TMP/bad.sock" --socket-group no-such-group-x 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q "socket-group no-such-group-x: no such group" && [ ! -e "$TMP/bad.sock" ]; then
	pass "an unknown --socket-group stops the daemon, naming it"
else
	fail "an unknown --socket-group stops the daemon, naming it" "rc=$rc $out"
fi
# By default the socket goes to group "shoal" where the host has one: a
# host with that group, made in a mount namespace of the daemon's own.
if command -v unshare >/dev/null; then
	{ grep -v '^shoal:' /etc/group; echo "shoal:x:4343:"; } >"$TMP/group"
	unshare -m sh -c 'mount --bind "$1" /etc/group && exec "$2" --state-dir "$3" --socket "$4"' \
		sh "$TMP/group" "$SHOALD" "$TMP/st-grp" "$TMP/grp.sock" >"$TMP/grp.log" 2>&1 &
	gpid=$!
	for _ in $(seq 200); do [ -S "$TMP/grp.sock" ] && break; sleep 0.05; done
	sleep 0.2
	check "without --socket-group the socket's group is the host's \"shoal\" group" \
		test "$(stat -c '%a %g' "$TMP/grp.sock" 2>&1)" = "660 4343"
	kill $gpid; wait $gpid 2>/dev/null
else
	skip "the default socket group" "unshare (util-linux) not installed"
fi

# as UID [GROUPS]: run the rest of the line as that uid, primary group 65534
as() {
	local uid=$1 groups=--clear-groups
	[ -n "$2" ] && groups=--groups=$2
	shift 2
	setpriv --reuid="$uid" --regid=65534 "$groups" "$@"
}
# call UID GROUPS METHOD PATH [BODY]: status on stdout, body in $TMP/body
call() {
	local uid=$1 groups=$2 m=$3 p=$4
	shift 4
	as "$uid" "$groups" curl -s -o - -w '\n%{http_code}' --unix-socket "$SHOAL_SOCKET" \
		-X "$m" ${1:+--data-binary "$1"} "http://d$p" >"$TMP/resp"
	head -n -1 "$TMP/resp" >"$TMP/body"
	tail -n 1 "$TMP/resp"
}
# expect NAME STATUS CODE TEXT UID GROUPS METHOD PATH [BODY]
expect() { expect_error "$1" "$2" "$3" "$4" call "${@:5}"; }
spec_k() { printf '{"name": "%s", "kernel": "%s", "memory": "64M"%s}' "$1" "$2" "${3:+, $3}"; }

# --- who may do what ---
expect "no grant: even a list is 403" 403 forbidden "uid 65533" 65533 "" GET /v1/vms
expect "no grant: create is 403" 403 forbidden "needs \"admin\"" 65533 "" POST /v1/vms "$(spec_k a "$OK/vmlinux")"
check "a group's read grant lists" test "$(call 65532 4321 GET /v1/vms)" = 200
expect "a read grant cannot create" 403 forbidden '"read"' 65532 4321 POST /v1/vms "$(spec_k a "$OK/vmlinux")"
expect "a read grant cannot start" 403 forbidden '"operate"' 65532 4321 POST /v1/vms/a/start
check "a user's admin grant creates" test "$(call 65534 "" POST /v1/vms "$(spec_k a "$OK/vmlinux")")" = 201
check "root is always admin" test "$(api DELETE /v1/vms/a)" = 204

# --- files beneath --allow-dir only, 403 and nothing opened ---
ln -s "$TMP/secret" "$OK/link-out"
ln -s ../secret "$OK/rel-out"
expect "kernel /etc/shadow"        403 path_not_allowed "not beneath" 65534 "" POST /v1/vms "$(spec_k x /etc/shadow)"
expect "kernel through a symlink"  403 path_not_allowed "leads out" 65534 "" POST /v1/vms "$(spec_k x "$OK/link-out")"
expect "kernel, relative link out" 403 path_not_allowed "leads out" 65534 "" POST /v1/vms "$(spec_k x "$OK/rel-out")"
expect "kernel through ..out"      403 path_not_allowed "leads out" 65534 "" POST /v1/vms "$(spec_k x "$OK/../secret")"
expect "kernel via /proc/self/root" 403 path_not_allowed "not beneath" 65534 "" POST /v1/vms "$(spec_k x "/proc/self/root$TMP/secret")"
expect "initrd /etc/shadow"        403 path_not_allowed initrd 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" '"initrd": "/etc/shadow"')"
expect "root-only disk"            403 path_not_allowed "disks[0]" 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" "\"disks\": [{\"path\": \"$TMP/secret\"}]")"
expect "read-only /etc/shadow disk" 403 path_not_allowed "disks[0]" 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" '"disks": [{"path": "/etc/shadow", "readonly": true}]')"
if command -v qemu-img >/dev/null; then
	# the caller's own qcow2, its backing file root's
	as 65534 "" qemu-img create -q -f qcow2 -u -b "$TMP/secret" -F raw "$OK/mine.qcow2" 1M
	as 65534 "" qemu-img create -q -f qcow2 -u -b ../secret -F raw "$OK/mine2.qcow2" 1M
	expect "backing file outside (absolute)" 403 path_not_allowed "backing chain" 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" "\"disks\": [{\"path\": \"$OK/mine.qcow2\"}]")"
	expect "backing file outside (..)" 403 path_not_allowed "backing chain" 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" "\"disks\": [{\"path\": \"$OK/mine2.qcow2\"}]")"
else
	skip "backing files outside" "qemu-img missing"
fi
before=$(stat -c '%s %Y' "$TMP/secret")
expect "console over a root-only file" 403 path_not_allowed "own directory" 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" "\"console\": \"file:$TMP/secret\"")"
expect "console in a root-only directory" 403 path_not_allowed "own directory" 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" "\"console\": \"file:$TMP/rootonly/new\"")"
expect "virtio console over a root-only file" 403 path_not_allowed "own directory" 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" "\"virtio_console\": \"file:$TMP/secret\"")"
expect "vsock socket in /etc"      403 path_not_allowed vsock 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" '"vsock": {"cid": 3, "socket": "/etc/shoal.sock"}')"
expect "a TAP descriptor number"   403 path_not_allowed "fd=3" 65534 "" POST /v1/vms "$(spec_k x "$OK/vmlinux" '"nets": [{"fd": 3}]')"
check "the root-only file untouched" test "$(stat -c '%s %Y' "$TMP/secret")" = "$before"
check "nothing created in the root-only directory" test -z "$(ls -A "$TMP/rootonly")"
check "nothing created by any of those" test "$(api GET /v1/vms)$(body | jq '.vms | length')" = "2000"
check "a console file name is fine" test "$(call 65534 "" POST /v1/vms "$(spec_k c "$OK/vmlinux" '"console": "file:serial.log"')")" = 201

# a kernel swapped for a link out after create: refused at start (403)...
cp "$OK/vmlinux" "$OK/k2"
check "create with a kernel inside" test "$(call 65534 "" POST /v1/vms "$(spec_k swap "$OK/k2")")" = 201
rm "$OK/k2"; ln -s "$TMP/secret" "$OK/k2"
expect "start after the swap: 403" 403 path_not_allowed "leads out" 65534 "" POST /v1/vms/swap/start
# ...and by the VMM itself, which opens it confined (as it does every disk
# and backing file): the daemon's check is not what stops it
printf '{"kernel": "%s", "confine": ["%s"], "console": "none"}' "$OK/k2" "$OK" >"$TMP/vmm.json"
out=$("$SHOAL" run --config "$TMP/vmm.json" 2>&1); rc=$?
check "the VMM refuses a kernel that leads out of its confine list" bash -c "[ $rc -eq 66 ] && echo '$out' | grep -q 'Permission denied'"

# --- connections per caller, and a deadline for the whole request ---
python3 - "$SHOAL_SOCKET" >"$TMP/conns.out" 2>&1 <<'EOF' &
import os, socket, sys, time
os.setgid(65534); os.setgroups([]); os.setuid(65534)
held = []
for i in range(6):                      # the limit: all accepted, idle
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); held.append(s)
time.sleep(0.3)
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.settimeout(5)
s.sendall(b"GET /v1/vms HTTP/1.1\r\nHost: d\r\n\r\n")
data = b""
try:
    while True:
        b = s.recv(4096)
        if not b: break
        data += b
except OSError as e:
    print("error", e)
print(data.split(b"\r\n")[0].decode(), data.split(b"\r\n\r\n", 1)[-1].decode().strip())
EOF
wait $!
check "the 7th connection of one uid: 429 with the error shape" \
	bash -c "grep -q '^HTTP/1.1 429 .*\"too_many_connections\"' '$TMP/conns.out' || { cat '$TMP/conns.out'; false; }"
check "root is still served meanwhile" test "$(api GET /v1/version)" = 200
python3 - "$SHOAL_SOCKET" >"$TMP/trickle.out" 2>&1 <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
t0 = time.time()
req = b"GET /v1/vms HTTP/1.1\r\nHost: d\r\nX-Slow: " + b"a" * 200
try:
    for b in req:                       # a byte every 0.2 s: never silent
        s.sendall(bytes([b])); time.sleep(0.2)
    print("never cut")
except OSError:
    print("cut after %.1f s" % (time.time() - t0))
EOF
check "a request trickling in is cut at --request-timeout" \
	bash -c "grep -qE '^cut after [3-6]\.' '$TMP/trickle.out' || { cat '$TMP/trickle.out'; false; }"

# --- the state is root's ---
check "the state directory is not world-readable (0711)" test "$(stat -c %a "$STATE")" = 711
check "shoald.db is 0600" test "$(stat -c %a "$STATE/shoald.db")" = 600
for f in "$STATE/shoald.db-wal" "$STATE/shoald.db-shm"; do
	[ -e "$f" ] && check "$(basename "$f") is 0600" test "$(stat -c %a "$f")" = 600
done
kill $DPID; wait $DPID 2>/dev/null
chmod 0755 "$STATE"; chmod 0644 "$STATE/shoald.db"      # as an older daemon left them
DAEMON_DEFAULT_ALLOW=0 start_daemon --allow-dir "$OK" || fail "daemon restarts"
check "a restart narrows an old state directory" test "$(stat -c %a "$STATE")" = 711
check "and an old database" test "$(stat -c %a "$STATE/shoald.db") $(stat -c %a "$STATE/shoald.db-wal")" = "600 600"
finish
