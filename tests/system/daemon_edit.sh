#!/bin/bash
# daemon_edit.sh - changing a VM the daemon keeps (issue 11, "Lifecycle"):
# reboot (power button, then a fresh VMM) and reset (forced) of a running
# test-guest VM, each a new VMM process that boots to its prompt; a spec
# edited through the CLI while the VM is stopped (vm edit -f, --patch) is
# what the next start boots (the guest reports its vCPU count); a disk
# added with vm disk-add is seen by the guest, and disk-remove takes it
# away; an edit of a running VM is refused (409) and changes nothing.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm daemon_edit || finish
start_daemon --stop-timeout 2 || { fail "daemon starts"; finish; }
cd "$TMP" || exit 1

# ask NAME CMD EXPECT: type CMD on the guest's console, expect EXPECT in the answer
ask() {
	local out
	out=$(printf '%s\n' "$2" | "$SHOAL" console "$1" --linger 3 2>&1)
	grep -q -- "$3" <<<"$out"
}

spec e1 shell '"cpus": 1' >e1.json
check "create and start" "$SHOAL" vm create -f e1.json --start
wait_console e1 "shoal>" || fail "guest prompt"
pid1=$(vm_field e1 .pid)
out=$("$SHOAL" vm reboot e1 --timeout 2 2>&1)
check "vm reboot: running again" bash -c "[ '$(vm_field e1 .state)' = running ] && grep -q 'e1: running' <<<'$out'"
pid2=$(vm_field e1 .pid)
check "vm reboot: a new VMM" bash -c "[ -n '$pid2' ] && [ '$pid2' != '$pid1' ] && ! kill -0 $pid1 2>/dev/null"
check "after reboot the guest answers" ask e1 info "info cpus=1"
check "vm reset: running again" "$SHOAL" vm reset e1
pid3=$(vm_field e1 .pid)
check "vm reset: a new VMM" bash -c "[ -n '$pid3' ] && [ '$pid3' != '$pid2' ]"
check "after reset the guest answers" ask e1 info "info cpus=1"

printf '{"cpus": 2}' >patch.json
out=$("$SHOAL" vm edit e1 -f patch.json --patch 2>&1); rc=$?
check "edit of a running VM refused (409 wrong_state)" bash -c "[ $rc -eq 1 ] && grep -q 'running' <<<'$out'"
check "and changed nothing" test "$(vm_field e1 .spec.cpus)" = 1
check "stop" "$SHOAL" vm stop e1 --timeout 2
check "vm edit --patch while stopped" "$SHOAL" vm edit e1 -f patch.json --patch
check "the spec says 2 vCPUs" test "$(vm_field e1 .spec.cpus)" = 2
events=$("$SHOAL" events --vm e1 -o json 2>/dev/null)
check "an edited event" bash -c "grep -q edited <<<'$events'"
"$SHOAL" img create -f raw d1.raw 4M >/dev/null
check "vm disk-add" "$SHOAL" vm disk-add e1 --path d1.raw
check "the spec has the disk (absolute path)" test "$(vm_field e1 '.spec.disks[0].path')" = "$TMP/d1.raw"
check "start after the edits" "$SHOAL" vm start e1
wait_console e1 "shoal>" || fail "guest prompt after edit"
check "the guest has 2 vCPUs" ask e1 info "info cpus=2"
check "the guest sees the disk" ask e1 vdevs "type=blk"
check "stop again" "$SHOAL" vm stop e1 --timeout 2
check "vm disk-remove" "$SHOAL" vm disk-remove e1 --path d1.raw
check "the disk is gone from the spec" test "$(vm_field e1 '.spec.disks | length')" = 0
SPEC_MEMORY=32M spec e1 shell '"cpus": 1' >whole.json
check "vm edit (the whole spec)" "$SHOAL" vm edit e1 -f whole.json
check "replaced: 1 vCPU, 32M" bash -c "[ '$(vm_field e1 .spec.cpus)' = 1 ] && [ '$(vm_field e1 .memory)' = $((32 << 20)) ]"
finish
