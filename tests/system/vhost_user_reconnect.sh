#!/bin/bash
# tests/system/vhost_user_reconnect.sh - the back end dies under a running
# guest and a new one takes its place: QEMU (`-chardev socket,...,
# reconnect=1`) reconnects, sets the device up again, and the guest's
# virtio_blk driver goes on without noticing.
#
#   guest: write pattern A (fsync), say "phase1", sleep, drop caches,
#          read A back, write pattern B (fsync), say "phase2"
#   host:  on "phase1", SIGKILL the back end (no clean shutdown), start a
#          new one on the same socket path; then check A and B in the image
#
# Then the same device through six `stop`/`cont` cycles of QEMU's monitor
# while the guest writes: each stops every ring (GET_VRING_BASE, with the
# model drained first) and starts it again where it stopped.
#
# SKIPs when the guest kit cannot be built or QEMU lacks the device.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vhost_user_lib.bash"

vu_require vhost-user-blk-pci
SOCK=$TMP/blk.sock
IMG=$TMP/disk.img
sha() { sha256sum | cut -d' ' -f1; }
truncate -s 32M "$IMG"

vu_initrd "$TMP/initrd" '
dd if=/dev/urandom of=/tmp/a bs=1M count=1 2>/dev/null
dd if=/tmp/a of=/dev/vda bs=1M seek=8 conv=fsync 2>/dev/null
echo "vu-test: a $(sha256sum </tmp/a | cut -d" " -f1)"
echo "vu-test: phase1"
sleep 8
echo 3 >/proc/sys/vm/drop_caches
echo "vu-test: a-again $(dd if=/dev/vda bs=1M skip=8 count=1 2>/dev/null | sha256sum | cut -d" " -f1)"
dd if=/dev/urandom of=/tmp/b bs=1M count=1 2>/dev/null
dd if=/tmp/b of=/dev/vda bs=1M seek=16 conv=fsync 2>/dev/null
echo "vu-test: b $(sha256sum </tmp/b | cut -d" " -f1)"
echo "vu-test: phase2"'

vu_backend blk1 blk --socket "$SOCK" --disk "$IMG" || finish
PID1=$VU_PID
L=$TMP/boot.log
vu_qemu "$L" "$TMP/initrd" -chardev "socket,id=c0,path=$SOCK,reconnect=1" \
	-device vhost-user-blk-pci,chardev=c0,queue-size=256 &
QPID=$!
for i in $(seq 600); do
	grep -q "^vu-test: phase1" "$L" 2>/dev/null && break
	kill -0 $QPID 2>/dev/null || break
	sleep 0.1
done
if grep -q "^vu-test: phase1" "$L" 2>/dev/null; then
	pass "guest wrote through the first back end"
	kill -KILL "$PID1"; wait "$PID1" 2>/dev/null
	vu_backend blk2 blk --socket "$SOCK" --disk "$IMG"
	PID2=$VU_PID
else
	fail "guest wrote through the first back end" "$(tail -3 "$L" "$L.qemu" 2>/dev/null | tr '\n' ' ')"
	kill -KILL "$PID1"
fi
wait $QPID; rc=$?
check "QEMU ran the guest to its end (status $rc)" test $rc -eq 0
check "QEMU reconnected to the new back end" grep -q "front end connected" "$TMP/blk2.log"
A=$(vu_line "$L" a)
check "guest reads pattern A back through the new back end" test -n "$A" -a "$(vu_line "$L" a-again)" = "$A"
check "pattern A is in the image" test "$(dd if="$IMG" bs=1M skip=8 count=1 status=none | sha)" = "$A"
B=$(vu_line "$L" b)
check "pattern B, written after the reconnect, is in the image" \
	test -n "$B" -a "$(dd if="$IMG" bs=1M skip=16 count=1 status=none | sha)" = "$B"
[ -n "${PID2:-}" ] && vu_backend_stop "second back end" "$PID2"

# ---- stop / cont under I/O ----
if ! command -v python3 >/dev/null; then skip "stop/cont" "no python3 to drive the monitor"; finish; fi
vu_initrd "$TMP/initrd-s" '
dd if=/dev/urandom of=/tmp/a bs=1M count=4 2>/dev/null
echo "vu-test: a $(sha256sum </tmp/a | cut -d" " -f1)"
echo "vu-test: loop"
i=0
while [ $i -lt 60 ]; do dd if=/tmp/a of=/dev/vda bs=1M seek=$((8 + (i % 3) * 4)) conv=fsync 2>/dev/null; i=$((i + 1)); done
echo 3 >/proc/sys/vm/drop_caches
for k in 0 1 2; do echo "vu-test: r$k $(dd if=/dev/vda bs=1M skip=$((8 + k * 4)) count=4 2>/dev/null | sha256sum | cut -d" " -f1)"; done'
vu_backend blk3 blk --socket "$SOCK" --disk "$IMG" -v || finish
PID3=$VU_PID
L=$TMP/pause.log
vu_qemu "$L" "$TMP/initrd-s" -chardev "socket,id=c0,path=$SOCK" -device vhost-user-blk-pci,chardev=c0,queue-size=256 \
	-monitor "unix:$TMP/mon.sock,server=on,wait=off" &
QPID=$!
for i in $(seq 600); do grep -q "^vu-test: loop" "$L" 2>/dev/null && break; sleep 0.1; done
python3 - "$TMP/mon.sock" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(2)
time.sleep(0.2)
for k in range(6):
    s.send(b"stop\n"); time.sleep(0.5)
    s.send(b"cont\n"); time.sleep(0.7)
PY
wait $QPID; rc=$?
check "stop/cont: guest ran to its end (qemu status $rc)" grep -q "^vu-test: done" "$L"
A=$(vu_line "$L" a)
check "stop/cont: every copy written under the cycles reads back intact" \
	test -n "$A" -a "$(vu_line "$L" r0)" = "$A" -a "$(vu_line "$L" r1)" = "$A" -a "$(vu_line "$L" r2)" = "$A"
N=$(grep -c "GET_VRING_BASE" "$TMP/blk3.log")
check "stop/cont: the rings were stopped and restarted ($N GET_VRING_BASE; 6 cycles were sent, the guest may finish before the last)" test "$N" -ge 2
vu_backend_stop "third back end" "$PID3"
finish
