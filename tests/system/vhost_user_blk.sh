#!/bin/bash
# tests/system/vhost_user_blk.sh - Shoal's virtio-blk model served by
# `shoal vhost-user blk` to QEMU's vhost-user-blk-pci, driven by Linux's own
# virtio_blk driver in the guest kit (QEMU TCG, memfd memory shared).
#
#   boot 1  the guest reads a pattern the host wrote (read path), writes
#           its own raw pattern (write path), makes an ext2 file system and
#           writes a 3 MB file; the host then checks the pattern, e2fsck
#           and the file's bytes through debugfs
#   boot 2  a second front end on the same back-end process (a new
#           connection), with packed rings: the guest reads the file back
#   boot 3  readonly, two queues: the guest sees a read-only disk and a
#           write fails
#   boot 4  a qcow2 image: the guest writes, `qemu-img check` and
#           `qemu-img convert` read what Shoal's qcow2 code wrote
#
# SKIPs when the guest kit cannot be built or QEMU lacks the device.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vhost_user_lib.bash"

vu_require vhost-user-blk-pci
SOCK=$TMP/blk.sock
IMG=$TMP/disk.img
# queue-size=256: QEMU's default ring of 128 is smaller than the 254
# segments Shoal's virtio-blk advertises, and Linux then sends indirect
# tables longer than the ring, which the virtqueue core refuses (see
# docs/vhost-user.md, "Known limits").
DEV="-chardev socket,id=c0,path=$SOCK -device vhost-user-blk-pci,chardev=c0,queue-size=256"
sha() { sha256sum | cut -d' ' -f1; }

truncate -s 64M "$IMG"
head -c 1M /dev/urandom >"$TMP/hostpat"
dd if="$TMP/hostpat" of="$IMG" bs=1M seek=48 conv=notrunc status=none
HOSTSHA=$(sha <"$TMP/hostpat")

# ---- boot 1: read, raw write, ext2 ----
vu_initrd "$TMP/initrd1" '
echo "vu-test: size $(cat /sys/block/vda/size) serial $(cat /sys/block/vda/serial)"
echo "vu-test: hostpat $(dd if=/dev/vda bs=1M skip=48 count=1 2>/dev/null | sha256sum | cut -d" " -f1)"
dd if=/dev/urandom of=/tmp/gp bs=1M count=1 2>/dev/null
dd if=/tmp/gp of=/dev/vda bs=1M seek=40 conv=fsync 2>/dev/null
echo "vu-test: guestpat $(sha256sum </tmp/gp | cut -d" " -f1)"
mkdir -p /mnt
if mke2fs -q -b 1024 /dev/vda 32768 && mount -t ext2 /dev/vda /mnt; then
	dd if=/dev/urandom of=/mnt/data bs=1k count=3000 2>/dev/null
	echo "vu-test: file $(sha256sum </mnt/data | cut -d" " -f1)"
	umount /mnt && echo "vu-test: umount ok"
fi'
vu_backend blk blk --socket "$SOCK" --disk "$IMG,serial=vu-disk-1" || finish
PID=$VU_PID
start=$(date +%s)
# shellcheck disable=SC2086
vu_qemu "$TMP/boot1.log" "$TMP/initrd1" $DEV; rc=$?
L=$TMP/boot1.log
if [ $rc -eq 0 ] && grep -q "^vu-test: done" "$L"; then
	pass "boot 1 ran to its end ($(($(date +%s) - start)) s)"
else
	fail "boot 1 ran to its end" "qemu status $rc; $(tail -3 "$L" "$L.qemu" | tr '\n' ' ')"
fi
check "guest sees 131072 sectors and serial vu-disk-1" \
	test "$(vu_line "$L" size)" = "131072 serial vu-disk-1"
check "guest read the host's pattern (read path)" test "$(vu_line "$L" hostpat)" = "$HOSTSHA"
GP=$(dd if="$IMG" bs=1M skip=40 count=1 status=none | sha)
check "host reads the guest's raw pattern (write path)" test -n "$(vu_line "$L" guestpat)" -a "$(vu_line "$L" guestpat)" = "$GP"
check "guest unmounted its ext2" grep -q "^vu-test: umount ok" "$L"
FILESHA=$(vu_line "$L" file)
if ! command -v e2fsck >/dev/null || ! command -v debugfs >/dev/null; then
	skip "e2fsck and debugfs on the guest's ext2" "e2fsprogs not installed"
elif e2fsck -fn "$IMG" >"$TMP/fsck.log" 2>&1; then
	pass "e2fsck: the guest's ext2 is clean"
	check "debugfs reads the guest's file byte for byte" \
		test -n "$FILESHA" -a "$(debugfs -R "cat /data" "$IMG" 2>/dev/null | sha)" = "$FILESHA"
else
	fail "e2fsck: the guest's ext2 is clean" "$(tail -3 "$TMP/fsck.log")"
fi

# ---- boot 2: a new front end on the same back end, packed rings ----
FEAT='echo "vu-test: packed $(cut -c35 /sys/bus/virtio/devices/*/features) queues $(ls /sys/block/vda/mq | wc -l)"'
vu_initrd "$TMP/initrd2" "$FEAT"'
mkdir -p /mnt
mount -t ext2 -o ro /dev/vda /mnt && echo "vu-test: file $(sha256sum </mnt/data | cut -d" " -f1)"'
# shellcheck disable=SC2086
vu_qemu "$TMP/boot2.log" "$TMP/initrd2" $DEV,packed=on
check "second front end: packed ring negotiated" test "$(vu_line "$TMP/boot2.log" packed)" = "1 queues 1"
check "second front end reads the file back" test -n "$FILESHA" -a "$(vu_line "$TMP/boot2.log" file)" = "$FILESHA"
check "back end logged two connects and two disconnects" \
	test "$(grep -c 'front end connected' "$TMP/blk.log")" = 2 -a \
	"$(grep -c 'front end disconnected' "$TMP/blk.log")" = 2
vu_backend_stop "blk back end" "$PID"
check "socket file removed on exit" test ! -e "$SOCK"

# ---- boot 3: readonly, two queues ----
vu_initrd "$TMP/initrd3" "$FEAT"'
echo "vu-test: ro $(cat /sys/block/vda/ro)"
if dd if=/dev/zero of=/dev/vda bs=4k count=1 conv=fsync 2>/tmp/err; then echo "vu-test: write ok"; else echo "vu-test: write failed: $(cat /tmp/err)"; fi
echo "vu-test: hostpat $(dd if=/dev/vda bs=1M skip=48 count=1 2>/dev/null | sha256sum | cut -d" " -f1)"'
cp "$IMG" "$TMP/before.img"
vu_backend blk-ro blk --socket "$SOCK" --disk "$IMG,readonly,queues=2" || finish
PID=$VU_PID
# shellcheck disable=SC2086
vu_qemu "$TMP/boot3.log" "$TMP/initrd3" $DEV,num-queues=2 -smp 2
check "readonly: two queues, split rings" test "$(vu_line "$TMP/boot3.log" packed)" = "0 queues 2"
check "readonly: the guest sees a read-only disk" test "$(vu_line "$TMP/boot3.log" ro)" = 1
check "readonly: the guest's write fails" grep -q "^vu-test: write failed" "$TMP/boot3.log"
check "readonly: reads still work" test "$(vu_line "$TMP/boot3.log" hostpat)" = "$HOSTSHA"
check "readonly: the image is unchanged" cmp -s "$IMG" "$TMP/before.img"
vu_backend_stop "blk-ro back end" "$PID"

# ---- boot 4: qcow2 ----
if qemu-img create -q -f qcow2 "$TMP/disk.qcow2" 64M; then
	vu_initrd "$TMP/initrd4" '
dd if=/dev/urandom of=/tmp/gp bs=1M count=2 2>/dev/null
dd if=/tmp/gp of=/dev/vda bs=1M seek=10 conv=fsync 2>/dev/null
echo "vu-test: guestpat $(sha256sum </tmp/gp | cut -d" " -f1)"'
	vu_backend blk-qcow2 blk --socket "$SOCK" --disk "$TMP/disk.qcow2" || finish
	PID=$VU_PID
	# shellcheck disable=SC2086
	vu_qemu "$TMP/boot4.log" "$TMP/initrd4" $DEV
	vu_backend_stop "blk-qcow2 back end" "$PID"
	if qemu-img check -q "$TMP/disk.qcow2" >"$TMP/check.log" 2>&1; then pass "qcow2: qemu-img check is clean"
	else fail "qcow2: qemu-img check is clean" "$(head -3 "$TMP/check.log")"; fi
	qemu-img convert -O raw "$TMP/disk.qcow2" "$TMP/q.raw"
	GP=$(dd if="$TMP/q.raw" bs=1M skip=10 count=2 status=none | sha)
	check "qcow2: qemu-img reads the guest's pattern" \
		test -n "$GP" -a "$(vu_line "$TMP/boot4.log" guestpat)" = "$GP"
fi
finish
