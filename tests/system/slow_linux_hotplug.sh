#!/bin/bash
# slow_linux_hotplug.sh - a virtio-blk disk plugged into a running Linux and
# unplugged again, through ACPI PCI hotplug (`shoal disk`, vmm/hotplug.c).
# tier: kvm
#
# One boot of Debian's bzImage (1 vCPU, 256 MiB) with one disk (vda) and
# --api-socket:
#   - Linux's acpiphp registers the DSDT's 31 slots (/sys/bus/pci/slots);
#   - `shoal disk add` of a raw image with known random bytes and a serial:
#     /dev/vdb appears, its serial and SHA-256 are the image's; the guest
#     writes 1 MiB of other bytes to it (fsync) and the VMM's disk-list shows
#     the disk "attached" in its slot;
#   - `shoal disk remove`: the guest releases the disk (its _EJ0) and the
#     command returns once the VMM removed it; the image file holds the bytes
#     the guest wrote; /dev/vdb is gone from the guest;
#   - the same slot again with --readonly: /sys/block/vdb/ro is 1, the bytes
#     are the ones written before, and it unplugs as well;
#   - refusals on the running VM: a directory for an image (the VMM's error
#     names it), an unknown id, and the boot disk (not hot-added);
#   - `poweroff` ends shoal run with status 0.
# Then the test guest (build/shoal-guest, no ACPI at all) for what a guest
# that never answers gives: 8 disks go in, a 9th is refused (the limit),
# nothing moves while the VM is paused,
# `shoal disk remove --timeout 1` fails saying the guest did not release the
# disk (which stays), and a snapshot of the VM is refused while it has a
# hot-added disk.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
for t in cpio python3; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

API=$TMP/api.sock
head -c 1048576 /dev/urandom >"$TMP/boot.img"
head -c 4194304 /dev/urandom >"$TMP/hot.img"
head -c 1048576 /dev/urandom >"$TMP/payload"
HOT_SHA=$(sha "$TMP/hot.img")
HOT_TAIL_SHA=$(tail -c +1048577 "$TMP/hot.img" | sha256sum | cut -c1-64)

# wait_vdb GONE|PRESENT: poll (bounded) for /dev/vdb in the guest.
linux_initrd "$TMP/initrd" "
wait_vdb() { i=0; while [ \$i -lt 600 ]; do
	if [ \$1 = present ]; then [ -b /dev/vdb ] && [ \"\$(cat /sys/block/vdb/size 2>/dev/null)\" != 0 ] && return 0
	else [ -b /dev/vdb ] || return 0; fi
	sleep 0.1; i=\$((i + 1)); done; return 1; }
t \"slots \$(ls /sys/bus/pci/slots | wc -l) disks \$(ls /sys/block | grep -c '^vd')\"
t ready
wait_vdb present && t \"vdb \$(cat /sys/block/vdb/size) \$(cat /sys/block/vdb/serial) \$(sha /dev/vdb)\"
dd if=/test/payload of=/dev/vdb bs=65536 conv=fsync 2>/dev/null
t \"written \$? \$(head -c 1048576 /dev/vdb | sha256sum | cut -c1-64)\"
sync
wait_vdb gone && t \"gone \$(ls /sys/block | grep -c '^vd')\"
t ready2
wait_vdb present && t \"ro \$(cat /sys/block/vdb/ro) \$(head -c 1048576 /dev/vdb | sha256sum | cut -c1-64)\"
wait_vdb gone && t \"gone2 \$(ls /sys/block | grep -c '^vd')\"
t \"dmesg \$(dmesg | grep -c 'virtio_blk virtio.*\\[vdb\\]')\"
poweroff" "$TMP/payload"

linux_start hp "$SHOAL_KIT_BZIMAGE" "$TMP/initrd" --disk "$TMP/boot.img" --api-socket "$API" \
	--cpus 1 --memory 256M

if ! linux_wait hp ready; then
	fail "Linux boots to its hook" "$(linux_why hp)"
	finish
fi
linux_same "acpiphp: 31 hotplug slots, one disk at boot" "$(linux_fact hp slots)" "31 disks 1"

# refusals
mkdir "$TMP/not-an-image"
out=$("$SHOAL" disk add --socket "$API" "$TMP/not-an-image" 2>&1); rc=$?
[ $rc = 70 ] && [[ $out == *"disk-add: $TMP/not-an-image: "* ]] &&
	pass "disk-add of what is not an image is refused, naming it" ||
	fail "disk-add of what is not an image is refused, naming it" "status $rc: $out"
out=$("$SHOAL" disk remove --socket "$API" virtio-blk7 2>&1); rc=$?
[ $rc = 70 ] && [[ $out == *"virtio-blk7: no such disk"* ]] && pass "removing an unknown id is refused" ||
	fail "removing an unknown id is refused" "status $rc: $out"
out=$("$SHOAL" disk remove --socket "$API" virtio-blk0 2>&1); rc=$?
[ $rc = 70 ] && [[ $out == *"not hot-added"* ]] && pass "removing the boot disk is refused" ||
	fail "removing the boot disk is refused" "status $rc: $out"

# plug
id=$("$SHOAL" disk add --socket "$API" "$TMP/hot.img" --serial hp-serial-1 2>"$TMP/add.err")
linux_same "disk add prints the new disk's id" "$id" virtio-blk1
if linux_wait hp vdb 60; then
	linux_same "Linux finds /dev/vdb: its size, serial and bytes are the image's" \
		"$(linux_fact hp vdb)" "8192 hp-serial-1 $HOT_SHA"
else
	fail "Linux finds /dev/vdb after disk add" "$(linux_why hp); add: $(cat "$TMP/add.err")"
fi
list=$("$SHOAL" disk list --socket "$API" -o json)
case $list in
*'"id":"virtio-blk1"'*'"state":"attached"'*) pass "disk list shows the hot-added disk attached" ;;
*) fail "disk list shows the hot-added disk attached" "$list" ;;
esac
if linux_wait hp written 60; then
	linux_same "the guest wrote 1 MiB to vdb" "$(linux_fact hp written)" "0 $(sha "$TMP/payload")"
else
	fail "the guest wrote to vdb" "$(linux_why hp)"
fi

# unplug
out=$("$SHOAL" disk remove --socket "$API" virtio-blk1 --timeout 60 2>&1); rc=$?
linux_same "disk remove returns once the guest released the disk" "$rc $out" "0 virtio-blk1 removed"
linux_same "the image holds what the guest wrote" "$(head -c 1048576 "$TMP/hot.img" | sha256sum | cut -c1-64)" \
	"$(sha "$TMP/payload")"
linux_same "the image's other bytes are as they were" \
	"$(tail -c +1048577 "$TMP/hot.img" | sha256sum | cut -c1-64)" "$HOT_TAIL_SHA"
if linux_wait hp "gone " 30; then
	linux_same "/dev/vdb is gone from the guest" "$(linux_fact hp gone)" 1
else
	fail "/dev/vdb is gone from the guest" "$(linux_why hp)"
fi
list=$("$SHOAL" disk list --socket "$API")
[[ $list != *virtio-blk1* ]] && pass "disk list no longer has it" || fail "disk list no longer has it" "$list"

# again, read-only, in the slot just freed
linux_wait hp ready2 30
id=$("$SHOAL" disk add --socket "$API" --readonly "$TMP/hot.img" 2>&1)
linux_same "a second disk add (read-only) takes the freed id" "$id" virtio-blk1
if linux_wait hp "ro " 60; then
	linux_same "read-only in the guest, with the bytes written before" "$(linux_fact hp ro)" \
		"1 $(sha "$TMP/payload")"
else
	fail "the read-only disk appears in the guest" "$(linux_why hp)"
fi
out=$("$SHOAL" disk remove --socket "$API" virtio-blk1 --timeout 60 2>&1); rc=$?
linux_same "the read-only disk unplugs too" "$rc $out" "0 virtio-blk1 removed"
linux_wait hp gone2 30
linux_same "the guest's log names vdb on both plugs" "$(linux_fact hp dmesg)" 2
linux_poweroff_ok hp

# A guest that never answers: the test guest has no ACPI.
G_API=$TMP/g.sock
"$SHOAL" run --kernel "$GUEST" --cmdline shell --console none --api-socket "$G_API" \
	--timeout 120 </dev/null >"$TMP/g.vmm" 2>&1 &
LINUX_PID=$!
for _ in $(seq 100); do [ -S "$G_API" ] && break; sleep 0.05; done
n=0
for i in 1 2 3 4 5 6 7 8; do
	head -c 65536 /dev/zero >"$TMP/g$i.img"
	"$SHOAL" disk add --socket "$G_API" "$TMP/g$i.img" >/dev/null 2>>"$TMP/g.err" && n=$((n + 1))
done
linux_same "8 disks go into a running VM" "$n" 8
# pause, try a removal, resume: one python3 (each start is seconds in the box)
out=$(python3 - "$G_API" "$SHOAL" <<'PY' 2>&1
import json, socket, subprocess, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
def req(o):
    f.write((json.dumps(o) + "\n").encode()); f.flush(); return json.loads(f.readline())
print("pause:", req({"cmd": "pause"}).get("state"))
r = subprocess.run([sys.argv[2], "disk", "remove", "--socket", sys.argv[1], "virtio-blk7"],
                   capture_output=True, text=True)
print("status %d: %s" % (r.returncode, r.stderr.strip()))
print("resume:", req({"cmd": "resume"}).get("state"))
PY
)
[[ $out == *"pause: paused"*"status 70: "*"the VM is paused; resume it first"*"resume: running"* ]] &&
	pass "a paused VM's disks stay put" || fail "a paused VM's disks stay put" "$out"
head -c 65536 /dev/zero >"$TMP/g9.img"
out=$("$SHOAL" disk add --socket "$G_API" "$TMP/g9.img" 2>&1); rc=$?
[ $rc = 70 ] && [[ $out == *"8 hot-added disks already"* ]] && pass "a 9th is refused: the limit" ||
	fail "a 9th is refused: the limit" "status $rc: $out"
out=$("$SHOAL" disk remove --socket "$G_API" virtio-blk0 --timeout 1 2>&1); rc=$?
[ $rc = 70 ] && [[ $out == *"virtio-blk0: the guest did not release it within 1 s"* ]] &&
	pass "removing from a guest that never answers times out, saying so" ||
	fail "removing from a guest that never answers times out, saying so" "status $rc: $out"
list=$("$SHOAL" disk list --socket "$G_API" -o json)
case $list in
*'"id":"virtio-blk0"'*'"state":"removing"'*) pass "the disk stays, its removal pending" ;;
*) fail "the disk stays, its removal pending" "$list" ;;
esac
out=$("$SHOAL" snapshot create --socket "$G_API" "$TMP/snap" 2>&1); rc=$?
[ $rc != 0 ] && [[ $out == *"hot-added disk"* ]] && [ ! -e "$TMP/snap" ] &&
	pass "a snapshot is refused while a disk is hot-added" ||
	fail "a snapshot is refused while a disk is hot-added" "status $rc: $out"
kill "$LINUX_PID"
linux_wait_exit 30 || true
finish
