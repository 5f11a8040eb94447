#!/bin/bash
# slow_linux_snapshot.sh - snapshots of a running Linux (docs/snapshots.md),
# restored, and cloned twice at once.
# tier: kvm
#
# Debian's bzImage (the guest kit, 1 vCPU, 256 MiB, busybox init) with a
# raw disk, virtio-rng and virtio-vsock.  The guest makes ext2 on the disk,
# writes a file `before`, starts a vsock echo server on port 6000, and a
# counter that every 200 ms appends its next number to /log on the disk and
# prints "tick N" on the console (a sync every 10 ticks, so disk writes are
# in flight at any moment).  Then:
#   - a full snapshot S1 and a live one S2 (--live) are taken while it
#     counts; the source goes on counting, and `poweroff` typed on its
#     console ends it with status 0;
#   - R1, a plain --restore of S1; then C1 and C2, two --clone restores of
#     S2 running at the same time (C2 is first refused while C1 holds the
#     snapshot's vsock socket, then runs with --vsock-socket of its own).
#     For each restored VM:
#       - its counter goes on from the snapshot's value (its first tick is
#         after the last tick the source printed before the snapshot, not
#         1), tick after tick (timers and the serial port's interrupts work);
#       - the host connects to its vsock socket, and the guest's echo server,
#         listening since before the snapshot, echoes 16 KiB.  The server
#         ignores SIGALRM: vsock_echo ends itself 60 s after it starts
#         (alarm), and in a slow KVM box the guest's clock passes that
#         before the last clone connects; Linux then answers the device's
#         REQUEST with RST and the host gets no "OK";
#       - a command typed on its console is answered (6 * 7 computed), the
#         guest reads 64 bytes of /dev/hwrng (virtio-rng), stops the
#         counter, unmounts and mounts the disk again, reads `before` with
#         its checksum, writes 64 KiB more, and `poweroff` ends the VMM with
#         status 0;
#       - its disk overlay (`qemu-img check` clean) holds an ext2 file system
#         that e2fsck -fn finds clean, whose /log is exactly 1, 2, ..., N
#         (nothing lost, nothing twice across the snapshot) and whose new
#         file has the guest's checksum.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
for t in cpio python3 qemu-img e2fsck debugfs; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

declare -A PID=()
# Every VMM this script starts is ended (by pid) on the way out.
snap_cleanup() {
	local p
	for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	linux_cleanup
}
trap snap_cleanup EXIT

DISK=$TMP/disk.raw
VS=$TMP/v.sock
"$SHOAL" img create -f raw "$DISK" 16M >/dev/null || { fail "shoal img create raw"; finish; }
head -c 16384 /dev/urandom >"$TMP/vsock.dat"

# After a restore, typed on the console: `sh /test/chk NAME`.
cat >"$TMP/chk" <<'EOF'
#!/bin/sh
t() { echo "linux-test: $*"; }
sha() { sha256sum "$@" | cut -c1-64; }
t "answer-$1 $((6 * 7))"
t "hwrng-$1 $(timeout 20 head -c 64 /dev/hwrng | wc -c)"
kill "$(cat /tmp/counter.pid)"
sleep 0.5
cd /
if umount /mnt/d; then t "umount-$1 ok"; else t "umount-$1 failed"; fi
if mount -t ext2 /dev/vda /mnt/d; then t "mount-$1 ok"; else t "mount-$1 failed"; fi
t "before-$1 $(sha /mnt/d/before)"
t "last-$1 $(tail -n 1 /mnt/d/log)"
head -c 65536 /dev/urandom >/mnt/d/after
sync
t "after-$1 $(sha /mnt/d/after)"
EOF

linux_initrd "$TMP/initrd" '
mke2fs -F /dev/vda >/tmp/mke2fs 2>&1 || t "mke2fs failed: $(tail -1 /tmp/mke2fs)"
mkdir -p /mnt/d
mount -t ext2 /dev/vda /mnt/d || t "mount failed"
head -c 65536 /dev/urandom >/mnt/d/before
sync
t "before $(sha /mnt/d/before)"
(trap "" ALRM; exec /test/vsock_echo serve 6000) >/tmp/vs 2>&1 &
(
	n=0
	while :; do
		n=$((n + 1))
		echo $n >>/mnt/d/log
		echo "tick $n"
		[ $((n % 10)) = 0 ] && sync
		sleep 0.2
	done
) &
echo $! >/tmp/counter.pid
t "counting"' "$TMP/chk" "$LINUX_BINS/vsock_echo"

# ticks NAME: the counter values on NAME's console, whole lines only.
ticks() { tr -d '\r' <"$TMP/$1.log" | sed -n 's/^tick \([0-9][0-9]*\)$/\1/p'; }
# wait_ticks NAME N: wait (bounded) until NAME's console shows N ticks.
wait_ticks() {
	local end=$((SECONDS + 120))
	while [ $SECONDS -lt $end ]; do
		[ "$(ticks "$1" | wc -l)" -ge "$2" ] && return 0
		kill -0 "${PID[$1]}" 2>/dev/null || return 1
		sleep 0.2
	done
	return 1
}
# wait_text NAME TEXT: wait (bounded) for "linux-test: TEXT" on NAME's console.
wait_text() {
	local rc
	LINUX_PID=${PID[$1]}
	linux_wait "$1" "$2" 120
	rc=$?
	LINUX_PID=""
	return $rc
}
# vmm_exit NAME: wait (bounded) for NAME's VMM to end; its status in LINUX_RC.
vmm_exit() {
	LINUX_PID=${PID[$1]}
	linux_wait_exit 120
	unset "PID[$1]"
	[ "$LINUX_RC" = 0 ]
}
say() { hostside type "$TMP/$1.sock" "$2\\r" >/dev/null; }

# --- the source ---
linux_start src "$SHOAL_KIT_BZIMAGE" "$TMP/initrd" --cpus 1 --memory 256M --disk "$DISK" --rng \
	--vsock "cid=5,socket=$VS" --api-socket "$TMP/src.sock"
PID[src]=$LINUX_PID
LINUX_PID=""
if wait_text src counting && wait_ticks src 10; then
	pass "source: Linux made ext2 on its disk and counts"
else
	fail "source: Linux made ext2 on its disk and counts" "$(linux_why src)"
	finish
fi
BEFORE=$(linux_fact src before)

# snap NAME DIR [--live]: a snapshot of the source; MAXTICK[NAME] is the
# last tick its console showed when the command returned.
declare -A MAXTICK=()
snap() {
	local name=$1 dir=$2
	shift 2
	if "$SHOAL" snapshot create --socket "$TMP/src.sock" "$dir" "$@" >"$TMP/$name.out" 2>&1; then
		pass "snapshot $name ($*) of the counting Linux: $(tr '\n' ' ' <"$TMP/$name.out" | cut -c1-120)"
	else
		fail "snapshot $name ($*) of the counting Linux" "$(tr '\n' ' ' <"$TMP/$name.out" | cut -c1-300)"
	fi
	MAXTICK[$name]=$(ticks src | tail -1)
}
snap s1 "$TMP/s1"
n=$(ticks src | wc -l)
wait_ticks src $((n + 5)) || fail "source: counts on after the full snapshot" "$(linux_why src)"
snap s2 "$TMP/s2" --live
n=$(ticks src | wc -l)
if wait_ticks src $((n + 5)); then
	pass "source: counts on after both snapshots"
else
	fail "source: counts on after both snapshots" "$(linux_why src)"
fi
say src poweroff
if vmm_exit src && grep -q 'reboot: Power down' "$TMP/src.log"; then
	pass "source: \`poweroff\` typed on its console ends it with status 0"
else
	fail "source: \`poweroff\` typed on its console ends it with status 0" "$(linux_why src)"
fi

# restore NAME SNAPDIR ARG...: `shoal run --restore` in the background,
# overlays in $TMP/NAME.ovl; status 0 once its control socket is there.
restore() {
	local name=$1 dir=$2 end=$((SECONDS + 60))
	shift 2
	mkdir -p "$TMP/$name.ovl"
	: >"$TMP/$name.log"
	"$SHOAL" run --restore "$dir" "$@" --disk-overlay-dir "$TMP/$name.ovl" \
		--console "file:$TMP/$name.log" --api-socket "$TMP/$name.sock" \
		--timeout 300 </dev/null >"$TMP/$name.vmm" 2>&1 &
	PID[$name]=$!
	while [ $SECONDS -lt $end ] && [ ! -S "$TMP/$name.sock" ]; do
		kill -0 "${PID[$name]}" 2>/dev/null || return 1
		sleep 0.1
	done
	[ -S "$TMP/$name.sock" ]
}

# running NAME SNAP SOCK: the checks while NAME runs (ticks, vsock).
running() {
	local name=$1 snap=$2 sock=$3 t first
	if ! wait_ticks "$name" 3; then
		fail "$name: the restored Linux counts" "$(LINUX_RC=running linux_why "$name")"
		return
	fi
	first=$(ticks "$name" | head -1)
	if [ "$first" -gt 10 ] && [ "$first" -le $((MAXTICK[$snap] + 2)) ]; then
		pass "$name: the counter goes on from the snapshot's value (first tick $first; the source had printed ${MAXTICK[$snap]} by the end of $snap)"
	else
		fail "$name: the counter goes on from the snapshot's value" "first tick $first, source at ${MAXTICK[$snap]}"
	fi
	t=$(ticks "$name" | head -3 | tr '\n' ' ')
	linux_same "$name: tick after tick" "$t" "$(seq "$first" $((first + 2)) | tr '\n' ' ')"
	if hostside vsock-connect "$sock" 6000 "$TMP/vsock.dat" >"$TMP/$name.vsock" 2>&1 &&
		grep -q ', match$' "$TMP/$name.vsock"; then
		pass "$name: vsock: the guest's echo server, listening since before the snapshot, echoes 16 KiB"
	else
		fail "$name: vsock echo through $sock" "$(tail -1 "$TMP/$name.vsock")"
	fi
}

# chk NAME: type the checks on NAME's console (finished judges them).
chk() { say "$1" "sh /test/chk $1"; }

# finished NAME: the console checks, then poweroff and the disk.
finished() {
	local name=$1 ovl flat=$TMP/$1.flat last
	if ! wait_text "$name" "after-$name"; then
		fail "$name: the guest ran its checks" "$(LINUX_RC=running linux_why "$name")"
	fi
	linux_same "$name: a command typed on its console is answered" "$(linux_fact "$name" "answer-$name")" 42
	linux_same "$name: /dev/hwrng (virtio-rng) gives 64 bytes" "$(linux_fact "$name" "hwrng-$name")" 64
	linux_same "$name: the disk unmounts and mounts again" \
		"$(linux_fact "$name" "umount-$name") $(linux_fact "$name" "mount-$name")" "ok ok"
	linux_same "$name: the file written before the snapshot reads back" \
		"$(linux_fact "$name" "before-$name")" "$BEFORE"
	say "$name" poweroff
	if vmm_exit "$name" && grep -q 'reboot: Power down' "$TMP/$name.log"; then
		pass "$name: \`poweroff\` ends the restored VM with status 0"
	else
		fail "$name: \`poweroff\` ends the restored VM with status 0" "$(linux_why "$name")"
	fi
	ovl=$(find "$TMP/$name.ovl" -name '*.qcow2' | head -1)
	if [ -n "$ovl" ] && qemu-img check -q "$ovl" >"$TMP/$name.check" 2>&1; then
		pass "$name: qemu-img check finds its overlay clean"
	else
		fail "$name: qemu-img check finds its overlay clean" "${ovl:-no overlay}: $(head -c 200 "$TMP/$name.check")"
		return
	fi
	qemu-img convert -U -O raw "$ovl" "$flat"
	if e2fsck -fn "$flat" >"$TMP/$name.fsck" 2>&1; then
		pass "$name: e2fsck finds the file system clean"
	else
		fail "$name: e2fsck finds the file system clean" "$(grep -v '^Pass\|^$' "$TMP/$name.fsck" | head -3 | tr '\n' ' ')"
	fi
	last=$(linux_fact "$name" "last-$name")
	debugfs -R "cat /log" "$flat" 2>/dev/null >"$TMP/$name.disklog"
	if [ -n "$last" ] && [ "$last" -gt "$(ticks "$name" | head -1)" ] &&
		cmp -s "$TMP/$name.disklog" <(seq 1 "$last"); then
		pass "$name: /log on its disk is 1 to $last, nothing lost or doubled across the snapshot"
	else
		fail "$name: /log on its disk is 1 to the last tick" "last '$last'; $(wc -l <"$TMP/$name.disklog") lines, $(seq 1 "${last:-0}" | diff - "$TMP/$name.disklog" | head -4 | tr '\n' ' ')"
	fi
	linux_same "$name: the file written after the restore, read by debugfs" \
		"$(debugfs -R "cat /after" "$flat" 2>/dev/null | sha256sum | cut -c1-64)" "$(linux_fact "$name" "after-$name")"
	rm -f "$flat"
}

# --- R1: a plain restore of the full snapshot ---
if restore r1 "$TMP/s1"; then
	running r1 s1 "$VS"
	chk r1
	finished r1
else
	fail "r1: shoal run --restore s1 starts" "$(head -c 300 "$TMP/r1.vmm")"
fi
rm -rf "$TMP/s1"

# --- C1 and C2: two clones of the live snapshot at once ---
if restore c1 "$TMP/s2" --clone; then
	pass "c1: a clone of the live snapshot starts"
else
	fail "c1: a clone of the live snapshot starts" "$(head -c 300 "$TMP/c1.vmm")"
fi
"$SHOAL" run --restore "$TMP/s2" --clone --console none </dev/null >"$TMP/c2-refused.vmm" 2>&1
rc=$?
if [ $rc = 64 ] && grep -qF "the snapshot's vsock socket $VS is in use by another VM; give this clone its own with --vsock-socket PATH" "$TMP/c2-refused.vmm"; then
	pass "a second clone on c1's vsock socket is refused (64), naming it"
else
	fail "a second clone on c1's vsock socket is refused (64), naming it" "status $rc: $(head -c 300 "$TMP/c2-refused.vmm")"
fi
if restore c2 "$TMP/s2" --clone --vsock-socket "$TMP/c2-v.sock"; then
	pass "c2: a second clone with --vsock-socket of its own starts beside c1"
else
	fail "c2: a second clone with --vsock-socket of its own starts beside c1" "$(head -c 300 "$TMP/c2.vmm")"
fi
running c1 s2 "$VS"
running c2 s2 "$TMP/c2-v.sock"
if kill -0 "${PID[c1]:-0}" 2>/dev/null && kill -0 "${PID[c2]:-0}" 2>/dev/null; then
	pass "c1 and c2 run at the same time"
else
	fail "c1 and c2 run at the same time" "c1: $(LINUX_RC=ended linux_why c1); c2: $(LINUX_RC=ended linux_why c2)"
fi
chk c1
chk c2
finished c1
finished c2
finish
