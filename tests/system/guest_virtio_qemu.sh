#!/bin/bash
# guest_virtio_qemu.sh - the test guest's virtio drivers against QEMU's own
# virtio PCI devices, so that Shoal's devices can later be checked against
# drivers that were proven on someone else's devices (and the other way
# round): a driver bug cannot hide behind a matching device bug.
#
# Machines: QEMU microvm,pcie=on (no firmware: the guest finds ECAM in the
# DSDT and assigns BARs itself; no I/O window, so modern interface only)
# and q35 (SeaBIOS assigns BARs; both interfaces of transitional devices).
# Devices: virtio-blk over temp raw files, virtio-net on QEMU's user-mode
# network (slirp; no privileges: the guest ARPs and pings 10.0.2.2),
# virtio-rng, virtio-serial + virtconsole on FIFOs.  The guest's reports
# are checked, and the host checks the disk files: the pattern the guest
# wrote, and zeros where it asked for write-zeroes.
#
# Guest exit: the command list ends without `exit`, so a run where every
# command passed powers off (QEMU status 0, or 1 through port 0xf4) and a
# run with a failed command exits 1 (QEMU status 3).
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

QEMU=$(command -v qemu-system-x86_64 || true)
[ -n "$QEMU" ] || { skip "guest virtio under QEMU" "qemu-system-x86_64 is not installed"; finish; }
[ -r /dev/kvm ] || { skip "guest virtio under QEMU" "/dev/kvm is not available"; finish; }
[ -x "$GUEST" ] || { fail "guest virtio under QEMU" "$GUEST is not built"; finish; }

# qemu_virtio MACHINE LOG CMDLINE QEMU-ARGS...: run the guest, status in $rc.
qemu_virtio() {
	local machine=$1 log=$2 cmd=$3
	shift 3
	timeout 150 "$QEMU" -accel kvm -M "$machine" -display none -nodefaults -no-user-config \
		-serial "file:$log" -device isa-debug-exit,iobase=0xf4,iosize=1 \
		-kernel "$GUEST" -append "$cmd" -m 256 "$@" </dev/null 2>"$log.err"
	rc=$?
}

ok_run() {  # NAME LOG: the run ended with every command passing
	if [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ]; then pass "$1"
	else fail "$1" "QEMU status $rc; $(grep -h 'error\|fatal\|bad' "$2" "$2.err" | head -3 | tr '\n' ' ')"; fi
}

has() {  # NAME LOG REGEX: a report line matches
	if grep -Eq "^shoal-guest: $3" "$2"; then pass "$1"; else fail "$1" "no '$3' in $(basename "$2")"; fi
}

# The vblk pattern: sector s is "shoal vblk seed=SEED sector=s", '.'-padded
# to 511 bytes, then '\n' (see guest/virtio_blk.c).
vblk_expected() {  # SEED SECTORS OUT
	local s line dots
	dots=$(printf '%511s' '' | tr ' ' '.')
	: >"$3"
	for ((s = 0; s < $2; s++)); do
		line="shoal vblk seed=$1 sector=$s"
		printf '%s%s\n' "$line" "${dots:${#line}}" >>"$3"
	done
}

disk_check() {  # NAME IMAGE SEED SECTORS ZEROED
	local exp=$TMP/expected.$3
	vblk_expected "$3" "$4" "$exp"
	if cmp -s -n $(($4 * 512)) "$exp" "$2"; then pass "$1: host reads the guest's pattern"
	else fail "$1: host reads the guest's pattern" "$(cmp -n $(($4 * 512)) "$exp" "$2" 2>&1 | head -1)"; fi
	if [ "$5" = 1 ]; then
		if cmp -s -n 4096 -i $(($4 * 512)):0 "$2" /dev/zero; then pass "$1: write-zeroes left zeros on the host"
		else fail "$1: write-zeroes left zeros on the host" "sectors $4..$(($4 + 7)) not zero"; fi
	fi
}

# Console FIFOs: QEMU's pipe chardev opens PATH.in and PATH.out.
vcon_start() {
	rm -f "$TMP/vc.in" "$TMP/vc.out"
	mkfifo "$TMP/vc.in" "$TMP/vc.out"
	cat "$TMP/vc.out" >"$TMP/vcon.out" & VC_READER=$!
	printf 'ping from host\n' >"$TMP/vc.in" & VC_WRITER=$!
}
vcon_stop() {  # the reader ends at EOF once QEMU is gone; never wait forever
	local i
	kill "$VC_WRITER" 2>/dev/null
	for ((i = 0; i < 20; i++)); do kill -0 "$VC_READER" 2>/dev/null || break; sleep 0.1; done
	kill "$VC_READER" 2>/dev/null
	wait "$VC_READER" "$VC_WRITER" 2>/dev/null
}

NET=(-netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0)
RNG=(-device virtio-rng-pci)
CON=(-device virtio-serial-pci -chardev "pipe,id=c0,path=$TMP/vc" -device virtconsole,chardev=c0)
TESTS="vdevs; vblk 64 21; vnet; vrng 4096; vcon hello from guest"

# ---- microvm,pcie=on: modern interface, BARs assigned by the guest ----
truncate -s 16M "$TMP/m.img"
vcon_start
qemu_virtio microvm,pcie=on "$TMP/m.log" "$TESTS" \
	-drive "file=$TMP/m.img,if=none,id=d0,format=raw" \
	-device virtio-blk-pci,drive=d0,serial=shoal-m0 "${NET[@]}" "${RNG[@]}" "${CON[@]}"
vcon_stop
ok_run "microvm: every virtio command passes" "$TMP/m.log"
has "microvm: ECAM found without MCFG, 4 devices" "$TMP/m.log" "vdevs n=4 .*access=ecam ecam=0xe0000000"
has "microvm: guest assigned BARs in the 32-bit window" "$TMP/m.log" "vdev .*type=blk .*bar4=mem:0xc[0-9a-f]*\+0x4000\*"
has "microvm: transitional device shows no usable legacy interface" "$TMP/m.log" "vdev .*type=blk legacy=0 modern=1"
has "microvm: vblk modern" "$TMP/m.log" "vblk ok mode=modern capacity=32768 serial=shoal-m0 ro=0 sectors=64 seed=21 indirect=1 event_idx=1 flush=1 write_zeroes=1"
has "microvm: vnet modern (ARP + ping through slirp)" "$TMP/m.log" "vnet ok mode=modern mac=52:54:00:12:34:56 gw_mac=52:55:0a:00:02:02 arp=1 ping=1"
has "microvm: vrng modern" "$TMP/m.log" "vrng ok bytes=4096 mode=modern"
has "microvm: vcon modern, host input read" "$TMP/m.log" "vcon ok mode=modern wrote=17 read=15 text=ping_from_host"
grep -qx "hello from guest" "$TMP/vcon.out" && pass "microvm: vcon line reached the host" \
	|| fail "microvm: vcon line reached the host" "got '$(head -c 80 "$TMP/vcon.out")'"
disk_check "microvm vblk" "$TMP/m.img" 21 64 1

# Packed virtqueues (VIRTIO_F_RING_PACKED, modern only), same commands.
truncate -s 16M "$TMP/p.img" "$TMP/pb.img"
vcon_start
qemu_virtio microvm,pcie=on "$TMP/p.log" "virtio-ring packed; vblk 64 44; vnet; vrng 4096; vcon packed; vblk-bench 20 dev=1" \
	-drive "file=$TMP/p.img,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0,packed=on \
	-drive "file=$TMP/pb.img,if=none,id=d1,format=raw" -device virtio-blk-pci,drive=d1,packed=on \
	-netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0,packed=on \
	-device virtio-rng-pci,packed=on -device virtio-serial-pci,packed=on \
	-chardev "pipe,id=c0,path=$TMP/vc" -device virtconsole,chardev=c0
vcon_stop
ok_run "microvm packed: every virtio command passes" "$TMP/p.log"
has "microvm packed: vblk" "$TMP/p.log" "vblk ok mode=modern .*seed=44 indirect=1 event_idx=1 .*ring=packed"
has "microvm packed: vnet" "$TMP/p.log" "vnet ok mode=modern .*arp=1 ping=1 .*ring=packed"
has "microvm packed: vrng (the ring wraps)" "$TMP/p.log" "vrng ok bytes=4096 mode=modern .*ring=packed"
has "microvm packed: vcon" "$TMP/p.log" "vcon ok mode=modern wrote=7 read=15 text=ping_from_host ring=packed"
has "microvm packed: vblk-bench (many wraps)" "$TMP/p.log" "vblk-bench ok mode=modern"
disk_check "microvm packed vblk" "$TMP/p.img" 44 64 1

qemu_virtio microvm,pcie=on "$TMP/ml.log" "virtio-mode legacy; vrng" "${RNG[@]}"
[ "$rc" -eq 3 ] && has "microvm: legacy mode refused cleanly (no I/O window)" "$TMP/ml.log" \
	"error vrng: .*device has no legacy interface" || fail "microvm legacy refusal" "QEMU status $rc"

# Modern-only devices (disable-legacy=on: device ids 0x1040+), read-only disk.
truncate -s 1M "$TMP/ro.img"
qemu_virtio microvm,pcie=on "$TMP/mo.log" "vdevs; vblk; vrng" \
	-drive "file=$TMP/ro.img,if=none,id=d0,format=raw,readonly=on" \
	-device virtio-blk-pci,drive=d0,disable-legacy=on "${RNG[@]}"
ok_run "microvm: modern-only devices, read-only disk" "$TMP/mo.log"
has "microvm: modern-only device id 0x1042" "$TMP/mo.log" "vdev .*id=1af4:1042 type=blk legacy=0 modern=1"
has "microvm: read-only disk refuses writes" "$TMP/mo.log" "vblk ok mode=modern capacity=2048 serial=- ro=1"

# ---- q35: both interfaces of the same transitional devices ----
truncate -s 16M "$TMP/q0.img" "$TMP/q1.img"
vcon_start
qemu_virtio q35 "$TMP/q.log" \
	"virtio-mode legacy; $TESTS dev=0 legacy; virtio-mode modern; vblk 64 32 dev=1; vnet; vrng; vcon modern; vdevs access=ports; vrng" \
	-drive "file=$TMP/q0.img,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0,serial=shoal-q0 \
	-drive "file=$TMP/q1.img,if=none,id=d1,format=raw" -device virtio-blk-pci,drive=d1 \
	"${NET[@]}" "${RNG[@]}" "${CON[@]}"
vcon_stop
ok_run "q35: every virtio command passes in both modes" "$TMP/q.log"
has "q35: vblk legacy" "$TMP/q.log" "vblk ok mode=legacy capacity=32768 serial=shoal-q0 ro=0 sectors=64 seed=21 indirect=1 event_idx=1 flush=1"
has "q35: vblk modern" "$TMP/q.log" "vblk ok mode=modern capacity=32768 serial=- ro=0 sectors=64 seed=32"
has "q35: vnet legacy" "$TMP/q.log" "vnet ok mode=legacy .*arp=1 ping=1"
has "q35: vnet modern" "$TMP/q.log" "vnet ok mode=modern .*arp=1 ping=1"
has "q35: vrng legacy" "$TMP/q.log" "vrng ok bytes=4096 mode=legacy"
has "q35: vcon legacy, host input read" "$TMP/q.log" "vcon ok mode=legacy .*read=15 text=ping_from_host"
has "q35: vcon modern" "$TMP/q.log" "vcon ok mode=modern"
has "q35: config space through ports 0xcf8/0xcfc" "$TMP/q.log" "vdevs n=[0-9]* pci_devs=[0-9]* access=ports"
grep -q "hello from guest legacy" "$TMP/vcon.out" && grep -qx "modern" "$TMP/vcon.out" \
	&& pass "q35: both vcon lines reached the host" || fail "q35: vcon lines" "got '$(head -c 80 "$TMP/vcon.out")'"
disk_check "q35 legacy vblk" "$TMP/q0.img" 21 64 1
disk_check "q35 modern vblk" "$TMP/q1.img" 32 64 1

# Legacy-only device (disable-modern=on): auto mode picks legacy.
qemu_virtio q35 "$TMP/qlo.log" "vdevs; vrng" -device virtio-rng-pci,disable-modern=on
ok_run "q35: legacy-only device" "$TMP/qlo.log"
has "q35: legacy-only device in auto mode" "$TMP/qlo.log" "vrng ok bytes=1024 mode=legacy"

# ---- hostile requests: the device must refuse them, and recover on reset ----
qemu_virtio microvm,pcie=on "$TMP/h.log" "vhostile all" \
	-drive "file=$TMP/m.img,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0 "${RNG[@]}"
ok_run "microvm: vhostile all, the guest survives" "$TMP/h.log"
for kind in loop len nested badhead; do
	has "microvm: vhostile $kind: device stops, NEEDS_RESET, recovers, rng unaffected" "$TMP/h.log" \
		"vhostile $kind outcome=stopped status=-1 len=0 dev_status=0x4f mode=modern recovered=1 others=ok"
done
# QEMU serves a buffer outside RAM from a bounce buffer and completes it.
has "microvm: vhostile oob: guest survives, device recovers" "$TMP/h.log" \
	"vhostile oob outcome=[a-z]* .*recovered=1 others=ok"
qemu_virtio q35 "$TMP/hq.log" "virtio-mode legacy; vhostile all" \
	-drive "file=$TMP/m.img,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0 "${RNG[@]}"
ok_run "q35 legacy: vhostile all, the guest survives" "$TMP/hq.log"
n=$(grep -c "vhostile [a-z]* outcome=.*recovered=1 others=ok" "$TMP/hq.log")
[ "$n" = 5 ] && pass "q35 legacy: device recovers after each hostile request" || fail "q35 legacy hostile" "$n of 5 recovered"

# ---- benchmark smoke run (figures are printed, never judged here) ----
truncate -s 64M "$TMP/b.img"
qemu_virtio microvm,pcie=on "$TMP/b.log" "vblk-bench 50" \
	-drive "file=$TMP/b.img,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0
ok_run "microvm: vblk-bench runs" "$TMP/b.log"
grep -h "vblk-bench [a-z]* bs" "$TMP/b.log" | sed 's/^shoal-guest: /  /'
finish
