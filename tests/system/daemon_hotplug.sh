#!/bin/bash
# daemon_hotplug.sh - a disk hot-plugged into a RUNNING VM through shoald
# (issue 11, "Lifecycle"; src/host/disk_hotplug.c): `shoal vm disk add` of a
# raw image to a running test-guest VM (jailed when the daemon runs as
# root, so the VMM gets the image as an open file, never a path): the
# VMM's own disk-list shows it hot-added, the VM's record has it, an
# "edited" event says so, and after a stop and a start the VMM boots with
# it (the guest sees a virtio-blk device).  Refusals, each naming the VM,
# the disk and the reason: the same image twice, the same id twice, a
# missing file, an image another process holds for writing (an OFD lock
# byte as QEMU's), a 9th hot-added disk (no free hotplug slot), a paused
# VM, a remove the guest never answers (the test guest has no ACPI: the
# disk stays, in the VM and in the record), and the remove of a disk the
# VM booted with.  That a Linux guest sees the disk come and go is
# slow_linux_hotplug.sh's (the VMM's side, the same code).
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm daemon_hotplug || finish
start_daemon --stop-timeout 2 || { fail "daemon starts"; finish; }
cd "$TMP" || exit 1
SOCK=$STATE/vms/h1/control.sock

# ask NAME CMD EXPECT: type CMD on the guest's console, expect EXPECT in the answer
ask() {
	local out
	out=$(printf '%s\n' "$2" | "$SHOAL" console "$1" --linger 3 2>&1)
	grep -q -- "$3" <<<"$out"
}
# refused NAME EXPECT CMD...: CMD fails and its message has EXPECT
refused() {
	local name=$1 want=$2 out rc
	shift 2
	out=$("$@" 2>&1); rc=$?
	if [ $rc -ne 0 ] && grep -qF -- "$want" <<<"$out"; then pass "$name"; else fail "$name" "status $rc: $out"; fi
}
# vmm_disk PATH JQ: the VMM's own disk-list entry for PATH, through JQ
vmm_disk() { "$SHOAL" disk list --socket "$SOCK" -o json | jq -r --arg p "$1" ".disks[] | select(.path == \$p) | $2"; }

for i in 1 2 3 4 5 6 7 8 9 x; do "$SHOAL" img create -f raw d$i.raw 1M >/dev/null; done
SPEC_MEMORY=32M spec h1 shell '"cpus": 1' >h1.json
check "create and start" "$SHOAL" vm create -f h1.json --start
wait_console h1 "shoal>" || fail "guest prompt"
if [ "$(id -u)" = 0 ]; then      # jailed: it could not open the image's path itself
	check "the VMM runs jailed (not as root)" test "$(ps -o uid= -p "$(vm_field h1 .pid)" | tr -d ' ')" != 0
fi

out=$("$SHOAL" vm disk add h1 --image d1.raw --id data1 2>&1)
check "vm disk add to a running VM" grep -q "disk $TMP/d1.raw added (hot-plugged)" <<<"$out"
check "the VMM lists it, hot-added and attached" test "$(vmm_disk "$TMP/d1.raw" '"\(.hotplugged) \(.state) \(.serial)"')" = "true attached data1"
check "the VM's record has it" test "$(vm_field h1 '.spec.disks[0] | "\(.path) \(.serial)"')" = "$TMP/d1.raw data1"
events=$("$SHOAL" events --vm h1 -o json 2>/dev/null)
check "an edited event says disk hot-added" grep -q "disk hot-added" <<<"$events"

refused "the same image twice: refused" "vm \"h1\": disk $TMP/d1.raw: the VM has this image already" \
	"$SHOAL" vm disk add h1 --image d1.raw
refused "the same id twice: refused" "id \"data1\" is disks[0]'s already" \
	"$SHOAL" vm disk add h1 --image d2.raw --id data1
refused "a missing file: refused" "$TMP/nope.raw" "$SHOAL" vm disk add h1 --image nope.raw
# another process holds dx.raw for writing: a shared OFD lock on byte 101
# (LOCK_BYTE_HELD + the write permission), as QEMU's writer holds it
python3 -c '
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, 37, struct.pack("hhxxxxqqixxxx", fcntl.F_RDLCK, 0, 101, 1, 0))  # F_OFD_SETLK
print("held", flush=True); time.sleep(60)' dx.raw >lock.out &
LOCKPID=$!
for _ in $(seq 100); do grep -q held lock.out && break; sleep 0.05; done
refused "an image another process writes: refused (image_locked)" "disk $TMP/dx.raw: the image is locked by another process" \
	"$SHOAL" vm disk add h1 --image dx.raw
kill $LOCKPID 2>/dev/null
check "no refused disk reached the record" test "$(vm_field h1 '.spec.disks | length')" = 1

for i in 2 3 4 5 6 7 8; do "$SHOAL" vm disk add h1 --image d$i.raw >/dev/null 2>&1 || fail "hot-add d$i.raw"; done
check "8 hot-added disks in the record" test "$(vm_field h1 '.spec.disks | length')" = 8
refused "a 9th: no free hotplug slot" "disk $TMP/d9.raw: no free hotplug slot" \
	"$SHOAL" vm disk add h1 --image d9.raw
check "pause" "$SHOAL" vm pause h1
refused "a paused VM: refused" "vm \"h1\" is paused" "$SHOAL" vm disk add h1 --image d9.raw
check "resume" "$SHOAL" vm resume h1
refused "a remove the guest never answers: refused" "the guest did not release the device within 1 s" \
	"$SHOAL" vm disk remove h1 data1 --timeout 1
check "the disk stays in the VMM (removing)" test "$(vmm_disk "$TMP/d1.raw" .state)" = removing
check "and in the record" test "$(vm_field h1 '.spec.disks | length')" = 8

check "stop" "$SHOAL" vm stop h1 --timeout 2
check "start again" "$SHOAL" vm start h1
wait_console h1 "shoal>" || fail "guest prompt after the restart"
check "after the restart the VMM boots with the disk" test "$(vmm_disk "$TMP/d1.raw" '"\(.hotplugged) \(.serial)"')" = "false data1"
check "the guest sees it" ask h1 vdevs "type=blk"
refused "a disk the VM booted with is not hot-removed" "it was not hot-added" \
	"$SHOAL" vm disk remove h1 data1 --timeout 1
check "stop" "$SHOAL" vm stop h1 --timeout 2
check "vm disk remove by id on the stopped VM" "$SHOAL" vm disk remove h1 data1
check "the record lost it" test "$(vm_field h1 '.spec.disks | map(.serial) | index("data1")')" = null
finish
