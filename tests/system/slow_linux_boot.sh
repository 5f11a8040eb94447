#!/bin/bash
# slow_linux_boot.sh - boot Debian's own kernel under `shoal run`, through
# both entry points, far enough to check what Shoal told it.
# tier: kvm
#
#   bzImage  64-bit boot protocol (boot_params at the zero page)
#   vmlinux  PVH (hvm_start_info), the ELF extracted from the same bzImage
#
# Each boot runs with --cpus 2 --memory 256M, the kit's initrd and the
# console in a file, and is watched (bounded) until the kernel has printed:
#   - its version line ("Linux version 6.1...");
#   - "Command line: " followed by exactly the command line we passed;
#   - the e820 map it was given ("BIOS-provided physical RAM map:" and its
#     "BIOS-e820:" lines), compared with the map Shoal builds for 256 MiB
#     (src/boot/boot_e820.c): usable 0-0x9fbff, reserved 0x9fc00-0xfffff,
#     usable 0x100000-0xfffffff (Linux merges adjacent entries of one type);
#   - "RAMDISK: [mem A-B]", whose size must be the initrd's, page-rounded;
#   - "smpboot: Allowing 2 CPUs", i.e. the MADT listed both vCPUs.
# A third boot, vmlinux-deep, goes further: the vmlinux again, with
# --cpu-template minimal (no CX16) and "noxsave" on the command line, so that
# on the kvm_pvm machines Linux gets past the first two instructions their
# emulator lacks (cmpxchg16b, xrstor: CPUID cannot hide XSAVE there; see
# docs/linux-guests.md) and sets up interrupts.  It also checks:
#   - "..TIMER: vector=..." with no "MP-BIOS bug" or "timer doesn't work"
#     after it: Linux set up its IOAPIC from the MADT and routed the PIT to
#     the pin the MADT implies.  (It does not wait for ticks there: a guest
#     that sees KVM's signature sets no_timer_check, so this checks the
#     routing Linux chose, not that interrupts arrive.);
#   - "printk: console [ttyS0] enabled": the 8250 driver took the UART.
# Then the VMM is killed.  On the kvm_pvm development machines ring-0 code is
# emulated (about 1.5 M instructions/s), so this takes minutes and lives in
# the full suite only; the bzImage's decompressor is all ring 0 and takes
# most of it.  How far Linux gets after that is printed as a note (the last
# kernel line and, if the VMM stopped, its status and first error line).
#
# Skips: no /dev/kvm; the kit cannot be built (no network to a Debian
# mirror: scripts/guest-kit.sh exits 3).
#
# Knobs (environment), for investigating by hand:
#   SHOAL_LINUX_BOOT_TIMEOUT=420   seconds allowed per boot for the checks
#                                  (3 boots x 420 s stays under the 1800 s that
#                                  scripts/test.sh allows a script)
#   SHOAL_LINUX_BOOT_WATCH=0       seconds to keep watching after the checks
#                                  (how far does Linux get?)
#   SHOAL_LINUX_BOOT_TEMPLATE=     --cpu-template for every boot (host, baseline,
#                                  minimal); minimal hides CX16
#   SHOAL_LINUX_BOOT_KEEP=PREFIX   keep PREFIX.NAME.log (console), .vmm (stderr)
#   SHOAL_LINUX_BOOT_EXTRA=        words appended to the kernel command line
#   SHOAL_LINUX_BOOT_ONLY=         bzImage, vmlinux or vmlinux-deep: boot just that one
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

LIMIT=${SHOAL_LINUX_BOOT_TIMEOUT:-420}
WATCH=${SHOAL_LINUX_BOOT_WATCH:-0}
TEMPLATE=${SHOAL_LINUX_BOOT_TEMPLATE:-}
EXTRA=${SHOAL_LINUX_BOOT_EXTRA:-}
ONLY=${SHOAL_LINUX_BOOT_ONLY:-}
VMM_PID=""

# The map Shoal gives a 256 MiB guest, as Linux prints it (after merging).
EXPECT_E820="0x0000000000000000-0x000000000009fbff usable
0x000000000009fc00-0x00000000000fffff reserved
0x0000000000100000-0x000000000fffffff usable"

cleanup() {
	stop_vmm
	rm -rf "$TMP"
}
trap cleanup EXIT

# stop_vmm: end the VMM we started (by its pid), politely first.
stop_vmm() {
	[ -n "$VMM_PID" ] || return 0
	kill "$VMM_PID" 2>/dev/null
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		kill -0 "$VMM_PID" 2>/dev/null || break
		sleep 0.5
	done
	kill -9 "$VMM_PID" 2>/dev/null
	wait "$VMM_PID" 2>/dev/null
	VMM_PID=""
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# klines LOG: the log without printk timestamps and carriage returns.
klines() { sed -e 's/\r$//' -e 's/^\[ *[0-9]*\.[0-9]*\] //' "$1"; }

# e820_of LOG: the e820 map as "A-B type" lines, printed only once the line
# after the map has arrived (so a map still being written is not judged).
e820_of() {
	klines "$1" | awk '
		/BIOS-provided physical RAM map:/ { inmap = 1; next }
		inmap && /^BIOS-e820: \[mem / {
			r = $0; sub(/^BIOS-e820: \[mem /, "", r); sub(/\] /, " ", r)
			map = map r "\n"; next
		}
		inmap { printf "%s", map; exit }'
}

# ramdisk_ok LOG SIZE: the RAMDISK line covers SIZE rounded up to a page.
ramdisk_ok() {
	local line a b
	line=$(klines "$1" | grep -m1 '^RAMDISK: \[mem ') || return 1
	a=$(echo "$line" | sed 's/.*\[mem \(0x[0-9a-f]*\)-.*/\1/')
	b=$(echo "$line" | sed 's/.*-\(0x[0-9a-f]*\)\].*/\1/')
	[ $((b + 1 - a)) -eq $((($2 + 4095) / 4096 * 4096)) ]
}

# timer_done LOG: the line after "..TIMER:" has arrived (check_timer has
# finished waiting for ticks, one way or the other).
timer_done() { klines "$1" | grep -A1 '^\.\.TIMER: ' | sed -n 2p | grep -q .; }

# all_seen LOG DEEP: every line this test waits for is in the log.
all_seen() {
	local k
	k=$(klines "$1")
	grep -q '^Linux version 6\.' <<<"$k" && grep -q '^Command line: ' <<<"$k" &&
		[ -n "$(e820_of "$1")" ] && grep -q '^RAMDISK: ' <<<"$k" &&
		grep -q '^smpboot: Allowing ' <<<"$k" || return 1
	[ "$2" = 1 ] || return 0
	grep -q '^printk: console \[ttyS0\] enabled' <<<"$k" && timer_done "$1"
}

# boot NAME KERNEL TEMPLATE EXTRA DEEP: one boot, its checks and timings.
# TEMPLATE is a --cpu-template ("" for the default), EXTRA words for the
# command line, DEEP 1 to wait for and check the timer and console too.
boot() {
	local name=$1 kernel=$2 template=$3 extra=$4 deep=$5 log=$TMP/$1.log out=$TMP/$1.out
	local cmdline="console=ttyS0 earlyprintk=serial,ttyS0,115200 shoal.test=$1${extra:+ $extra}"
	local t0 t tv="" tc="" te="" tr="" ts="" td="" tt="" status="running" k map
	local args=(run --kernel "$kernel" --initrd "$SHOAL_KIT_INITRD" --cpus 2 --memory 256M
		--console "file:$log" --cmdline "$cmdline" --timeout $((LIMIT + WATCH + 60)))
	[ -n "$template" ] && args+=(--cpu-template "$template")
	: >"$log"
	t0=$(now)
	"$SHOAL" "${args[@]}" >"$out" 2>&1 </dev/null &
	VMM_PID=$!
	local deadline=$(($(date +%s) + LIMIT))
	# mark_times: note when each awaited line first shows up (1 s resolution).
	mark_times() {
		t=$(now)
		k=$(klines "$log")
		[ -z "$td" ] && grep -q 'Decompressing Linux' <<<"$k" && td=$(elapsed "$t0" "$t")
		[ -z "$tv" ] && grep -q '^Linux version ' <<<"$k" && tv=$(elapsed "$t0" "$t")
		[ -z "$tc" ] && grep -q '^Command line: ' <<<"$k" && tc=$(elapsed "$t0" "$t")
		[ -z "$te" ] && [ -n "$(e820_of "$log")" ] && te=$(elapsed "$t0" "$t")
		[ -z "$tr" ] && grep -q '^RAMDISK: ' <<<"$k" && tr=$(elapsed "$t0" "$t")
		[ -z "$ts" ] && grep -q '^smpboot: Allowing ' <<<"$k" && ts=$(elapsed "$t0" "$t")
		[ -z "$tt" ] && timer_done "$log" && tt=$(elapsed "$t0" "$t")
		return 0
	}
	while :; do
		mark_times
		all_seen "$log" "$deep" && break
		if ! kill -0 "$VMM_PID" 2>/dev/null; then
			wait "$VMM_PID"; status="exited with status $?"; VMM_PID=""; break
		fi
		[ "$(date +%s)" -ge "$deadline" ] && { status="still running after ${LIMIT}s"; break; }
		sleep 1
	done
	mark_times   # lines written just before the VMM exited

	k=$(klines "$log")
	local why
	why="$status; last kernel line: $(grep -v '^$' <<<"$k" | tail -1 | cut -c1-160)"
	local ver
	ver=$(grep -m1 '^Linux version ' <<<"$k" | cut -d' ' -f1-3)
	if grep -q '^Linux version 6\.1' <<<"$k"; then
		pass "$name: kernel version line \"$ver\" after ${tv}s"
	else
		fail "$name: kernel version line" "$why"
	fi
	local got
	got=$(grep -m1 '^Command line: ' <<<"$k" | sed 's/^Command line: //')
	if [ "$got" = "$cmdline" ]; then
		pass "$name: command line passed intact after ${tc}s"
	else
		fail "$name: command line" "expected \"$cmdline\", got \"$got\" ($why)"
	fi
	map=$(e820_of "$log")
	if [ "$map" = "$EXPECT_E820" ]; then
		pass "$name: e820 map is Shoal's map for 256 MiB after ${te}s"
	else
		fail "$name: e820 map" "expected [$(tr '\n' ' ' <<<"$EXPECT_E820")], got [$(tr '\n' ' ' <<<"$map")] ($why)"
	fi
	if ramdisk_ok "$log" "$(stat -c %s "$SHOAL_KIT_INITRD")"; then
		pass "$name: initrd found where Shoal put it, full size, after ${tr}s"
	else
		fail "$name: initrd" "$(grep -m1 '^RAMDISK' <<<"$k" || echo "no RAMDISK line") ($why)"
	fi
	if grep -q '^smpboot: Allowing 2 CPUs' <<<"$k"; then
		pass "$name: 2 CPUs found in the ACPI tables after ${ts}s"
	else
		fail "$name: 2 CPUs" "$(grep -m1 '^smpboot: Allowing' <<<"$k" || echo "no smpboot line") ($why)"
	fi

	if [ "$deep" = 1 ]; then
		local tl
		tl=$(grep -m1 '^\.\.TIMER: ' <<<"$k")
		if [ -z "$tl" ] || ! timer_done "$log"; then
			fail "$name: IOAPIC timer set-up" "no ..TIMER line and the one after it ($why)"
		elif grep -q -e 'MP-BIOS bug' -e "timer doesn't work" <<<"$k"; then
			fail "$name: IOAPIC timer set-up" "$(grep -m1 -e 'MP-BIOS bug' -e "timer doesn't work" <<<"$k")"
		else
			pass "$name: IOAPIC set up from the MADT, timer routed (\"$tl\") after ${tt}s"
		fi
		if grep -q '^printk: console \[ttyS0\] enabled' <<<"$k"; then
			pass "$name: 8250 console driver took ttyS0"
		else
			fail "$name: 8250 console on ttyS0" "$why"
		fi
	fi

	# How far does it get?  Keep watching if asked, then report.
	if [ -n "$VMM_PID" ] && [ "$WATCH" -gt 0 ]; then
		local until=$(($(date +%s) + WATCH))
		while kill -0 "$VMM_PID" 2>/dev/null && [ "$(date +%s)" -lt "$until" ]; do sleep 2; done
		if ! kill -0 "$VMM_PID" 2>/dev/null; then
			wait "$VMM_PID"; status="exited with status $?"; VMM_PID=""
		else
			status="still running after ${WATCH}s more"
		fi
	fi
	[ -n "$VMM_PID" ] && [ "$status" = running ] && status="killed once the checks were done"
	stop_vmm
	k=$(klines "$log")
	echo "note: $name: ${td:+decompressor line after ${td}s, }total $(elapsed "$t0" "$(now)")s, VMM $status"
	echo "note: $name: last kernel line: $(grep -v '^$' <<<"$k" | tail -1 | cut -c1-200)"
	local err
	err=$(grep -v '^$' "$out" | head -3 | tr '\n' ' ' | cut -c1-300)
	[ -n "$err" ] && echo "note: $name: VMM said: $err"
	if [ -n "${SHOAL_LINUX_BOOT_KEEP:-}" ]; then
		cp "$log" "$SHOAL_LINUX_BOOT_KEEP.$name.log"
		cp "$out" "$SHOAL_LINUX_BOOT_KEEP.$name.vmm"
	fi
}

if [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
	skip "linux boot" "/dev/kvm is not available"
	finish
fi
if [ ! -x "$SHOAL" ]; then
	fail "linux boot" "$SHOAL is not built (make)"
	finish
fi
kit=$("$ROOT/scripts/guest-kit.sh" --quiet 2>"$TMP/kit.err")
case $? in
0) eval "$kit" ;;
3) skip "linux boot" "guest kit unavailable: $(tail -1 "$TMP/kit.err")"; finish ;;
*) fail "guest kit builds" "$(tail -3 "$TMP/kit.err" | tr '\n' ' ')"; finish ;;
esac
echo "note: kit $SHOAL_KIT_PKG in $SHOAL_KIT_DIR"

want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
want bzImage && boot bzImage "$SHOAL_KIT_BZIMAGE" "$TEMPLATE" "$EXTRA" 0
want vmlinux && boot vmlinux "$SHOAL_KIT_VMLINUX" "$TEMPLATE" "$EXTRA" 0
# No CX16 (minimal template) and noxsave: past cmpxchg16b and xrstor on
# kvm_pvm, to the interrupt set-up.  A template given by hand wins.
want vmlinux-deep && boot vmlinux-deep "$SHOAL_KIT_VMLINUX" "${TEMPLATE:-minimal}" \
	"noxsave${EXTRA:+ $EXTRA}" 1
finish
