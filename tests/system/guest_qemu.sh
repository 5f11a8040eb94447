#!/bin/bash
# guest_qemu.sh - the test guest under QEMU (microvm and pc) as well as under
# Shoal: the same commands give the same reports, so neither the guest nor
# the VMM can hide a bug behind a matching bug in the other.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

QEMU=$(command -v qemu-system-x86_64 || true)
[ -n "$QEMU" ] || { skip "guest under QEMU" "qemu-system-x86_64 is not installed"; finish; }
[ -r /dev/kvm ] || { skip "guest under QEMU" "/dev/kvm is not available"; finish; }

CMD="info; fill 0x1000000 16M 77; verify 0x1000000 16M 77; allcpus verify 0x1000000 16M 77; exit 3"

qemu_run() {  # MACHINE SMP LOG
	timeout 120 "$QEMU" -accel kvm -M "$1" -display none -nodefaults -no-user-config \
		-serial "file:$3" -device isa-debug-exit,iobase=0xf4,iosize=1 \
		-kernel "$GUEST" -append "$CMD" -smp "$2" -m 256 </dev/null
}

qemu_run microvm 2 "$TMP/qemu.log"; rc=$?
# isa-debug-exit: QEMU exits with (code << 1) | 1
[ $rc -eq 7 ] && pass "QEMU microvm: guest exit 3 -> QEMU status 7" || fail "QEMU microvm exit" "rc=$rc $(tail -3 "$TMP/qemu.log")"
grep -q "shoal-guest: ready cpus=2" "$TMP/qemu.log" && pass "QEMU microvm: both vCPUs up" || fail "QEMU microvm SMP" "$(head -3 "$TMP/qemu.log")"

"$SHOAL" run --kernel "$GUEST" --cpus 2 --memory 256M --cmdline "$CMD" --console "file:$TMP/shoal.log" --timeout 120 </dev/null; rc=$?
[ $rc -eq 3 ] && pass "Shoal: guest exit 3" || fail "Shoal exit" "rc=$rc"

sum() { grep -o 'fill addr=[^ ]* len=[^ ]* seed=[^ ]* sum=0x[0-9a-f]*' "$1" | head -1; }
qs=$(sum "$TMP/qemu.log"); ss=$(sum "$TMP/shoal.log")
[ -n "$qs" ] && [ "$qs" = "$ss" ] && pass "same pattern checksum under QEMU and Shoal ($ss)" || fail "checksums" "qemu='$qs' shoal='$ss'"
grep -q "verify bad" "$TMP/qemu.log" "$TMP/shoal.log" && fail "verify" "a verify failed" || pass "verify ok on every vCPU under both"

qmem=$(grep -o 'ready cpus=[0-9]* mem=[0-9]*' "$TMP/qemu.log" | head -1)
[ -n "$qmem" ] && pass "QEMU microvm: guest reports memory ($qmem)" || fail "QEMU mem"

CMD="info; exit 0"
qemu_run pc 1 "$TMP/qemu-pc.log"; rc=$?
[ $rc -eq 1 ] && grep -q "shoal-guest: ready cpus=1" "$TMP/qemu-pc.log" && pass "QEMU pc (SeaBIOS): guest boots and exits" \
	|| fail "QEMU pc" "rc=$rc $(tail -3 "$TMP/qemu-pc.log")"
finish
