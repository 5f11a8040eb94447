#!/bin/bash
# daemon_cgroup.sh - each VM in a cgroup v2 of its own (issue 15, cgroups):
# the daemon makes its tree and says where; a VM's VMM (and only it) is in
# STATE's shoal-ID/vm-NAME with the spec's limits (cpu.max from
# limits.cpus, memory.max from limits.memory_max, or guest memory + 25 % +
# 256 MiB by default); a guest that touches more memory than memory.max
# allows gets its VMM killed by the cgroup's OOM killer, the daemon records
# that as the VM's exit reason (and, usage having reached memory.max, a
# "limit" event), and the VM beside it runs on; a delete removes the
# cgroup.  limits.io and cpu.max events: daemon_limits.sh.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm daemon_cgroup || finish
[ -f /sys/fs/cgroup/cgroup.controllers ] || { skip daemon_cgroup "no cgroup v2 at /sys/fs/cgroup"; finish; }
start_daemon --stop-timeout 2 || { fail "daemon starts"; finish; }
base=$(sed -n 's/.*cgroups: each VM in \(.*\)\/vm-NAME$/\1/p' "$TMP/shoald.log" | tail -1)
check "the daemon says where the VMs' cgroups are" test -d "$base"

SPEC_MEMORY=128M spec c1 shell '"limits": {"cpus": 0.5, "memory_max": "48M"}' >"$TMP/c1.json"
SPEC_MEMORY=32M spec c2 shell >"$TMP/c2.json"
check "create and start c1 (limits) and c2 (defaults)" bash -c \
	"'$SHOAL' vm create -f '$TMP/c1.json' --start >/dev/null && '$SHOAL' vm create -f '$TMP/c2.json' --start >/dev/null"
wait_console c1 "shoal>" || fail "c1 prompt"
wait_console c2 "shoal>" || fail "c2 prompt"
pid1=$(vm_field c1 .pid)
check "c1's VMM is in its cgroup" grep -qx "$pid1" "$base/vm-c1/cgroup.procs"
check "c1: cpu.max from limits.cpus 0.5" test "$(cat "$base/vm-c1/cpu.max")" = "50000 100000"
check "c1: memory.max from limits.memory_max 48M" test "$(cat "$base/vm-c1/memory.max")" = $((48 << 20))
check "c2: memory.max by default: 32M + 25 % + 256M" test "$(cat "$base/vm-c2/memory.max")" = $(((32 + 8 + 256) << 20))
check "c2: no CPU cap" test "$(cat "$base/vm-c2/cpu.max")" = "max 100000"
check "the spec shows the limits" test "$(vm_field c1 '.spec.limits.memory_max')" = $((48 << 20))

# c1's guest has 128 MiB: touching 64 of them passes memory.max (48 MiB)
printf 'fill 0x2000000 64M 7\n' | "$SHOAL" console c1 --linger 2 >/dev/null 2>&1
wait_state c1 exited 400 || fail "c1 exits when its memory passes memory.max" "$(vm_field c1 .state)"
reason=$(vm_field c1 .last_exit.reason)
if grep -q 'killed by the OOM killer of its cgroup: memory.max 48 MiB exceeded' <<<"$reason"; then
	pass "the exit reason names the cgroup's OOM kill"
else fail "the exit reason names the cgroup's OOM kill" "$reason"; fi
# before the kill, usage reached memory.max: the watcher's next look (every
# 5 s) reports it as a "limit" event
for _ in $(seq 200); do
	ev=$(curl -s --unix-socket "$SHOAL_SOCKET" "http://d/v1/events?vm=c1" |
		jq -c '[.events[] | select(.type == "limit" and .detail.limit == "memory.max")]')
	[ "$(jq length <<<"$ev")" -ge 1 ] && break
	sleep 0.1
done
check "a memory.max limit event for c1" bash -c "jq -e '.[0].detail.count > 0 and
	(.[0].detail.message | test(\"reached memory.max [0-9]+ times in the last 5 s\"))' <<<'$ev' >/dev/null"
check "c2 runs on" test "$(vm_field c2 .state)" = running
out=$(printf 'info\n' | "$SHOAL" console c2 --linger 3 2>&1)
check "c2's guest still answers" grep -q "info cpus=1" <<<"$out"

check "stop c2, delete both" bash -c "'$SHOAL' vm stop c2 --timeout 2 >/dev/null && '$SHOAL' vm delete c1 >/dev/null && '$SHOAL' vm delete c2 >/dev/null"
check "delete removed the cgroups" bash -c "[ ! -d '$base/vm-c1' ] && [ ! -d '$base/vm-c2' ]"

# a spec asking for a bad limit is refused at create, naming it
out=$(spec c3 shell '"limits": {"cpus": 0}' | "$SHOAL" vm create -f - 2>&1); rc=$?
check "limits.cpus 0 refused (400) naming it" bash -c "[ $rc -eq 1 ] && grep -q 'limits.cpus' <<<'$out'"
out=$(spec c3 shell '"limits": {"swap": 1}' | "$SHOAL" vm create -f - 2>&1); rc=$?
check "an unknown limit refused naming it" bash -c "[ $rc -eq 1 ] && grep -q 'swap' <<<'$out'"
finish
