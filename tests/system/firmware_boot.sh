#!/bin/bash
# firmware_boot.sh - `shoal run --disk IMAGE` with no --kernel boots the
# disk through Debian's SeaBIOS, as a PC does (docs/boot.md, "Firmware
# boot").  The disk is built here from source: a 512-byte MBR, assembled
# with binutils (as, ld), that prints a line on COM1 by writing port 0x3f8
# itself, reads sector 2 with BIOS int 13h (the BIOS's virtio-blk driver)
# and prints the marker it holds, then powers off through the ACPI PM1a
# control port.  Checked: both lines on Shoal's serial console, exit status
# 0 (powered off), SeaBIOS's debug port mirrored into the log (-v); the
# clear errors for a missing BIOS and for --firmware with --kernel; and,
# as a cross-check, the same image under QEMU prints the same lines.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] || { skip "firmware-boot" "build/shoal not built"; finish; }
command -v as >/dev/null && command -v ld >/dev/null ||
	{ skip "firmware-boot" "binutils (as, ld) are needed to build the boot sector"; finish; }

BIOS=/usr/share/seabios/bios-256k.bin
LINE1="shoal-mbr: boot sector runs"
LINE2="shoal-mbr: sector 2 says FIRMWARE-DISK-OK"

# The boot sector: loaded at 0:7c00 by the BIOS, DL = the boot drive.
cat >"$TMP/mbr.S" <<'EOF'
	.code16
	.text
	.globl _start
_start:
	ljmp	$0, $start
start:
	cli
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	$0x7c00, %sp
	sti
	movb	%dl, drive
	movw	$msg, %si
	call	puts
	movw	$0x0201, %ax		/* int 13h: read 1 sector */
	movw	$0x0002, %cx		/* cylinder 0, sector 2 */
	xorb	%dh, %dh		/* head 0 */
	movb	drive, %dl
	movw	$0x7e00, %bx		/* to 0:7e00 */
	int	$0x13
	jc	failed
	movw	$0x7e00, %si		/* sector 2 is a NUL-terminated line */
	call	puts
	jmp	off
failed:
	movw	$failmsg, %si
	call	puts
off:
	movw	$0x604, %dx		/* PM1a control */
	movw	$0x2000, %ax		/* SLP_EN, type 0: QEMU's S5 */
	outw	%ax, %dx
	movw	$0x3400, %ax		/* SLP_EN, type 5: Shoal's S5 (its DSDT) */
	outw	%ax, %dx
halt:
	cli
	hlt
	jmp	halt
puts:					/* the NUL-terminated string at DS:SI, with */
	pushfw				/* interrupts off: SeaBIOS's serial console */
	cli				/* flushes its own output from IRQ 0 */
3:	lodsb
	testb	%al, %al
	jz	2f
	movb	%al, %ah
	movw	$0x3fd, %dx		/* wait for THR empty */
1:	inb	%dx, %al
	testb	$0x20, %al
	jz	1b
	movb	%ah, %al
	movw	$0x3f8, %dx
	outb	%al, %dx
	jmp	3b
2:	popfw
	ret
drive:	.byte	0
msg:	.asciz	"shoal-mbr: boot sector runs\r\n"
failmsg: .asciz	"shoal-mbr: int 13h read FAILED\r\n"
	.org	510
	.byte	0x55, 0xaa
EOF
if ! as --32 -o "$TMP/mbr.o" "$TMP/mbr.S" 2>"$TMP/as.err" ||
   ! ld -m elf_i386 -Ttext=0x7c00 --oformat binary -o "$TMP/mbr.bin" "$TMP/mbr.o" 2>>"$TMP/as.err"; then
	fail "firmware-boot: boot sector assembles" "$(head -3 "$TMP/as.err")"
	finish
fi
[ "$(stat -c %s "$TMP/mbr.bin")" = 512 ] && pass "firmware-boot: boot sector is 512 bytes" ||
	{ fail "firmware-boot: boot sector is 512 bytes" "$(stat -c %s "$TMP/mbr.bin") bytes"; finish; }
IMG=$TMP/disk.img
cp "$TMP/mbr.bin" "$IMG"
printf '%s\r\n\0' "$LINE2" | dd of="$IMG" bs=512 seek=1 conv=sync 2>/dev/null
truncate -s 1M "$IMG"

# No KVM needed: the firmware file is checked before /dev/kvm is opened.
"$SHOAL" run --disk "$IMG" --firmware "$TMP/no-such-bios.bin" --console none 2>"$TMP/err"
rc=$?
[ $rc = 66 ] && grep -q "no-such-bios.bin: no such file (Debian's package seabios" "$TMP/err" &&
	pass "firmware-boot: a missing BIOS is status 66 naming the seabios package" ||
	fail "firmware-boot: a missing BIOS is status 66 naming the seabios package" "status $rc: $(cat "$TMP/err")"
"$SHOAL" run --disk "$IMG" --firmware "$TMP/mbr.bin" --console none 2>"$TMP/err"
rc=$?
[ $rc = 65 ] && grep -q "512 bytes is no BIOS image" "$TMP/err" &&
	pass "firmware-boot: a 512-byte file is not taken for a BIOS (65)" ||
	fail "firmware-boot: a 512-byte file is not taken for a BIOS (65)" "status $rc: $(cat "$TMP/err")"
"$SHOAL" run --disk "$IMG" --firmware "$BIOS" --kernel "$IMG" --console none 2>"$TMP/err"
rc=$?
[ $rc = 64 ] && grep -q "give one, not both" "$TMP/err" &&
	pass "firmware-boot: --firmware with --kernel is a usage error" ||
	fail "firmware-boot: --firmware with --kernel is a usage error" "status $rc: $(cat "$TMP/err")"
"$SHOAL" run --disk "$IMG" --print-config | grep -q "\"firmware\": \"$BIOS\"" &&
	pass "firmware-boot: --disk without --kernel means SeaBIOS" ||
	fail "firmware-boot: --disk without --kernel means SeaBIOS" "$("$SHOAL" run --disk "$IMG" --print-config 2>&1 | head -5)"

[ -f "$BIOS" ] || { skip "firmware-boot: boot" "$BIOS is missing (install Debian's seabios)"; finish; }
require_kvm "firmware-boot: boot"

timeout 120 "$SHOAL" run -v --disk "$IMG" --memory 128M --console "file:$TMP/console" \
	--timeout 60 </dev/null 2>"$TMP/stderr"
rc=$?
if [ $rc = 0 ] && grep -qF "$LINE1" "$TMP/console" && grep -qF "$LINE2" "$TMP/console"; then
	pass "firmware-boot: SeaBIOS boots the MBR, int 13h reads sector 2 from virtio-blk, power-off"
else
	fail "firmware-boot: SeaBIOS boots the MBR, int 13h reads sector 2 from virtio-blk, power-off" \
		"status $rc; console: $(tr -d '\r' <"$TMP/console" | tail -5 | tr '\n' '|'); log: $(grep firmware: "$TMP/stderr" | tail -8 | tr '\n' '|') $(grep -v firmware: "$TMP/stderr" | tail -8 | tr '\n' '|')"
fi
grep -q "firmware: SeaBIOS (version" "$TMP/stderr" &&
	pass "firmware-boot: the BIOS's debug port 0x402 is in the log" ||
	fail "firmware-boot: the BIOS's debug port 0x402 is in the log" "$(head -5 "$TMP/stderr")"
grep -q "firmware: Found QEMU fw_cfg" "$TMP/stderr" &&
	pass "firmware-boot: SeaBIOS finds fw_cfg" ||
	fail "firmware-boot: SeaBIOS finds fw_cfg" "$(grep firmware: "$TMP/stderr" | head -20 | tr '\n' '|')"

# Cross-check: the same image under QEMU prints the same lines.
if command -v qemu-system-x86_64 >/dev/null; then
	accel=tcg
	[ -c /dev/kvm ] && [ -w /dev/kvm ] && accel=kvm
	timeout 120 qemu-system-x86_64 -accel $accel -m 128 -nographic -no-reboot -nodefaults \
		-serial "file:$TMP/qemu.console" -monitor none \
		-drive "file=$IMG,if=virtio,format=raw" </dev/null >/dev/null 2>"$TMP/qemu.err"
	if grep -qF "$LINE1" "$TMP/qemu.console" && grep -qF "$LINE2" "$TMP/qemu.console"; then
		pass "firmware-boot: QEMU ($accel) prints the same lines from the same image"
	else
		fail "firmware-boot: QEMU ($accel) prints the same lines from the same image" \
			"$(tr -d '\r' <"$TMP/qemu.console" | tail -5 | tr '\n' '|') $(head -3 "$TMP/qemu.err")"
	fi
else
	skip "firmware-boot: QEMU cross-check" "qemu-system-x86_64 is not installed"
fi
finish
