#!/bin/bash
# img_lock.sh - image locking against the real QEMU (qemu-io, qemu-img,
# qemu-system-x86_64 7.2), both ways (block/lock.c, docs/block.md):
#  1. Shoal locks the same bytes as QEMU for a writer, a reader and a -U
#     reader (read from /proc/locks);
#  2. while qemu-io or a QEMU VM holds an image for writing, `shoal img io`
#     writes, `shoal vhost-user blk` and every reading verb without -U are
#     refused with QEMU's words and the file is unchanged; each reading
#     verb refuses or opens exactly when the matching qemu-img verb does;
#  3. while `shoal img io` (commands from a FIFO) or a `shoal vhost-user
#     blk` back end holds an image, qemu-io, qemu-img and qemu-system
#     refuse it; -U reads it; once Shoal exits, or is killed, QEMU gets it;
#  4. backing files: a writer of the base refuses overlays' opens, an
#     open overlay refuses writers of its base but not readers, nor a
#     second overlay of the same base.
# `shoal run` opens its disks after /dev/kvm, so its case SKIPs without KVM.
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] || { fail "build" "$SHOAL missing"; finish; }
for t in qemu-io qemu-img qemu-system-x86_64; do
	command -v $t >/dev/null || { skip "img_lock" "$t not installed"; finish; }
done
cd "$TMP" || exit 1
qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -c "write -P 0x11 0 1M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top2.qcow2
qemu-img create -q -f raw disk.raw 16M
HOLDERS=""
trap 'for p in $HOLDERS; do kill -9 $p 2>/dev/null; done; rm -rf "$TMP"' EXIT

# locks_of FILE: the lock bytes held on FILE by anybody, "100 101 ...".
locks_of() {
	local ino
	ino=$(stat -c %i "$1")
	awk -v ino=":$ino" 'substr($6, length($6) - length(ino) + 1) == ino && $2 != "->" {
		for (b = $7; b <= $8; b++) print b }' /proc/locks | sort -un | tr '\n' ' ' | sed 's/ $//'
}
# wait_locked FILE: until somebody holds byte 100 of FILE (10 s at most).
wait_locked() {
	local i
	for i in $(seq 200); do
		case " $(locks_of "$1") " in *" 100 "*) return 0 ;; esac
		sleep 0.05
	done
	return 1
}
# hold_qemu ARGS... FILE: qemu-io keeps FILE open (its -c sleep) until release.
hold_qemu() {
	qemu-io "$@" -c "sleep 600000" >/dev/null 2>"$TMP/holder.err" &
	HPID=$!
	HOLDERS="$HOLDERS $HPID"
	wait_locked "${@: -1}" || fail "qemu-io $* holds" "$(two_lines "$TMP/holder.err")"
}
# hold_vm DRIVE FILE: a stopped QEMU VM with -drive DRIVE holds FILE.
hold_vm() {
	qemu-system-x86_64 -S -display none -monitor none -serial none -nodefaults \
		-drive "$1" >/dev/null 2>"$TMP/holder.err" &
	HPID=$!
	HOLDERS="$HOLDERS $HPID"
	wait_locked "$2" || fail "QEMU VM holds $2" "$(two_lines "$TMP/holder.err")"
}
# hold_shoal ARGS... FILE: `shoal img io ARGS FILE` reads commands from a
# FIFO, holding FILE until release; `say CMD` sends it one.
hold_shoal() {
	rm -f cmds
	mkfifo cmds
	"$SHOAL" img io "$@" <cmds >holder.out 2>"$TMP/holder.err" &
	HPID=$!
	HOLDERS="$HOLDERS $HPID"
	exec 9>cmds
	wait_locked "${@: -1}" || fail "shoal img io $* holds" "$(two_lines "$TMP/holder.err")"
}
say() { echo "$*" >&9; }
# release: a QEMU holder is stopped; release_shoal: the Shoal holder reads
# the end of its commands and exits (closing, so flushing, the image).
release() {
	kill $HPID 2>/dev/null
	wait $HPID 2>/dev/null
}
release_shoal() {
	exec 9>&-
	wait $HPID || fail "shoal img io holder exits 0" "$(two_lines "$TMP/holder.err")"
}
# two_lines FILE: its first two lines as one, for a FAIL line.
two_lines() { head -2 "$1" | tr '\n' ' '; }
# refused NAME WHAT CMD...: CMD fails with a message naming WHAT (a lock
# refusal) and QEMU's question.
refused() {
	local n=$1 what=$2
	shift 2
	if "$@" >"$TMP/out" 2>&1; then
		fail "$n" "it succeeded: $(two_lines "$TMP/out")"
	elif grep -qF -- "$what" "$TMP/out" && grep -qi "another process using the image" "$TMP/out"; then
		pass "$n"
	else
		fail "$n" "$(two_lines "$TMP/out")"
	fi
}
# allowed NAME CMD...: CMD succeeds.
allowed() {
	local n=$1
	shift
	if "$@" >"$TMP/out" 2>&1; then pass "$n"; else fail "$n" "$(two_lines "$TMP/out")"; fi
}

# ---- 1. the same bytes as QEMU ----
same_bytes() {
	local n=$1 img=$2 qargs=$3 sargs=$4 q s
	hold_qemu $qargs "$img"; q=$(locks_of "$img"); release
	hold_shoal $sargs "$img"; s=$(locks_of "$img"); release_shoal
	[ -n "$q" ] && [ "$q" = "$s" ] && pass "$n: Shoal locks bytes $s as qemu-io does" ||
		fail "$n" "qemu-io locks '$q', Shoal '$s'"
}
same_bytes "qcow2 writer" base.qcow2 "" ""
same_bytes "qcow2 reader" base.qcow2 "-r" "-r"
same_bytes "qcow2 reader with -U" base.qcow2 "-r -U" "-r -U"
[ -z "$(locks_of base.qcow2)" ] && pass "every holder gone, no byte left" ||
	fail "no byte left" "$(locks_of base.qcow2)"

# ---- 2. QEMU holds, Shoal refuses ----
hold_qemu base.qcow2
SUM=$(md5sum <base.qcow2)
refused "qemu-io writes: shoal img io write refused" \
	'base.qcow2: Failed to get "write" lock' "$SHOAL" img io -c "write -P 0x55 0 64k" base.qcow2
refused "qemu-io writes: shoal img io -r refused" \
	'base.qcow2: Failed to get shared "write" lock' "$SHOAL" img io -r -c "read 0 4k" base.qcow2
"$SHOAL" img io -U -c "write 0 4k" base.qcow2 >"$TMP/out" 2>&1
[ $? -eq 64 ] && grep -q "force share (-U) is for read-only opens" "$TMP/out" &&
	pass "qemu-io writes: -U on a write is a usage error (64)" ||
	fail "qemu-io writes: -U on a write is a usage error" "$(two_lines "$TMP/out")"
allowed "qemu-io writes: shoal img io -r -U reads" \
	"$SHOAL" img io -r -U -c "read -P 0x11 0 1M" base.qcow2
[ "$(md5sum <base.qcow2)" = "$SUM" ] && pass "qemu-io writes: the file is unchanged" ||
	fail "qemu-io writes: the file is unchanged" "it changed"
release

# Each reading verb opens or refuses exactly when qemu-img's does, without
# and with -U, on qcow2 (metadata: refused) and raw (shared, but convert).
verdict() {	# verdict CMD...: "refused" or "opens"
	"$@" >"$TMP/v.out" 2>&1
	grep -q "Failed to get" "$TMP/v.out" && echo refused || echo opens
}
same_verdict() {
	local img=$1 fmt=$2 u=$3 v q s
	hold_qemu -f "$fmt" "$img"
	for v in info map check "compare $img $img" "convert -O raw $img out.raw"; do
		set -- $v
		[ $# -eq 1 ] && set -- "$1" "$img"
		q=$(verdict qemu-img "$1" $u -f "$fmt" "${@:2}")
		s=$(verdict "$SHOAL" img "$1" $u -f "$fmt" "${@:2}")
		[ "$q" = "$s" ] && pass "qemu-io writes $fmt: img $1 ${u:--}: $s, as qemu-img" ||
			fail "qemu-io writes $fmt: img $1 $u" "qemu-img $q, shoal $s: $(head -1 "$TMP/v.out")"
	done
	q=$(verdict qemu-io -r $u -f "$fmt" -c "read 0 4k" "$img")
	s=$(verdict "$SHOAL" img io -r $u -f "$fmt" -c "read 0 4k" "$img")
	[ "$q" = "$s" ] && pass "qemu-io writes $fmt: io -r ${u:--}: $s, as qemu-io -r" ||
		fail "qemu-io writes $fmt: io -r $u" "qemu-io $q, shoal $s"
	release
}
same_verdict base.qcow2 qcow2 ""
same_verdict base.qcow2 qcow2 -U
same_verdict disk.raw raw ""
same_verdict disk.raw raw -U

hold_qemu -f raw disk.raw
refused "qemu-io writes raw: shoal img io write refused" \
	'disk.raw: Failed to get shared "write" lock' "$SHOAL" img io -f raw -c "write 0 4k" disk.raw
release

# A QEMU VM (qemu-system, stopped with -S: no KVM needed) holding its disk.
hold_vm file=disk.raw,format=raw,if=virtio disk.raw
SUM=$(md5sum <disk.raw)
refused "QEMU VM: shoal img io write refused" \
	'disk.raw: Failed to get "write" lock' "$SHOAL" img io -c "write -P 0x55 0 64k" disk.raw
refused "QEMU VM: shoal vhost-user blk refused" 'disk.raw: Failed to get "write" lock' \
	timeout 10 "$SHOAL" vhost-user blk --socket "$TMP/vu.sock" --disk disk.raw
[ ! -S "$TMP/vu.sock" ] && pass "QEMU VM: the back end never listened" ||
	fail "QEMU VM: the back end never listened" "its socket exists"
if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
	refused "QEMU VM: shoal run --disk refused" 'disk.raw: Failed to get "write" lock' \
		timeout 20 "$SHOAL" run --kernel "$GUEST" --console none --disk disk.raw
else
	skip "QEMU VM: shoal run --disk refused" "shoal run opens its disks after /dev/kvm, which is missing here"
fi
[ "$(md5sum <disk.raw)" = "$SUM" ] && pass "QEMU VM: the file is unchanged" ||
	fail "QEMU VM: the file is unchanged" "it changed"
release
hold_vm file=base.qcow2,format=qcow2,if=virtio,readonly=on base.qcow2
refused "QEMU VM reads (readonly=on): shoal img io write refused" \
	'base.qcow2: Failed to get "write" lock' "$SHOAL" img io -c "write 0 4k" base.qcow2
allowed "QEMU VM reads: shoal img info reads along" "$SHOAL" img info base.qcow2
release

# ---- 3. Shoal holds, QEMU refuses ----
hold_shoal base.qcow2
SUM=$(md5sum <base.qcow2)
refused "shoal img io holds: qemu-io write refused" 'Failed to get "write" lock' \
	qemu-io -c "write -P 0x77 0 64k" base.qcow2
refused "shoal img io holds: qemu-img info refused" 'Failed to get shared "write" lock' \
	qemu-img info base.qcow2
refused "shoal img io holds: qemu-img convert refused" 'Failed to get shared "write" lock' \
	qemu-img convert -O raw base.qcow2 out.raw
refused "shoal img io holds: a QEMU VM refused" 'Failed to get "write" lock' \
	timeout 20 qemu-system-x86_64 -S -display none -monitor none -serial none -nodefaults \
	-drive file=base.qcow2,format=qcow2,if=virtio
allowed "shoal img io holds: qemu-img info -U reads" qemu-img info -U base.qcow2
allowed "shoal img io holds: qemu-io -r -U reads" qemu-io -r -U -c "read -P 0x11 0 1M" base.qcow2
[ "$(md5sum <base.qcow2)" = "$SUM" ] && pass "shoal img io holds: QEMU changed nothing" ||
	fail "shoal img io holds: QEMU changed nothing" "the file changed"
say "write -P 0x22 0 64k"
say "flush"
for i in $(seq 100); do grep -q flushed holder.out && break; sleep 0.05; done
release_shoal
allowed "Shoal done: qemu-io reads what it wrote and writes" \
	qemu-io -c "read -P 0x22 0 64k" -c "write -P 0x11 0 64k" base.qcow2

hold_shoal -r base.qcow2
refused "shoal img io -r holds: qemu-io write refused" 'Failed to get "write" lock' \
	qemu-io -c "write 0 4k" base.qcow2
allowed "shoal img io -r holds: qemu-io -r reads along" qemu-io -r -c "read 0 4k" base.qcow2
release_shoal

# A vhost-user blk back end (no KVM needed) serving the image on a socket.
"$SHOAL" vhost-user blk --socket "$TMP/vu.sock" --disk disk.raw >vu.log 2>&1 &
HPID=$!
HOLDERS="$HOLDERS $HPID"
wait_locked disk.raw || fail "vhost-user blk holds disk.raw" "$(two_lines vu.log)"
refused "vhost-user blk serves: qemu-io write refused" 'Failed to get "write" lock' \
	qemu-io -f raw -c "write 0 4k" disk.raw
refused "vhost-user blk serves: a QEMU VM refused" 'Failed to get "write" lock' \
	timeout 20 qemu-system-x86_64 -S -display none -monitor none -serial none -nodefaults \
	-drive file=disk.raw,format=raw,if=virtio
kill -KILL $HPID; wait $HPID 2>/dev/null	# killed: the kernel drops OFD locks
allowed "vhost-user blk killed: qemu-io writes" qemu-io -f raw -c "write 0 4k" disk.raw
[ -z "$(locks_of disk.raw)" ] && pass "killed holder: no byte left" ||
	fail "killed holder: no byte left" "$(locks_of disk.raw)"

# ---- 4. backing files ----
hold_qemu base.qcow2
refused "qemu-io writes the base: shoal img io write on the overlay refused" \
	'backing file base.qcow2: Failed to get shared "write" lock' \
	"$SHOAL" img io -c "write 0 4k" top.qcow2
refused "qemu-io writes the base: qemu-io -r on the overlay refused too" \
	'Failed to get shared "write" lock' qemu-io -r -c "read 0 4k" top.qcow2
refused "qemu-io writes the base: shoal img io -r on the overlay refused" \
	'Failed to get shared "write" lock' "$SHOAL" img io -r -c "read 0 4k" top.qcow2
allowed "qemu-io writes the base: shoal img io -r -U reads the overlay" \
	"$SHOAL" img io -r -U -c "read 0 4k" top.qcow2
release

hold_qemu top.qcow2
[ "$(locks_of base.qcow2)" = "100 201 203" ] && pass "qemu-io's overlay reads its base (100 201 203)" ||
	fail "qemu-io's base bytes" "$(locks_of base.qcow2)"
refused "qemu-io writes the overlay: shoal img io write on the base refused" \
	'base.qcow2: Failed to get "write" lock' "$SHOAL" img io -c "write 0 4k" base.qcow2
allowed "qemu-io writes the overlay: shoal img info reads the base" "$SHOAL" img info base.qcow2
allowed "qemu-io writes the overlay: shoal writes a second overlay of the base" \
	"$SHOAL" img io -c "write -P 0x44 0 4k" top2.qcow2
release

hold_shoal top.qcow2
[ "$(locks_of base.qcow2)" = "100 201 203" ] && pass "Shoal's overlay reads its base as QEMU's does" ||
	fail "Shoal's base bytes" "$(locks_of base.qcow2)"
refused "shoal writes the overlay: qemu-io write on the base refused" \
	'Failed to get "write" lock' qemu-io -c "write 0 4k" base.qcow2
allowed "shoal writes the overlay: qemu-img info reads the base" qemu-img info base.qcow2
allowed "shoal writes the overlay: qemu-io writes a second overlay of the base" \
	qemu-io -c "write -P 0x45 0 4k" top2.qcow2
release_shoal
allowed "Shoal done: the base writable again" qemu-io -c "write 0 4k" base.qcow2

finish
