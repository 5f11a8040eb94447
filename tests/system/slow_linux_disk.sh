#!/bin/bash
# slow_linux_disk.sh - Linux's virtio_blk driver on Shoal's in-process
# virtio-blk, on a raw image and on a qcow2 overlay whose backing file is raw.
# tier: kvm
#
# Two boots of Debian's kernel (the guest kit), 2 vCPUs, busybox init:
#   1. bzImage.  The guest reads a region of the backing file through the
#      overlay (the host knows its checksum), makes an ext2 file system on
#      each disk (busybox mke2fs), writes files of 4 KiB to 3 MiB and a
#      SUMS list of their SHA-256, unmounts, and runs `poweroff`.
#   2. vmlinux (PVH).  The guest mounts both again, checks every file against
#      SUMS (sha256sum -c), writes one more file, reads the backing region
#      again, and powers off.
# After each boot the host checks, with tools that are not Shoal's:
#   - shoal run ended with status 0 (ACPI power-off);
#   - `qemu-img check` finds the overlay clean, and the backing file is
#     unchanged byte for byte (the writes went to the overlay);
#   - e2fsck -fn finds each file system clean, and debugfs reads every file
#     back with the checksum the guest listed (the overlay is flattened with
#     `qemu-img convert` first).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
for t in qemu-img e2fsck debugfs cpio; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

RAW=$TMP/raw.img
BACK=$TMP/backing.raw
OVL=$TMP/overlay.qcow2
"$SHOAL" img create -f raw "$RAW" 32M >/dev/null || { fail "shoal img create raw"; finish; }
truncate -s 32M "$BACK"
head -c 4M /dev/urandom | dd of="$BACK" bs=1M seek=24 conv=notrunc status=none
"$SHOAL" img create -f qcow2 -b "$BACK" -F raw "$OVL" >/dev/null ||
	{ fail "shoal img create qcow2 overlay over raw"; finish; }
BACK_SUM=$(sha "$BACK")
REGION_SUM=$(dd if="$BACK" bs=1M skip=24 count=4 status=none | sha256sum | cut -c1-64)
DISKS=(--disk "$RAW" --disk "$OVL")

# On each disk: ext2 over the first 16 MiB, files, their checksums.
linux_initrd "$TMP/write.img" '
t "sectors $(cat /sys/block/vda/size) $(cat /sys/block/vdb/size)"
t "backing-region $(dd if=/dev/vdb bs=1M skip=24 count=4 2>/dev/null | sha)"
for d in vda vdb; do
	mke2fs -F /dev/$d 16384 >/tmp/mke2fs.$d 2>&1 || t "mke2fs-$d failed: $(tail -1 /tmp/mke2fs.$d)"
	mkdir -p /mnt/$d
	mount -t ext2 /dev/$d /mnt/$d || t "mount-$d failed"
	cd /mnt/$d
	dd if=/dev/urandom of=f1 bs=4k count=1 2>/dev/null
	dd if=/dev/urandom of=f2 bs=64k count=16 2>/dev/null
	dd if=/dev/urandom of=f3 bs=64k count=48 2>/dev/null
	mkdir -p sub && echo "written by the first boot on $d" >sub/note
	sha256sum f1 f2 f3 sub/note >SUMS
	t "sums-$d $(sha SUMS)"
	cd /
	umount /mnt/$d && t "umount-$d ok"
done
sync
t "written"
poweroff'

linux_initrd "$TMP/read.img" '
for d in vda vdb; do
	mkdir -p /mnt/$d
	mount -t ext2 /dev/$d /mnt/$d || t "mount-$d failed"
	cd /mnt/$d
	if sha256sum -c SUMS >/tmp/check.$d 2>&1; then
		t "verify-$d ok $(wc -l <SUMS) files"
	else
		t "verify-$d FAILED: $(grep -v ": OK" /tmp/check.$d | head -3 | tr "\n" " ")"
	fi
	echo "written by the second boot on $d" >second
	cd /
	umount /mnt/$d && t "umount-$d ok"
done
t "backing-region $(dd if=/dev/vdb bs=1M skip=24 count=4 2>/dev/null | sha)"
poweroff'

# fs_judge WHAT IMAGE GUEST_SUMS: e2fsck, then every file in SUMS read back
# by debugfs and checked; GUEST_SUMS is the checksum of SUMS the guest saw.
fs_judge() {
	local what=$1 img=$2 want=$3 sum f bad=0 n=0
	if e2fsck -fn "$img" >"$TMP/fsck.out" 2>&1; then
		pass "$what: e2fsck finds the file system clean"
	else
		fail "$what: e2fsck finds the file system clean" "$(grep -v '^Pass\|^$' "$TMP/fsck.out" | head -3 | tr '\n' ' ')"
	fi
	debugfs -R "cat /SUMS" "$img" 2>/dev/null >"$TMP/SUMS"
	linux_same "$what: SUMS as the guest wrote it" "$(sha "$TMP/SUMS")" "$want"
	while read -r sum f; do
		n=$((n + 1))
		[ "$(debugfs -R "cat /$f" "$img" 2>/dev/null | sha256sum | cut -c1-64)" = "$sum" ] || bad=$((bad + 1))
	done <"$TMP/SUMS"
	if [ $n -eq 4 ] && [ $bad -eq 0 ]; then
		pass "$what: debugfs reads all $n files with the guest's checksums"
	else
		fail "$what: debugfs reads all files with the guest's checksums" "$bad of $n differ"
	fi
}

# images_judge WHEN: what the host checks after each boot.
images_judge() {
	if qemu-img check -f qcow2 "$OVL" >"$TMP/check.out" 2>&1; then
		pass "$1: qemu-img check finds the overlay clean"
	else
		fail "$1: qemu-img check finds the overlay clean" "$(tr '\n' ' ' <"$TMP/check.out" | cut -c1-200)"
	fi
	linux_same "$1: the backing file is unchanged" "$(sha "$BACK")" "$BACK_SUM"
	qemu-img convert -f qcow2 -O raw "$OVL" "$TMP/flat.raw"
	fs_judge "$1: raw" "$RAW" "$(linux_fact write sums-vda)"
	fs_judge "$1: qcow2 overlay" "$TMP/flat.raw" "$(linux_fact write sums-vdb)"
}

# --- boot 1: bzImage, write ---
linux_start write "$SHOAL_KIT_BZIMAGE" "$TMP/write.img" "${DISKS[@]}"
if linux_wait write written; then
	pass "bzImage: Linux made ext2 on both disks and wrote its files"
else
	fail "bzImage: Linux made ext2 on both disks and wrote its files" "$(linux_why write)"
fi
linux_poweroff_ok write
linux_same "bzImage: disk sizes in sectors (raw, qcow2)" "$(linux_fact write sectors)" "65536 65536"
linux_same "bzImage: the backing file's bytes read through the overlay" \
	"$(linux_fact write backing-region)" "$REGION_SUM"
linux_same "bzImage: both file systems unmounted" \
	"$(linux_fact write umount-vda) $(linux_fact write umount-vdb)" "ok ok"
images_judge "after the first boot"

# --- boot 2: vmlinux (PVH), read back ---
linux_start read "$SHOAL_KIT_VMLINUX" "$TMP/read.img" "${DISKS[@]}"
linux_wait read backing-region
linux_poweroff_ok read
linux_same "vmlinux: raw disk files read back intact" "$(linux_fact read verify-vda)" "ok 4 files"
linux_same "vmlinux: qcow2 overlay files read back intact" "$(linux_fact read verify-vdb)" "ok 4 files"
linux_same "vmlinux: the backing region still shows through the overlay" \
	"$(linux_fact read backing-region)" "$REGION_SUM"
images_judge "after the second boot"
for img in "$RAW" "$TMP/flat.raw"; do
	linux_same "second boot's file on $(basename "$img")" \
		"$(debugfs -R "cat /second" "$img" 2>/dev/null | cut -d' ' -f1-5)" "written by the second boot"
done
finish
