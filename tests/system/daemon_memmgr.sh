#!/bin/bash
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
#
# daemon_memmgr.sh - shoald's memory manager (docs/memory.md, "Shares and
# the idle-memory tax"; src/host/memmgr.c, src/mem/idle_sample.c): three
# 64 MiB test-guest VMs with balloons under a 128 MiB budget, equal
# shares, memory_min 16M.  "idle" runs the shell; "busy" writes 40 MiB of
# its RAM over and over, "half" 24 MiB (the test guest's `dirty`), so the
# true active fractions are 0, 0.625 and 0.375.  The manager samples each
# VM's memory (memory-activity) every second and sets balloon targets:
#   - the first memory-reclaim event names the idle VM (lowest rho);
#   - the allocations fit the budget and match the formula within 10 %:
#     equal rho = S / (A + k (P - A)), k = 1 / (1 - 0.75) = 4, from the
#     true active bytes A, gives 26.7, 56.7 and 44.7 MiB;
#   - the sampling error (estimate against the true fraction) is printed
#     and must be under 0.1;
#   - vm show and /metrics show the allocation, the estimate and rho;
#   - with busy stopped, the others get memory back (memory-return);
#   - the spec keys are checked (400s) and kept.
# The test guest has no balloon driver: the targets are what is checked,
# not memory given back (slow_linux_balloon.sh covers Linux's driver).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm "$(basename "$0")" || finish
start_daemon --memory-budget 128M --memory-period 1 || { fail "daemon starts"; finish; }

MB=1048576
# The two writers spin; where the box has cgroup v2 they get a quarter of
# a CPU each (plenty to write their range many times a period), so the
# daemon and this script are not starved in a 1-vCPU box.
LIMIT=
[ -f /sys/fs/cgroup/cgroup.controllers ] && ! grep -q "cgroups: off" "$TMP/shoald.log" &&
	LIMIT=', "limits": {"cpus": 0.25}'
mm_spec() {   # NAME CMDLINE [MORE]: a managed test-guest VM
	spec "$1" "$2" "\"balloon\": true, \"memory_min\": \"16M\", \"memory_shares\": 1000${3:-}"
}
# mm NAME: "allocation periods active_fraction slow_fraction" (one request)
mm() {
	curl -s --unix-socket "$SHOAL_SOCKET" "http://d/v1/vms/$1" | jq -r '.stats.memory_manager //
		{} | "\(.allocation_bytes // 0) \(.periods // 0) \(.active_fraction) \(.slow_fraction)"'
}

# ---- the spec keys ----
expect_error "memory_min over the memory: 400" 400 invalid_spec memory_min \
	api POST /v1/vms "$(spec bad shell '"balloon": true, "memory_min": "65M"')"
expect_error "memory_max over the memory: 400" 400 invalid_spec memory_max \
	api POST /v1/vms "$(spec bad shell '"balloon": true, "memory_max": "1G"')"
expect_error "memory_shares without a balloon: 400" 400 invalid_spec balloon \
	api POST /v1/vms "$(spec bad shell '"memory_shares": 10')"
expect_error "memory_shares 0: 400" 400 invalid_spec memory_shares \
	api POST /v1/vms "$(spec bad shell '"balloon": true, "memory_shares": 0')"

api POST /v1/vms "$(mm_spec idle shell)" >/dev/null
api POST /v1/vms "$(mm_spec busy 'dirty 0 600 16M 40M' "$LIMIT")" >/dev/null
api POST /v1/vms "$(mm_spec half 'dirty 0 600 16M 24M' "$LIMIT")" >/dev/null
check "the spec keeps memory_min (bytes) and memory_shares" \
	test "$(vm_field idle '"\(.spec.memory_min) \(.spec.memory_shares)"')" = "16777216 1000"
for v in idle busy half; do
	"$SHOAL" vm start "$v" >/dev/null || fail "vm $v starts" "$(tail -5 "$TMP/shoald.log")"
done

# Wait until every VM has 4 sampling periods behind it and the allocation
# has settled within the budget (at most 60 s).
settled=0
for _ in $(seq 60); do
	n=0; sum=0
	for v in idle busy half; do
		read -r a p _ _ < <(mm "$v")
		[ "$p" -ge 4 ] && n=$((n + 1))
		sum=$((sum + a))
	done
	if [ "$n" = 3 ] && [ "$sum" -le $((128 * MB)) ] && [ "$sum" -gt 0 ]; then settled=1; break; fi
	sleep 1
done
check "the manager settles: every VM sampled 4 periods, allocations within the budget" test "$settled" = 1
sleep 2     # two more periods for the averages

ev=$(curl -s --unix-socket "$SHOAL_SOCKET" "http://d/v1/events?limit=1000" |
	jq -c '[.events[] | select(.type == "memory-reclaim")]')
check "the first memory-reclaim event names the idle VM (rank 1)" \
	test "$(jq -r '.[0] | "\(.vm) \(.detail.rank)"' <<<"$ev")" = "idle 1"
check "memory-reclaim events say what was reclaimed (bytes, allocation, rho)" bash -c \
	"jq -e 'length > 0 and all(.[]; .detail.bytes > 0 and .detail.allocation_bytes > 0 and .detail.rho > 0)' >/dev/null <<<'$ev'"

# The split against the formula, from the true active bytes.
declare -A TRUE=([idle]=0 [busy]=0.625 [half]=0.375) GOT EST SLOW
for v in idle busy half; do
	read -r GOT[$v] _ EST[$v] SLOW[$v] < <(mm "$v")
done
# equal rho with S equal, k = 4: P_i = c + (1 - 1/k) A_i, sum P = budget
read -r e_idle e_busy e_half < <(awk -v b=128 -v k=4 'BEGIN {
	a1 = 0; a2 = 0.625 * 64; a3 = 0.375 * 64
	c = (b - (1 - 1/k) * (a1 + a2 + a3)) / 3
	printf "%.3f %.3f %.3f\n", c + (1 - 1/k) * a1, c + (1 - 1/k) * a2, c + (1 - 1/k) * a3 }')
declare -A WANT=([idle]=$e_idle [busy]=$e_busy [half]=$e_half)
for v in idle busy half; do
	got=$(awk -v g="${GOT[$v]}" 'BEGIN { printf "%.2f", g / 1048576 }')
	check "$v: allocation $got MiB matches the formula's ${WANT[$v]} MiB within 10 %" \
		awk -v g="$got" -v w="${WANT[$v]}" 'BEGIN { d = (g - w) / w; exit !(d < 0.1 && d > -0.1) }'
done
check "the idle VM is left the least memory" \
	test "${GOT[idle]}" -lt "${GOT[half]}" -a "${GOT[half]}" -lt "${GOT[busy]}"

# The sampling error: the estimate (the larger of the fast and slow
# averages) and the slow average, against the true fraction.
line="memory-activity sampling error (400 pages a 1 s period, 64 MiB VMs):"
maxerr=0
for v in idle busy half; do
	slow=${SLOW[$v]}
	err=$(awk -v e="${EST[$v]}" -v t="${TRUE[$v]}" 'BEGIN { d = e - t; printf "%+.3f", d }')
	line="$line $v true ${TRUE[$v]} est $(printf %.3f "${EST[$v]}") ($err) slow $(printf %.3f "$slow");"
	maxerr=$(awk -v m="$maxerr" -v d="$err" 'BEGIN { d = d < 0 ? -d : d; print (d > m ? d : m) }')
done
echo "$line max |error| $maxerr"
check "the sampling error is under 0.1 for each VM" awk -v m="$maxerr" 'BEGIN { exit !(m < 0.1) }'

# What the user sees.
out=$("$SHOAL" vm show busy 2>&1)
check "shoal vm show prints the manager's line (allocation, active, rho)" \
	grep -Eq '^memory mgr: allocation [0-9.]+M \(balloon target [0-9.]+M\), 1000 shares, active [0-9.]+ %, rho [0-9.]+' <<<"$out"
check "the balloon target (the VMM's) plus the allocation is the VM's memory" \
	test "$(vm_field idle '.stats | .balloon.target_bytes + .memory_manager.allocation_bytes')" = $((64 * MB))
api GET /metrics >/dev/null
check "GET /metrics: the budget, allocation, active ratio and rho series" bash -c "
	grep -qx 'shoal_host_memory_budget_bytes $((128 * MB))' '$TMP/body' &&
	grep -q '^shoal_vm_memory_allocation_bytes{vm=\"idle\"} [0-9]' '$TMP/body' &&
	grep -q '^shoal_vm_memory_active_ratio{vm=\"busy\"} 0\.[0-9]' '$TMP/body' &&
	grep -q '^shoal_vm_memory_shares_per_mib{vm=\"half\"} [0-9]' '$TMP/body'"

# Room again: busy stops, idle and half fit (64 + 64 = 128) and get back
# to their whole memory.
"$SHOAL" vm stop busy --force >/dev/null
back=0
for _ in $(seq 20); do
	read -r a1 _ < <(mm idle); read -r a2 _ < <(mm half)
	[ "$a1" = $((64 * MB)) ] && [ "$a2" = $((64 * MB)) ] && { back=1; break; }
	sleep 1
done
check "with busy stopped, idle and half get their memory back" test "$back" = 1
check "a memory-return event records it" bash -c "curl -s --unix-socket '$SHOAL_SOCKET' \
	'http://d/v1/events?vm=idle&limit=1000' | jq -e '[.events[] | select(.type == \"memory-return\")] | length > 0' >/dev/null"
"$SHOAL" vm stop idle --force >/dev/null
"$SHOAL" vm stop half --force >/dev/null
finish
