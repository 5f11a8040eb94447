#!/bin/bash
# slow_linux_migrate.sh - Debian's Linux migrates live between two `shoal
# run` processes, its disk mirrored, while a TCP stream runs from the guest
# to the host (issue 12's "Linux in the box" test).
# tier: kvm
#
# In a network namespace of its own the script makes a bridge with the
# host's 10.0.2.1/24 and two TAPs on it, one for each VMM (one host, two
# processes: each opens its own TAP; the guest keeps its MAC, and the bridge
# learns its new port from the guest's next frame).  The guest (Debian's
# vmlinux, 1 vCPU, 256 MiB, busybox init) has a 32 MiB qcow2 disk:
#   - it writes 4 MiB of random bytes at the start of its disk;
#   - it sends random bytes to a host listener in 64 KiB pieces, and
#     writes each piece to its disk as well (from 4 MiB on), so both the
#     stream and the disk change while it migrates, until the host tells
#     it to stop (a TCP connection from the host, made after the move);
#   - the host migrates it (`shoal migrate --with-disks`) once the stream
#     runs, to a destination started with its own empty 32 MiB qcow2 image
#     and the second TAP;
#   - at the destination the guest finishes the stream, checks what it
#     reads back from its disk, and powers off.
# Checked: the migration ends with status 0 and the source exits 0; the
# guest's nc exits 0 (the connection lived through the move) and the host
# received every byte it sent, count and SHA-256 (no byte lost); after the
# power-off the destination's image is consistent (`qemu-img check`) and
# holds the 4 MiB and the whole stream where the guest wrote them.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
linux_in_netns "$@"
for t in ip cpio python3 qemu-img; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

MAC=52:54:00:5c:0a:19
PIECES=400            # at most, 25 MiB: the stream runs until the host says stop
SRC="" DST=""
cleanup_vms() {
	for p in $SRC $DST; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	linux_cleanup
}
trap cleanup_vms EXIT

if ! { ip link add br0 type bridge && ip addr add 10.0.2.1/24 dev br0 && ip link set br0 up &&
	ip link set lo up &&
	for t in shoaltap0 shoaltap1; do
		ip tuntap add dev $t mode tap && ip link set $t master br0 && ip link set $t up || exit 1
	done; } 2>"$TMP/net.err"; then
	fail "a bridge with two TAPs" "$(cat "$TMP/net.err")"
	finish
fi

"$SHOAL" img create -f qcow2 "$TMP/src.qcow2" 32M >/dev/null &&
	"$SHOAL" img create -f qcow2 "$TMP/dst.qcow2" 32M >/dev/null ||
	{ fail "the two qcow2 images" "shoal img create failed"; finish; }

linux_initrd "$TMP/initrd" '
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
dd if=/dev/urandom of=/tmp/d bs=64k count=64 2>/dev/null
dd if=/tmp/d of=/dev/vda bs=64k conv=notrunc,fsync 2>/dev/null
t "disk-head $(sha /tmp/d)"
(nc -l -p 5001 </dev/null >/tmp/stop) &
(i=0
 while [ ! -s /tmp/stop ] && [ $i -lt '$PIECES' ]; do
	dd if=/dev/urandom of=/tmp/p bs=64k count=1 2>/dev/null
	cat /tmp/p
	cat /tmp/p >>/tmp/out
	dd if=/tmp/p of=/dev/vda bs=64k seek=$((64 + i)) count=1 conv=notrunc 2>/dev/null
	i=$((i + 1))
 done
 echo $i >/tmp/n) | timeout 600 nc 10.0.2.1 5000 &
P=$!
sleep 1
t "streaming"
wait $P
t "nc-send $?"
t "sent $(wc -c </tmp/out) $(sha /tmp/out)"
t "stop $(cat /tmp/stop)"
sync
echo 3 >/proc/sys/vm/drop_caches
t "disk-back $(dd if=/dev/vda bs=64k count=64 2>/dev/null | sha) $(dd if=/dev/vda bs=64k skip=64 count=$(cat /tmp/n) 2>/dev/null | sha)"
poweroff'

hostside tcp-recv 10.0.2.1 5000 "$TMP/from-guest" >"$TMP/recv.out" 2>&1 &
RECV=$!
linux_listening 5000 || { fail "host listener on 10.0.2.1:5000" "$(cat "$TMP/recv.out")"; finish; }

linux_start src "$SHOAL_KIT_VMLINUX" "$TMP/initrd" --cpus 1 --memory 256M --net "tap=shoaltap0,mac=$MAC" \
	--disk "$TMP/src.qcow2" --api-socket "$TMP/src.sock"
SRC=$LINUX_PID
if ! linux_wait src streaming; then
	fail "the guest streams to the host" "$(linux_why src)"
	finish
fi
pass "the guest boots and streams to the host"

# The destination: the same VM, its own image and TAP, waiting.
: >"$TMP/dst.log"
"$SHOAL" run --kernel "$SHOAL_KIT_VMLINUX" --initrd "$TMP/initrd" --cpus 1 --memory 256M \
	--cmdline "$LINUX_CMDLINE" --console "file:$TMP/dst.log" --timeout $((LINUX_TIMEOUT + 60)) \
	--net "tap=shoaltap1,mac=$MAC" --disk "$TMP/dst.qcow2" --api-socket "$TMP/dst.sock" \
	--incoming "unix:$TMP/mig.sock" -v </dev/null >"$TMP/dst.vmm" 2>&1 &
DST=$!
linux_wait_file "$TMP/dst.vmm" "waiting on" 60 ||
	{ fail "the destination waits" "$(tail -2 "$TMP/dst.vmm")"; finish; }

"$SHOAL" migrate --socket "$TMP/src.sock" "unix:$TMP/mig.sock" --with-disks --output json \
	>"$TMP/mig.json" 2>"$TMP/mig.err"
rc=$?
if [ $rc = 0 ] && python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["state"] != "done")' \
	"$TMP/mig.json" 2>/dev/null; then
	pass "migrated while the stream ran (status 0, state done)"
	python3 -c 'import json,sys; j = json.load(open(sys.argv[1]))
print("note: %d rounds, %.1f ms down, %.0f ms in all, %d MiB sent, disk %d MiB" % (j["round"] + 1,
      j["downtime_ms"], j["total_ms"], j["bytes"] >> 20, (j.get("disk_bytes", 0) >> 20)))' "$TMP/mig.json"
else
	fail "migrated while the stream ran (status 0, state done)" "status $rc: $(tail -2 "$TMP/mig.err")"
fi

# The source stops once the destination has the VM.
LINUX_PID=$SRC
linux_wait_exit 60
SRC=""
linux_same "the source VMM exits 0 after the move" "$LINUX_RC" "0"
LINUX_PID=$DST
echo stop >"$TMP/stop"
if hostside tcp-send 10.0.2.15 5001 "$TMP/stop" >"$TMP/send.out" 2>&1; then
	pass "host -> guest: a new TCP connection to the guest at the destination"
else
	fail "host -> guest: a new TCP connection to the guest at the destination" "$(tail -1 "$TMP/send.out")"
fi
if linux_wait dst "disk-back"; then
	pass "the guest runs on at the destination"
else
	fail "the guest runs on at the destination" "$(linux_why dst)"
fi
linux_poweroff_ok dst
DST=""
wait $RECV

linux_same "TCP guest -> host across the move: the guest's nc exits 0" "$(linux_fact dst nc-send)" "0"
linux_same "TCP guest -> host across the move: bytes and SHA-256 the host received" \
	"$(wc -c <"$TMP/from-guest" 2>/dev/null) $(sha "$TMP/from-guest")" "$(linux_fact dst sent)"
linux_same "the guest got the host's stop" "$(linux_fact dst stop)" "stop"
linux_same "the guest reads back its disk at the destination" "$(linux_fact dst disk-back)" \
	"$(linux_fact src disk-head) $(sha "$TMP/from-guest")"
check "the destination's image is consistent (qemu-img check)" quiet qemu-img check "$TMP/dst.qcow2"
qemu-img convert -O raw "$TMP/dst.qcow2" "$TMP/dst.raw"
linux_same "the destination's image holds the disk head and the whole stream" \
	"$(head -c 4M "$TMP/dst.raw" | sha) $(tail -c +4194305 "$TMP/dst.raw" | head -c "$(wc -c <"$TMP/from-guest")" | sha)" \
	"$(linux_fact src disk-head) $(sha "$TMP/from-guest")"
finish
