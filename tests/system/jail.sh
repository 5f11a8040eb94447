#!/bin/bash
# jail.sh - `shoal run --jail` (src/vmm/jail.c, docs/security.md): a jailed
# VMM runs its guest (disk I/O, exit codes) in its own mount, PID, IPC, UTS
# and network namespaces, with an empty read-only root, an unprivileged uid
# and gid and no capability, and a /proc of its own PID namespace; from inside it /etc/shadow, another VM's disk
# and a database file cannot be opened and another VMM cannot be ptraced
# (the probe SHOAL_TEST_JAIL_PROBE; the same probe without --jail opens and
# attaches, so these checks fail without the jail); a kill of the VMM's
# host pid and a seccomp death reach the caller as signals; a snapshot goes
# into a bound directory and restores jailed (a network namespace of its
# own; a clone's jail binds the snapshot's vsock directory); every thread,
# io_uring's workers included, has the jail's uid; bad --jail values are
# refused.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm jail

truncate -s 4M "$TMP/disk.img" "$TMP/other.img"
mkdir -p "$TMP/root" "$TMP/root2"
echo "secret" >"$TMP/db.sqlite"

ctl() {          # ctl SOCKET JSON: one control request, its reply line
	python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n"); print(s.makefile("rb").readline().decode().strip())
PY
}
wait_sock() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2]))' "$1" "$2"; }

# --- bad values: refused before anything happens ---
for bad in "relative" "$TMP/root,uid=0" "$TMP/root,gid=x" "$TMP/root,bind=/" "$TMP/root,bind=rel" \
	   "$TMP/root,color=red"; do
	out=$("$SHOAL" run --jail "$bad" --kernel "$GUEST" --cmdline poweroff --console none 2>&1); rc=$?
	if [ $rc -eq 64 ] && echo "$out" | grep -q "^shoal: --jail: "; then
		pass "--jail $bad is refused (64) with a reason"
	else
		fail "--jail $bad is refused (64) with a reason" "rc=$rc $out"
	fi
done
out=$("$SHOAL" run --jail "$TMP/missing" --kernel "$GUEST" --cmdline poweroff --console none 2>&1); rc=$?
if [ $rc -eq 66 ] && echo "$out" | grep -q "missing: No such file"; then
	pass "a missing jail directory is named (66)"
else
	fail "a missing jail directory is named (66)" "rc=$rc $out"
fi
out=$("$SHOAL" run --jail "$TMP/root" --kernel "$GUEST" --vsock "cid=3,socket=$TMP/no/dir/v.sock" \
	--cmdline poweroff --console none 2>&1); rc=$?
if [ $rc -eq 66 ] && echo "$out" | grep -q "vsock socket's directory ($TMP/no/dir/v.sock): No such file"; then
	pass "a vsock socket in a missing directory is named (66)"
else
	fail "a vsock socket in a missing directory is named (66)" "rc=$rc $out"
fi
out=$("$SHOAL" run --jail "$TMP/root" --kernel "$GUEST" --vsock "cid=3,socket=/v.sock" \
	--cmdline poweroff --console none 2>&1); rc=$?
check "a vsock socket in / would bind the whole host: refused (64)" \
	bash -c "[ $rc -eq 64 ] && grep -q 'whole host file system' <<<\"\$1\"" _ "$out"
if command -v setpriv >/dev/null; then
	out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$SHOAL" run --jail "$TMP/root" \
		--kernel "$GUEST" --cmdline poweroff --console none 2>&1); rc=$?
	if [ $rc -eq 64 ] && echo "$out" | grep -q "needs root"; then
		pass "--jail without root says it needs root"
	else
		fail "--jail without root says it needs root" "rc=$rc $out"
	fi
else
	skip "--jail without root" "setpriv (util-linux) not installed"
fi

# --- a plain VMM to be the neighbour: its pid, its disk ---
"$SHOAL" run --kernel "$GUEST" --cmdline "shell" --console none --disk "$TMP/other.img" \
	--api-socket "$TMP/other.sock" --timeout 300 </dev/null 2>"$TMP/other.err" &
other_wait=$!
wait_sock "$TMP/other.sock" || fail "the neighbour VMM starts" "$(cat "$TMP/other.err")"
other_pid=$(field "$(ctl "$TMP/other.sock" '{"cmd": "status"}')" pid)

probe="open:/etc/shadow;open:$TMP/other.img;open:$TMP/db.sqlite;ptrace:$other_pid"

"$SHOAL" run --jail "$TMP/root" --kernel "$GUEST" --cmdline poweroff --console none \
	--timeout 60 </dev/null 2>/dev/null; rc=$?
check "a jailed guest powers off: the caller sees 0" [ $rc -eq 0 ]

# --- a jailed VMM, running: namespaces, ids, capabilities, root ---
# (fd 7, left open by the caller, must not reach the VMM)
SHOAL_TEST_JAIL_PROBE="$probe" "$SHOAL" run --jail "$TMP/root,uid=4242,gid=4343" \
	--kernel "$GUEST" --cmdline "vblk; shell" --console "file:$TMP/j.con" --disk "$TMP/disk.img" \
	--api-socket "$TMP/j.sock" --timeout 300 </dev/null 2>"$TMP/j.err" 7<"$TMP/db.sqlite" &
jwait=$!
wait_sock "$TMP/j.sock" || fail "the jailed VMM starts" "$(cat "$TMP/j.err")"
st=$(ctl "$TMP/j.sock" '{"cmd": "status"}')
jpid=$(field "$st" pid)
if [ -n "$jpid" ] && [ "$jpid" != "None" ] && [ "$jpid" != "$jwait" ] && [ -d "/proc/$jpid" ]; then
	pass "status reports the VMM's pid as the host sees it ($jpid; its waiter is $jwait)"
else
	fail "status reports the VMM's pid as the host sees it" "$st waiter=$jwait"
fi
for _ in $(seq 100); do grep -q "jail probe: ptrace" "$TMP/j.err" && break; sleep 0.05; done
check "the VMM runs as uid 4242" grep -q "^Uid:[[:space:]]*4242[[:space:]]4242[[:space:]]4242[[:space:]]4242" /proc/$jpid/status
check "and gid 4343" grep -q "^Gid:[[:space:]]*4343[[:space:]]4343[[:space:]]4343[[:space:]]4343" /proc/$jpid/status
check "with no capability (effective, permitted, bounding)" bash -c \
	"grep -q '^CapEff:[[:space:]]*0*$' /proc/$jpid/status && grep -q '^CapPrm:[[:space:]]*0*$' /proc/$jpid/status && grep -q '^CapBnd:[[:space:]]*0*$' /proc/$jpid/status"
check "no_new_privs is set" grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/$jpid/status
# Every thread, io_uring's workers (iou-wrk-*) included: a worker keeps the
# ids it was made with, so one made before the drop would still be root's.
# The guest's vblk has written and read the disk by the time the probe ran.
for _ in $(seq 100); do grep -q "vblk ok" "$TMP/j.con" 2>/dev/null && break; sleep 0.05; done
threads="" rootish=""
for t in /proc/$jpid/task/*; do
	name=$(cat "$t/comm" 2>/dev/null) || continue
	threads="$threads $name"
	grep -q "^Uid:[[:space:]]*4242[[:space:]]4242[[:space:]]4242[[:space:]]4242" "$t/status" 2>/dev/null ||
		rootish="$rootish $name($(grep '^Uid:' "$t/status" 2>/dev/null | tr -s '[:space:]' ' '))"
done
if [ -z "$rootish" ] && [ -n "$threads" ]; then
	pass "every thread of the VMM runs as uid 4242:$threads"
else
	fail "every thread of the VMM runs as uid 4242" "not:$rootish (threads:$threads)"
fi
if ls -l /proc/$jpid/fd/ | grep -q "db.sqlite"; then
	fail "a descriptor the caller left open does not reach the VMM" "$(ls -l /proc/$jpid/fd/)"
else
	pass "a descriptor the caller left open does not reach the VMM"
fi
for ns in mnt pid net ipc uts; do
	if [ "$(readlink /proc/$jpid/ns/$ns)" != "$(readlink /proc/self/ns/$ns)" ]; then
		pass "its $ns namespace is its own"
	else
		fail "its $ns namespace is its own" "$(readlink /proc/$jpid/ns/$ns)"
	fi
done
check "its pid in its namespace is 1" grep -q "^NSpid:.*[[:space:]]1$" /proc/$jpid/status
entries=$(ls -A /proc/$jpid/root/ 2>&1 | tr '\n' ' ')
check "its root holds only /proc (${entries})" [ "$entries" = "proc " ]
procs=$(ls /proc/$jpid/root/proc/ 2>&1 | tr '\n' ' ')
check "whose /proc shows only the VMM itself, no /proc/sys (${procs})" \
	bash -c "[ '$procs' = '1 self thread-self ' ]"
check "and read-only" bash -c "! touch /proc/$jpid/root/x 2>/dev/null"
for what in /etc/shadow "$TMP/other.img" "$TMP/db.sqlite"; do
	line=$(grep -F "jail probe: open $what:" "$TMP/j.err")
	if [ -n "$line" ] && ! echo "$line" | grep -q "opened"; then
		pass "from inside, $what cannot be opened (${line##*: })"
	else
		fail "from inside, $what cannot be opened" "${line:-no probe line} $(cat "$TMP/j.err")"
	fi
done
line=$(grep -F "jail probe: ptrace $other_pid:" "$TMP/j.err")
if [ -n "$line" ] && ! echo "$line" | grep -q attached; then
	pass "from inside, another VMM cannot be ptraced (${line##*: })"
else
	fail "from inside, another VMM cannot be ptraced" "${line:-no probe line}"
fi
for _ in $(seq 600); do grep -q "vblk " "$TMP/j.con" 2>/dev/null && break; sleep 0.1; done
check "the guest's disk works in the jail" grep -q "vblk ok" "$TMP/j.con"
ctl "$TMP/j.sock" '{"cmd": "stop"}' >/dev/null
wait $jwait; rc=$?
check "a stopped jailed VM: the caller sees 0" [ $rc -eq 0 ]

# The probe without the jail: root opens all and attaches, so the checks
# above fail without it.
out=$(SHOAL_TEST_JAIL_PROBE="$probe" "$SHOAL" run \
	--kernel "$GUEST" --cmdline poweroff --console none --timeout 60 2>&1 </dev/null)
n=$(echo "$out" | grep -c "jail probe: .*: \(opened\|attached\)$")
check "without --jail the same probe opens all three and attaches ($n of 4)" [ "$n" -eq 4 ]

# --- exit codes and signals reach the caller ---
"$SHOAL" run --jail "$TMP/root" --kernel "$GUEST" --cmdline "exit 7" --console none \
	--timeout 60 </dev/null 2>/dev/null; rc=$?
check "a jailed guest's exit code 7 reaches the caller" [ $rc -eq 7 ]
SHOAL_TEST_SECCOMP_VIOLATE=vcpu "$SHOAL" run --jail "$TMP/root" --kernel "$GUEST" --cmdline poweroff \
	--console none --timeout 60 </dev/null 2>"$TMP/sys.err"; rc=$?
check "a seccomp death in the jail reaches the caller as SIGSYS ($rc)" bash -c \
	"[ $rc -eq 159 ] && grep -q 'forbidden syscall socket' '$TMP/sys.err'"
"$SHOAL" run --jail "$TMP/root" --kernel "$GUEST" --cmdline shell --console none \
	--api-socket "$TMP/k.sock" --timeout 300 </dev/null 2>/dev/null &
kwait=$!
wait_sock "$TMP/k.sock"
kpid=$(field "$(ctl "$TMP/k.sock" '{"cmd": "status"}')" pid)
kill -KILL "$kpid" 2>/dev/null
wait $kwait 2>/dev/null; rc=$?
check "SIGKILL of the VMM's host pid reaches the caller as 137 ($rc)" [ $rc -eq 137 ]
# PID 1 of a namespace ignores signals it does not handle: the jail
# handles each fatal one, so it still ends the VMM, by that signal.
for sig in SEGV TERM; do
	rm -f "$TMP/k.sock"
	"$SHOAL" run --jail "$TMP/root" --kernel "$GUEST" --cmdline shell --console none \
		--api-socket "$TMP/k.sock" --timeout 300 </dev/null 2>/dev/null &
	kwait=$!
	wait_sock "$TMP/k.sock"
	kpid=$(field "$(ctl "$TMP/k.sock" '{"cmd": "status"}')" pid)
	if [ $sig = TERM ]; then kill -TERM $kwait; else kill -$sig "$kpid"; fi
	wait $kwait 2>/dev/null; rc=$?
	want=$((128 + $(kill -l $sig)))
	check "SIG$sig to the $([ $sig = TERM ] && echo "waiter" || echo "VMM") ends a jailed VMM by it ($rc)" [ $rc -eq $want ]
done

# --- a snapshot into a bound directory, restored jailed ---
# (with a vsock device whose socket is in a directory of its own: a
# restored clone's jail must bind that directory, and a VM without a
# network card gets a network namespace of its own, restored or not)
mkdir -p "$TMP/snaps" "$TMP/vs" && chown 4242:4343 "$TMP/snaps" "$TMP/vs"
"$SHOAL" run --jail "$TMP/root,uid=4242,gid=4343,bind=$TMP/snaps" --kernel "$GUEST" \
	--cmdline "fill 0x1000000 0x100000 5; shell" --console none --api-socket "$TMP/s.sock" \
	--vsock "cid=7,socket=$TMP/vs/v.sock" --timeout 300 </dev/null 2>"$TMP/s.err" &
swait=$!
wait_sock "$TMP/s.sock"
out=$("$SHOAL" snapshot create --socket "$TMP/s.sock" "$TMP/elsewhere" 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q "elsewhere"; then
	pass "a snapshot to a directory outside the jail fails, naming it"
else
	fail "a snapshot to a directory outside the jail fails, naming it" "rc=$rc $out"
fi
out=$("$SHOAL" snapshot create --socket "$TMP/s.sock" "$TMP/snaps/s1" 2>&1); rc=$?
if [ $rc -eq 0 ] && [ -f "$TMP/snaps/s1/manifest.json" ]; then
	pass "a snapshot into the bound directory is taken"
else
	fail "a snapshot into the bound directory is taken" "rc=$rc $out"
fi
ctl "$TMP/s.sock" '{"cmd": "stop"}' >/dev/null
wait $swait
"$SHOAL" run --jail "$TMP/root2" --restore "$TMP/snaps/s1" --console none --api-socket "$TMP/r.sock" \
	--timeout 300 </dev/null 2>"$TMP/r.err" &
rwait=$!
wait_sock "$TMP/r.sock"
st=$(ctl "$TMP/r.sock" '{"cmd": "status"}')
check "the snapshot restores into a jail ($st)" [ "$(field "$st" state)" = running ]
rpid=$(field "$st" pid)
check "the restored VMM, which has no network card, has a network namespace of its own" \
	[ "$(readlink /proc/$rpid/ns/net)" != "$(readlink /proc/self/ns/net)" ]
ctl "$TMP/r.sock" '{"cmd": "stop"}' >/dev/null
wait $rwait
rm -f "$TMP/vs/v.sock"
"$SHOAL" run --jail "$TMP/root2" --restore "$TMP/snaps/s1" --clone --console none \
	--api-socket "$TMP/c.sock" --timeout 300 </dev/null 2>"$TMP/c.err" &
cwait=$!
wait_sock "$TMP/c.sock" || fail "a clone restores jailed" "$(cat "$TMP/c.err")"
cpid=$(field "$(ctl "$TMP/c.sock" '{"cmd": "status"}')" pid)
entries=$(cd /proc/$cpid/root 2>/dev/null && find . -mindepth 1 -maxdepth 8 -path ./proc -prune -o -print | tr '\n' ' ')
check "a clone's jail binds the snapshot's vsock socket directory ($entries)" \
	bash -c "echo '$entries' | tr ' ' '\n' | grep -qx '.$TMP/vs'"
check "and the clone's VMM makes its socket there ($TMP/vs/v.sock)" test -S "$TMP/vs/v.sock"
ctl "$TMP/c.sock" '{"cmd": "stop"}' >/dev/null
wait $cwait

ctl "$TMP/other.sock" '{"cmd": "stop"}' >/dev/null
wait $other_wait
finish
