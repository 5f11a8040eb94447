#!/bin/bash
# slow_linux_cidata.sh - Linux sees the cloud-init NoCloud seed that
# `shoal run --cloud-init` builds (boot/cidata.c).
# tier: kvm
#
# One boot of Debian's vmlinux (PVH) with a raw disk and
# --cloud-init user-data=U,meta-data=M,network-config=N.  The guest checks
# its second disk, /dev/vdb (the seed comes after the user's disks): serial
# "cidata", read-only, the ISO 9660 volume id "cidata" read from the raw
# device at offset 32808 with dd, and, mounted with -t iso9660 (the kit
# loads isofs), exactly the three files with the host's bytes (SHA-256,
# compared here).  A write to the seed fails.  While the guest runs, the
# host checks that the seed's temporary directory is already gone (the VMM
# holds it open) and that `shoal snapshot create` saves the VM with a copy
# of the seed (tests/system/cidata.sh restores one); then a forced stop through the control socket ends the VMM
# with status 0.  A real cloud-init run needs a distribution image with
# GRUB, which the project does not build yet (docs/linux-guests.md).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
for t in cpio python3 jq; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

DISK=$TMP/disk.img
API=$TMP/api.sock
SEEDTMP=$TMP/seedtmp
mkdir -p "$SEEDTMP"
"$SHOAL" img create -f raw "$DISK" 1M >/dev/null || { fail "shoal img create raw"; finish; }
printf '#cloud-config\nhostname: shoal-cidata\nruncmd:\n  - [ sh, -c, "echo hello > /run/shoal" ]\n' >"$TMP/user-data"
printf 'instance-id: iid-shoal-cidata\nlocal-hostname: shoal-cidata\n' >"$TMP/meta-data"
printf 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n' >"$TMP/network-config"

linux_initrd "$TMP/initrd" '
t "serial $(cat /sys/block/vdb/serial 2>/dev/null)"
t "ro $(cat /sys/block/vdb/ro 2>/dev/null)"
t "volid $(dd if=/dev/vdb bs=1 skip=32808 count=32 2>/dev/null | tr -d " ")"
if dd if=/dev/zero of=/dev/vdb bs=512 count=1 oflag=direct 2>/dev/null; then t "write accepted"; else t "write refused"; fi
mkdir -p /mnt/ci
if mount -t iso9660 -o ro /dev/vdb /mnt/ci 2>/tmp/mount.err; then
	t "files $(ls /mnt/ci | tr "\n" " ")"
	for f in user-data meta-data network-config; do t "$f $(sha /mnt/ci/$f)"; done
else
	t "mount failed: $(cat /tmp/mount.err)"
fi
t "ready"
exec sleep 600'

# TMPDIR: where the VMM makes the seed's private directory
TMPDIR=$SEEDTMP linux_start cidata "$SHOAL_KIT_VMLINUX" "$TMP/initrd" --disk "$DISK" \
	--api-socket "$API" -v \
	--cloud-init "user-data=$TMP/user-data,meta-data=$TMP/meta-data,network-config=$TMP/network-config"
if linux_wait cidata ready; then
	pass "guest ready: the seed disk looked at"
else
	fail "guest ready" "$(linux_why cidata)"
fi
linux_same "the seed is the second disk, serial cidata" "$(linux_fact cidata serial)" "cidata"
linux_same "the seed disk is read-only to Linux" "$(linux_fact cidata ro)" "1"
linux_same "ISO 9660 volume id at offset 32808 (dd)" "$(linux_fact cidata volid)" "cidata"
linux_same "a write to the seed fails" "$(linux_fact cidata write)" "refused"
linux_same "mounted as iso9660: its files" "$(linux_fact cidata files)" "meta-data network-config user-data "
for f in user-data meta-data network-config; do
	linux_same "$f: the guest reads the host's bytes" "$(linux_fact cidata $f)" "$(sha "$TMP/$f")"
done
check "the VMM built the seed in a private directory under \$TMPDIR" \
	grep -q "cloud-init seed: $SEEDTMP/shoal-cidata-.*/cidata.iso" "$TMP/cidata.vmm"
seed=$(sed -n 's/.*cloud-init seed: \([^,]*\),.*/\1/p' "$TMP/cidata.vmm" | head -1)
if [ -n "$seed" ] && [ ! -e "$seed" ] && [ -z "$(ls -A "$SEEDTMP")" ]; then
	pass "the seed file and its directory are gone while the VM runs"
else
	fail "the seed file and its directory are gone while the VM runs" "${seed:-no path}: $(ls -la "$(dirname "${seed:-/nonexistent}")" 2>&1 | head -3)"
fi

out=$("$SHOAL" snapshot create --socket "$API" "$TMP/snap" 2>&1); rc=$?
check "snapshot create saves a VM with a cloud-init seed (status $rc: $out)" [ $rc = 0 ]
check "the snapshot's copy of the seed is an ISO 9660 volume 'cidata'" \
	test "$(dd if="$TMP/snap/cidata.img" bs=1 skip=32808 count=6 2>/dev/null)" = cidata

reply=$(hostside control "$API" '{"cmd": "stop", "mode": "force"}')
echo "$reply" | jq -e '.ok == true' >/dev/null 2>&1 || fail "control socket: forced stop" "$reply"
if linux_wait_exit 120; then
	pass "forced stop: shoal run ended with status 0"
else
	fail "forced stop: shoal run ended with status 0" "$(linux_why cidata)"
fi
finish
