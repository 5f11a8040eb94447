#!/bin/bash
# slow_linux_acpi.sh - a graceful stop through Shoal's control socket shuts
# Linux down cleanly.
# tier: kvm
#
# One boot of Debian's vmlinux through PVH (2 vCPUs, busybox init, a raw
# disk, --api-socket).  The guest finds the ACPI power button (an input
# device, with busybox acpid watching it), makes ext2 on the disk, writes
# 1 MiB into it without syncing, and stays busy inside the mount.  The host
# sends {"cmd": "stop", "mode": "graceful"}: Shoal raises the power button's
# status bit and the SCI; Linux's button driver reports KEY_POWER, acpid
# runs the kit's /etc/acpi/PWRF/00000080 (`poweroff`), and busybox init
# stops every process, unmounts the disk and powers off through ACPI S5.
# The host checks:
#   - the stop is acknowledged and shoal run ends with status 0;
#   - the console shows each step: the button, the kit's shutdown, Linux's
#     "reboot: Power down";
#   - the disk's file system is clean (e2fsck -fn, dumpe2fs "clean": a VM
#     killed instead leaves "not clean") and debugfs reads the 1 MiB back
#     with the guest's checksum (only the shutdown wrote it out).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
for t in e2fsck dumpe2fs debugfs cpio python3; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

DISK=$TMP/disk.img
API=$TMP/api.sock
"$SHOAL" img create -f raw "$DISK" 32M >/dev/null || { fail "shoal img create raw"; finish; }

linux_initrd "$TMP/initrd" '
t "power-button $(cat /sys/class/input/input*/name | grep -c "^Power Button$")"
t "acpid $(pidof acpid >/dev/null && echo running || echo missing)"
mke2fs -F /dev/vda >/tmp/mke2fs 2>&1 || t "mke2fs failed: $(tail -1 /tmp/mke2fs)"
mkdir -p /mnt/vda && mount -t ext2 /dev/vda /mnt/vda && cd /mnt/vda
dd if=/dev/urandom of=data bs=64k count=16 2>/dev/null
t "data $(sha data)"
t "ready"
# Busy in the mount, data unsynced, until the power button ends it.
exec sleep 600'

linux_start acpi "$SHOAL_KIT_VMLINUX" "$TMP/initrd" --disk "$DISK" --api-socket "$API"
if linux_wait acpi ready; then
	pass "guest ready: disk mounted, 1 MiB written, not synced"
else
	fail "guest ready" "$(linux_why acpi)"
fi
linux_same "Linux found the ACPI power button" "$(linux_fact acpi power-button)" "1"
linux_same "busybox acpid runs" "$(linux_fact acpi acpid)" "running"

reply=$(hostside control "$API" '{"cmd": "stop", "mode": "graceful"}')
if echo "$reply" | jq -e '.ok == true' >/dev/null 2>&1; then
	pass "control socket: graceful stop acknowledged"
else
	fail "control socket: graceful stop acknowledged" "$reply"
fi
if linux_wait_exit 120; then
	pass "graceful stop: Linux powered off, shoal run ended with status 0"
else
	fail "graceful stop: Linux powered off, shoal run ended with status 0" "$(linux_why acpi)"
fi
L=$TMP/acpi.log
check "console: the power button reached acpid's handler" grep -q 'shoal-kit: power button pressed' "$L"
check "console: busybox init ran the kit's shutdown" grep -q 'shoal-kit: shutting down' "$L"
check "console: Linux's own power-off line" grep -q 'reboot: Power down' "$L"

if e2fsck -fn "$DISK" >"$TMP/fsck.out" 2>&1; then
	pass "e2fsck finds the file system clean"
else
	fail "e2fsck finds the file system clean" "$(grep -v '^Pass\|^$' "$TMP/fsck.out" | head -3 | tr '\n' ' ')"
fi
linux_same "the file system was unmounted (state clean)" \
	"$(dumpe2fs -h "$DISK" 2>/dev/null | sed -n 's/^Filesystem state: *//p')" "clean"
linux_same "the unsynced 1 MiB reached the disk" \
	"$(debugfs -R 'cat /data' "$DISK" 2>/dev/null | sha256sum | cut -c1-64)" "$(linux_fact acpi data)"
finish
