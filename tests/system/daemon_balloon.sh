#!/bin/bash
# daemon_balloon.sh - `shoal vm balloon NAME --target SIZE` and POST
# /v1/vms/NAME/balloon (docs/memory.md): the daemon hands the target to the
# VM's VMM and answers with its balloon object; vm show (stats.balloon, a
# "balloon:" line) and GET /metrics (shoal_vm_balloon_*) give its figures.  The test guest has no
# balloon driver, so the target is set and `actual` stays 0 (Linux's
# driver is tested by slow_linux_balloon.sh).  Bad input: a VM without a
# balloon (409 no_balloon), a target over the VM's memory or not a size
# (400, the CLI says so first), a stopped VM (409), an unknown VM (404).
# The memory layer's switches in the spec (docs/memory.md): bal runs with
# "zero_scan": 5000 and plain with "mem_recovery": true, and their VMMs
# really do (the config on the control socket, the layer's userfaultfd,
# the memory_errors counters); bad values and the two together are 400.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
quiet() { "$@" >/dev/null 2>&1; }
need_kvm "$(basename "$0")" || finish
start_daemon || { fail "daemon starts"; finish; }

api POST /v1/vms "$(spec bal shell '"balloon": true, "zero_scan": 5000')" >/dev/null
api POST /v1/vms "$(spec plain shell '"mem_recovery": true')" >/dev/null
"$SHOAL" vm start bal >/dev/null && "$SHOAL" vm start plain >/dev/null ||
	{ fail "two VMs start" "$(body)"; finish; }
check "the spec keeps \"balloon\": true" test "$(vm_field bal .spec.balloon)" = true
check "the specs keep \"zero_scan\": 5000 and \"mem_recovery\": true" \
	test "$(vm_field bal .spec.zero_scan) $(vm_field plain .spec.mem_recovery)" = "5000 true"
# the VMMs' own view: status's config, the zero layer's userfaultfd, mce counters
vmm=$(python3 - "$STATE/vms" "$(dirname "$0")" <<'PY'
import os, sys
sys.path.insert(0, sys.argv[2])
from vmtest import ctl
d = sys.argv[1]
b = ctl(d + "/bal/control.sock", {"cmd": "status"})
p = ctl(d + "/plain/control.sock", {"cmd": "status"})
m = ctl(d + "/plain/control.sock", {"cmd": "metrics"})
def uffd(pid):
    try:
        return any(os.readlink("/proc/%d/fd/%s" % (pid, f))
                   == "anon_inode:[userfaultfd]" for f in os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return False
print(b.get("config", {}).get("zero_scan"), uffd(b.get("pid", 0)),
      p.get("config", {}).get("mem_recovery"), "memory_errors" in m, uffd(p.get("pid", 0)))
PY
)
check "bal's VMM runs the zero layer at 5000 pages/s, plain's with mem-recovery (no layer)" \
	test "$vmm" = "5000 True True True False"
expect_error "\"zero_scan\": \"fast\": 400 naming it" 400 invalid_spec "zero_scan" \
	api POST /v1/vms "$(spec z1 shell '"zero_scan": "fast"')"
expect_error "\"zero_scan\": 10000001: 400" 400 invalid_spec "zero_scan" \
	api POST /v1/vms "$(spec z2 shell '"zero_scan": 10000001')"
expect_error "\"mem_recovery\": \"yes\": 400 naming it" 400 invalid_spec "mem_recovery" \
	api POST /v1/vms "$(spec z3 shell '"mem_recovery": "yes"')"
expect_error "both together: 400" 400 invalid_spec "mem_recovery" \
	api POST /v1/vms "$(spec z4 shell '"mem_recovery": true, "zero_scan": 0')"

out=$("$SHOAL" vm balloon bal --target 16M 2>&1)
check "shoal vm balloon bal --target 16M: set" grep -q "^bal: balloon target 16M (the guest holds 0 now)" <<<"$out"
st=$(api POST /v1/vms/bal/balloon '{"target": "32M"}')
check "POST balloon {\"target\": \"32M\"}: 200, target_bytes, actual_bytes 0 (no driver)" \
	quiet jq -e '.target_bytes == 33554432 and .actual_bytes == 0 and .broken == false' "$TMP/body"
[ "$st" = 200 ] || fail "POST balloon: 200" "got $st"

# The balloon's figures: vm show (JSON and text) and GET /metrics.
check "vm show: stats.balloon has the target (32M) and what it holds (0)" \
	test "$(vm_field bal '.stats.balloon | "\(.target_bytes) \(.actual_bytes)"')" = "33554432 0"
check "vm show: a VM without a balloon has no stats.balloon" test "$(vm_field plain '.stats.balloon')" = null
out=$("$SHOAL" vm show bal 2>&1)
check "shoal vm show prints the balloon's line" grep -q "^balloon: *target 32M, holds 0" <<<"$out"
api GET /metrics >/dev/null
check "GET /metrics: shoal_vm_balloon_target_bytes of bal is 33554432" \
	grep -qx 'shoal_vm_balloon_target_bytes{vm="bal"} 33554432' "$TMP/body"
check "and its actual and released bytes (0), with HELP and TYPE" bash -c \
	"grep -qx 'shoal_vm_balloon_actual_bytes{vm=\"bal\"} 0' '$TMP/body' &&
	 grep -qx 'shoal_vm_balloon_released_bytes_total{vm=\"bal\"} 0' '$TMP/body' &&
	 grep -qx '# TYPE shoal_vm_balloon_target_bytes gauge' '$TMP/body'"
check "a VM without a balloon has no balloon series" bash -c "! grep -q 'balloon.*vm=\"plain\"' '$TMP/body'"

expect_error "a VM without a balloon: 409 no_balloon" 409 no_balloon "no balloon device" \
	api POST /v1/vms/plain/balloon '{"target": 4096}'
expect_error "a target over the VM's memory: 400" 400 invalid_request "more than the VM's memory" \
	api POST /v1/vms/bal/balloon '{"target": "65M"}'
expect_error "a target that is not a size: 400" 400 invalid_request "target" \
	api POST /v1/vms/bal/balloon '{"target": "lots"}'
expect_error "another key: 400" 400 invalid_request "nothing else" \
	api POST /v1/vms/bal/balloon '{"target": 0, "now": true}'
expect_error "an unknown VM: 404" 404 not_found "ghost" \
	api POST /v1/vms/ghost/balloon '{"target": 0}'
"$SHOAL" vm balloon bal --target lots >/dev/null 2>"$TMP/err"; rc=$?
check "CLI: --target lots refused (64) naming it" bash -c "[ $rc -eq 64 ] && grep -q -- '--target lots' '$TMP/err'"
"$SHOAL" vm balloon bal >/dev/null 2>"$TMP/err"; rc=$?
check "CLI: no --target refused (64)" bash -c "[ $rc -eq 64 ] && grep -q -- '--target SIZE is required' '$TMP/err'"

"$SHOAL" vm stop bal --force >/dev/null
expect_error "a stopped VM: 409" 409 wrong_state "cannot balloon" \
	api POST /v1/vms/bal/balloon '{"target": 0}'
finish
