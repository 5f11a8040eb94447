#!/bin/bash
# seccomp.sh - the VMM's per-thread seccomp filters (docs/security.md),
# on by default: with no flag, every thread of a running VMM filtered and
# no_new_privs set; a forbidden syscall (the test trigger
# SHOAL_TEST_SECCOMP_VIOLATE=<kind>) kills the VMM by SIGSYS with the
# thread kind and syscall named, for each thread kind; --seccomp=off (or
# SHOAL_SECCOMP=off) warns and filters nothing; shoald's VMMs are filtered
# by default too, shoald records a SIGSYS death with the syscall and `shoal
# vm show` prints it; a shoald with SHOAL_SECCOMP=off warns in its log, in
# the VMM's log and in the VM's started event.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
require_kvm seccomp
unset SHOAL_SECCOMP      # the default is what is tested

truncate -s 4M "$TMP/disk.img"

# --- on by default (no flag): every thread filtered, while the guest runs disk I/O ---
"$SHOAL" run --kernel "$GUEST" --cmdline "vblk; shell" --cpus 2 --console none \
	--disk "$TMP/disk.img" --api-socket "$TMP/a.sock" --timeout 120 </dev/null 2>"$TMP/a.err" &
pid=$!
for _ in $(seq 100); do [ -S "$TMP/a.sock" ] && break; sleep 0.05; done
sleep 0.5
tasks=$(ls /proc/$pid/task 2>/dev/null | wc -l)
filtered=$(grep -l '^Seccomp:[[:space:]]*2$' /proc/$pid/task/*/status 2>/dev/null | wc -l)
# main, event loop, 2 vCPUs, the disk's I/O thread
if [ "$tasks" -ge 5 ] && [ "$filtered" -eq "$tasks" ]; then
	pass "by default every thread of a running VMM is filtered ($filtered of $tasks)"
else
	fail "by default every thread of a running VMM is filtered" "$filtered of $tasks"
fi
check "no_new_privs is set" grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/$pid/status
python3 - "$TMP/a.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
f.write(b'{"cmd": "stop"}\n'); f.flush(); f.readline()
PY
wait $pid; rc=$?
if [ $rc -eq 0 ] && ! grep -q seccomp "$TMP/a.err"; then
	pass "the VM runs and stops with seccomp on, silently"
else
	fail "the VM runs and stops with seccomp on, silently" "rc=$rc $(cat "$TMP/a.err")"
fi

# --- a forbidden syscall, in each thread kind, with no flag (the default) ---
for kind in vcpu event blk-io main; do
	out=$(SHOAL_TEST_SECCOMP_VIOLATE=$kind "$SHOAL" run --kernel "$GUEST" --cmdline "vblk; shell" \
		--console none --disk "$TMP/disk.img" --timeout 60 </dev/null 2>&1); rc=$?
	want="shoal: seccomp: thread $kind made forbidden syscall socket (41)"
	if [ $rc -eq $((128 + 31)) ] && echo "$out" | grep -qxF "$want"; then
		pass "$kind: a forbidden syscall kills the VMM by SIGSYS and is named"
	else
		fail "$kind: a forbidden syscall kills the VMM by SIGSYS and is named" "rc=$rc out=$out"
	fi
done
out=$(SHOAL_SECCOMP=on SHOAL_TEST_SECCOMP_VIOLATE=vcpu "$SHOAL" run --kernel "$GUEST" --cmdline poweroff \
	--console none --timeout 60 </dev/null 2>&1); rc=$?
if [ $rc -eq $((128 + 31)) ] && echo "$out" | grep -qF "thread vcpu made forbidden syscall socket (41)"; then
	pass "SHOAL_SECCOMP=on: on as well"
else
	fail "SHOAL_SECCOMP=on: on as well" "rc=$rc out=$out"
fi

# --- --seccomp=off: loud, and nothing is filtered ---
out=$(SHOAL_TEST_SECCOMP_VIOLATE=vcpu "$SHOAL" run --seccomp=off --kernel "$GUEST" --cmdline poweroff \
	--console none --timeout 60 </dev/null 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "warning: seccomp is OFF"; then
	pass "--seccomp=off warns and filters nothing"
else
	fail "--seccomp=off warns and filters nothing" "rc=$rc out=$out"
fi
out=$(SHOAL_SECCOMP=off "$SHOAL" run --kernel "$GUEST" --cmdline poweroff --console none \
	--timeout 60 </dev/null 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "warning: seccomp is OFF (SHOAL_SECCOMP=off)"; then
	pass "SHOAL_SECCOMP=off warns too"
else
	fail "SHOAL_SECCOMP=off warns too" "rc=$rc out=$out"
fi
out=$(SHOAL_SECCOMP=maybe "$SHOAL" run --kernel "$GUEST" 2>&1); rc=$?
if [ $rc -eq 64 ] && echo "$out" | grep -q "SHOAL_SECCOMP: 'maybe' is not on or off"; then
	pass "SHOAL_SECCOMP with a bad value is a usage error"
else
	fail "SHOAL_SECCOMP with a bad value is a usage error" "rc=$rc out=$out"
fi
out=$("$SHOAL" run --seccomp=maybe --kernel "$GUEST" 2>&1); rc=$?
if [ $rc -eq 64 ] && echo "$out" | grep -q -- "--seccomp: 'maybe' is not on or off"; then
	pass "--seccomp with a bad value is a usage error"
else
	fail "--seccomp with a bad value is a usage error" "rc=$rc out=$out"
fi

# --- shoald's VMMs are filtered by default; it records a SIGSYS death and names the syscall ---
need_daemon
SHOAL_TEST_SECCOMP_VIOLATE=vcpu start_daemon || { fail "daemon starts"; finish; }
api POST /v1/vms "$(spec sc1)" >/dev/null
"$SHOAL" vm start sc1 >/dev/null 2>&1
for _ in $(seq 200); do [ "$(vm_field sc1 .state)" = exited ] && break; sleep 0.05; done
reason=$(vm_field sc1 .last_exit.reason)
want="seccomp: thread vcpu made forbidden syscall socket (41)"
if [ "$(vm_field sc1 .last_exit.status)" = 159 ] && echo "$reason" | grep -qF "signal 31 (SYS)"; then
	pass "shoald: the exit is a SIGSYS death"
else
	fail "shoald: the exit is a SIGSYS death" "$(vm_field sc1 .last_exit)"
fi
if echo "$reason" | grep -qF "$want"; then
	pass "shoald: the last exit reason names the syscall"
else
	fail "shoald: the last exit reason names the syscall" "$reason"
fi
check "shoal vm show prints it" bash -c "'$SHOAL' vm show sc1 | grep -qF '$want'"
check "an exited event names it" bash -c "'$SHOAL' events --vm sc1 -o json | grep -qF '$want'"

# --- a shoald with SHOAL_SECCOMP=off: its VMMs run unfiltered, and it says so ---
kill -9 "$DPID"; wait "$DPID" 2>/dev/null
SHOAL_SECCOMP=off SHOAL_TEST_SECCOMP_VIOLATE=vcpu start_daemon || { fail "daemon starts again"; finish; }
api POST /v1/vms "$(spec sc2)" >/dev/null
"$SHOAL" vm start sc2 >/dev/null 2>&1
if wait_state sc2 running && grep -q '^Seccomp:[[:space:]]*0$' "/proc/$(vm_field sc2 .pid)/status"; then
	pass "shoald, SHOAL_SECCOMP=off: the VMM runs unfiltered"
else
	fail "shoald, SHOAL_SECCOMP=off: the VMM runs unfiltered" "$(vm_field sc2 '.state, .last_exit')"
fi
check "shoald, SHOAL_SECCOMP=off: its log warns" \
	grep -q "warning: sc2: seccomp is OFF for its VMM (SHOAL_SECCOMP=off" "$TMP/shoald.log"
check "shoald, SHOAL_SECCOMP=off: the VMM's log warns" \
	grep -q "warning: seccomp is OFF (SHOAL_SECCOMP=off)" "$STATE/vms/sc2/vmm.log"
check "shoald, SHOAL_SECCOMP=off: the started event says seccomp off" \
	bash -c "'$SHOAL' events --vm sc2 -o json | jq -e '[.. | objects | select(.type? == \"started\") | .detail.seccomp] | index(\"off\")' >/dev/null"
finish
