#!/bin/bash
# daemon_restart.sh - VMMs outlive the daemon: kill shoald with SIGKILL while
# VMs run (and one is paused, one created, one exited), start it again, and
# check that every VM is still there, running with the same pid, managed
# again (pause, stop, console), that no record was lost or duplicated, and
# that a VMM that died while the daemon was down is recorded with its
# reason.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm daemon_restart || finish
command -v sqlite3 >/dev/null || { skip daemon_restart "sqlite3 missing"; finish; }

start_daemon || { fail "daemon starts"; finish; }
for n in r1 r2 r3 p1 dies; do api POST '/v1/vms?start=true' "$(spec $n)" >/dev/null; done
api POST /v1/vms "$(spec c1)" >/dev/null
api POST '/v1/vms?start=true' "$(spec e1 "exit 7")" >/dev/null
api POST /v1/vms/p1/pause >/dev/null
wait_state e1 exited
before=$(curl -s --unix-socket "$SHOAL_SOCKET" http://d/v1/vms | jq -c '[.vms[] | {name, state, pid}]')
check "seven VMs before the crash" test "$(echo "$before" | jq length)" -eq 7

kill -9 $DPID; wait $DPID 2>/dev/null
dies_pid=$(echo "$before" | jq -r '.[] | select(.name == "dies") | .pid')
alive=0
for p in $(echo "$before" | jq -r '.[] | select(.pid != null) | .pid'); do kill -0 "$p" && alive=$((alive + 1)); done
check "all five VMMs survive SIGKILL of the daemon" test $alive -eq 5
kill -9 "$dies_pid"             # one VM dies while there is no daemon
sleep 0.2

start_daemon || { fail "daemon restarts"; finish; }
after=$(curl -s --unix-socket "$SHOAL_SOCKET" http://d/v1/vms | jq -c '[.vms[] | {name, state, pid}]')
expect=$(echo "$before" | jq -c 'map(if .name == "dies" then .state = "exited" | .pid = null else . end)')
check "after restart: same VMs, states and pids" test "$after" = "$expect"
check "no record lost or duplicated in the store" test "$(sqlite3 "$STATE/shoald.db" 'select count(*), count(distinct name) from vms')" = "7|7"
check "store integrity" test "$(sqlite3 "$STATE/shoald.db" 'pragma integrity_check')" = ok
check "VMM killed while the daemon was down: recorded with its reason" \
	test "$(vm_field dies '.last_exit.status, .last_exit.reason' | tr '\n' '|')" = "137|VMM killed by signal 9 (KILL) (while shoald was down)|"
check "reattached events for the four live VMs" \
	test "$("$SHOAL" events -o json | jq -r 'select(.type == "reattached") | .vm' | sort | tr '\n' ' ')" = "p1 r1 r2 r3 "
check "the exited and created VMs are as they were" \
	test "$(vm_field e1 .last_exit.status)/$(vm_field c1 .state)" = "7/created"

# managed again: every operation works on reattached VMs
check "resume a reattached paused VM" "$SHOAL" vm resume p1
check "pause a reattached VM" "$SHOAL" vm pause r1
out=$(printf 'info\n' | "$SHOAL" console r2 --linger 3 2>&1)
if echo "$out" | grep -q "info cpus=1"; then pass "console of a reattached VM"; else fail "console of a reattached VM" "$out"; fi
check "metrics of a reattached VM" bash -c "'$SHOAL' metrics r3 -o json | jq -e '.vcpu_time_ns > 0' >/dev/null"
r3pid=$(vm_field r3 .pid)
kill -9 "$r3pid"
wait_state r3 exited
check "a reattached VMM's crash is noticed and recorded" \
	test "$(vm_field r3 '.last_exit.status, .last_exit.reason' | tr '\n' '|')" = "137|VMM killed by signal 9 (KILL)|"
check "stop a reattached VM" "$SHOAL" vm stop r2 --force

# a VMM crash with restart "always": recorded with its reason, then restarted
api POST '/v1/vms?start=true' "$(spec phoenix shell '"restart": "always"')" >/dev/null
old=$(vm_field phoenix .pid)
kill -SEGV "$old"
for _ in $(seq 100); do [ "$(vm_field phoenix .restarts)" = 1 ] && [ "$(vm_field phoenix .state)" = running ] && break; sleep 0.05; done
check "a crashed VMM (SIGSEGV) is restarted by policy" \
	test "$(vm_field phoenix '.state, .restarts, .last_exit.status, .last_exit.reason' | tr '\n' '|')" = "running|1|139|VMM killed by signal 11 (SEGV)|"
check "the restarted VMM is a new process" test "$(vm_field phoenix .pid)" != "$old"
check "exited, restarting and started events for it" \
	test "$("$SHOAL" events --vm phoenix -o json | jq -r .type | tr '\n' ' ')" = "created started exited restarting started "
"$SHOAL" vm stop phoenix --force >/dev/null
sleep 0.3
check "a stop asked for is not restarted" test "$(vm_field phoenix '.state, .restarts' | tr '\n' '|')" = "exited|1|"
api DELETE /v1/vms/phoenix >/dev/null
check "start the created one" "$SHOAL" vm start c1

# a second crash of the daemon, right after: still consistent
kill -9 $DPID; wait $DPID 2>/dev/null
start_daemon || { fail "daemon restarts again"; finish; }
states=$(curl -s --unix-socket "$SHOAL_SOCKET" http://d/v1/vms | jq -r '[.vms[] | .name + ":" + .state] | join(" ")')
check "after a second restart: states kept" test "$states" = "r1:paused r2:exited r3:exited p1:running dies:exited c1:running e1:exited"
for n in r1 p1 c1; do "$SHOAL" vm stop $n --force >/dev/null; done
check "all stopped at the end" test "$(curl -s --unix-socket "$SHOAL_SOCKET" http://d/v1/vms | jq '[.vms[] | select(.state != "exited" and .state != "created")] | length')" -eq 0
finish
