#!/bin/bash
# daemon_balloon.sh - `shoal vm balloon NAME --target SIZE` and POST
# /v1/vms/NAME/balloon (docs/memory.md): the daemon hands the target to the
# VM's VMM and answers with its balloon object; vm show (stats.balloon, a
# "balloon:" line) and GET /metrics (shoal_vm_balloon_*) give its figures.  The test guest has no
# balloon driver, so the target is set and `actual` stays 0 (Linux's
# driver is tested by slow_linux_balloon.sh).  Bad input: a VM without a
# balloon (409 no_balloon), a target over the VM's memory or not a size
# (400, the CLI says so first), a stopped VM (409), an unknown VM (404).
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
quiet() { "$@" >/dev/null 2>&1; }
need_kvm "$(basename "$0")" || finish
start_daemon || { fail "daemon starts"; finish; }

api POST /v1/vms "$(spec bal shell '"balloon": true')" >/dev/null
api POST /v1/vms "$(spec plain)" >/dev/null
"$SHOAL" vm start bal >/dev/null && "$SHOAL" vm start plain >/dev/null ||
	{ fail "two VMs start" "$(body)"; finish; }
check "the spec keeps \"balloon\": true" test "$(vm_field bal .spec.balloon)" = true

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
