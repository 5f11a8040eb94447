#!/bin/bash
# scripts/guest-kit.sh - assemble the Linux guest kit from Debian 12 packages.
#
# The kit is Debian's own cloud kernel plus a busybox initramfs, kept in a
# cache outside the repository:
#
#   ${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}/kit/
#     bzImage           the package's vmlinuz (64-bit boot protocol)
#     vmlinux           ELF kernel with the PVH entry note, extracted from it
#     initrd.cpio.gz    busybox-static, the virtio modules, modules.dep, /init
#                       (busybox init as PID 1; see write_init)
#     config            the kernel's .config (for reference)
#     kit.env           the paths below, as shell assignments
#     stamp             "<package> <version> <digest>" the kit was built
#                       from (the digest covers /init and the module list)
#
# Usage: scripts/guest-kit.sh [--generic] [--force] [--quiet]
#   --generic: the same kit from Debian's generic kernel (linux-image-amd64,
#   the one scripts/kvm-box.sh boots the box with) instead of the cloud
#   kernel, in kit-generic/ beside kit/.  The cloud kernel lacks drivers a
#   test may need: the ACPI VM generation ID driver (vmgenid, for
#   tests/system/slow_linux_vmgenid.sh) is only in the generic one.  Its
#   vmlinuz's payload is XZ, not LZ4, so that kit boots through bzImage
#   only (no vmlinux; SHOAL_KIT_VMLINUX is empty).
#   Prints, on stdout, shell assignments a caller can eval:
#     SHOAL_KIT_DIR=... SHOAL_KIT_BZIMAGE=... SHOAL_KIT_VMLINUX=...
#     SHOAL_KIT_INITRD=... SHOAL_KIT_KVER=... SHOAL_KIT_PKG=...
#   Progress goes to stderr.  Exit status: 0 kit ready; 3 the kernel package
#   could not be found or downloaded (no network or no Debian mirror: callers
#   treat this as a reason to skip); 1 anything else (a bug to look at).
#
# Idempotent: when the stamp matches the current version of the package that
# linux-image-cloud-amd64 depends on, and this script's /init and module
# list, nothing is rebuilt.  Offline (no apt lists), an existing kit is used
# as it is; with apt lists but no mirror, a kit that needs rebuilding exits
# 3, so build the kit on the host before using it inside the KVM box.  A
# lock keeps concurrent callers (a test and a benchmark, say) from building
# over each other; the new kit is built in a scratch directory and moved
# into place only when complete.
#
# Why each step (see docs/linux-guests.md):
#   - The versioned package name is resolved from the metapackage, never
#     hard-coded, so a kernel update rebuilds the kit.
#   - Debian's bzImage carries an LZ4 (legacy frame) payload; `lz4 -dc` from
#     its magic yields the ELF vmlinux, which has XEN_ELFNOTE_PHYS32_ENTRY
#     (note type 0x12) and so boots through PVH.
#   - The virtio drivers are modules whose load order changes between
#     kernel updates, so modules.dep is generated with depmod and /init
#     loads them with modprobe.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NEW=""
WORK=""
CACHE=${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}
KIT=$CACHE/kit
META=linux-image-cloud-amd64
# Modules wanted in the initramfs (their dependencies come along).  Names as
# modprobe knows them; a name the kernel has built in or lacks is skipped.
# evdev and button give the ACPI power button an input device for acpid;
# isofs mounts the cloud-init seed (slow_linux_cidata.sh); fuse and virtiofs
# mount a shared file tree (--fs, slow_linux_virtiofs.sh).
MODULES="virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
	virtio_blk failover net_failover virtio_net virtio_console virtio_rng
	virtio_balloon vmw_vsock_virtio_transport evdev button isofs fuse virtiofs"
# --generic adds these (skipped where built in): the VM generation ID driver.
GENERIC_MODULES="vmgenid"

FORCE=0
QUIET=0
NEED_VMLINUX=1
for a in "$@"; do
	case $a in
	--force) FORCE=1 ;;
	--generic) META=linux-image-amd64; KIT=$CACHE/kit-generic; MODULES="$MODULES $GENERIC_MODULES"
		NEED_VMLINUX=0 ;;
	--quiet|-q) QUIET=1 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "guest-kit: unknown argument: $a" >&2; exit 1 ;;
	esac
done

say() { [ "$QUIET" -eq 1 ] || echo "guest-kit: $*" >&2; }
die() { echo "guest-kit: $1" >&2; exit "${2:-1}"; }

. "$ROOT/scripts/debkernel.bash"

print_paths() {
	cat "$KIT/kit.env"
	say "kit ready in $KIT ($(cat "$KIT/stamp"))"
}

kit_complete() {
	[ -f "$KIT/stamp" ] && [ -f "$KIT/kit.env" ] && [ -s "$KIT/bzImage" ] &&
		{ [ "$NEED_VMLINUX" = 0 ] || [ -s "$KIT/vmlinux" ]; } && [ -s "$KIT/initrd.cpio.gz" ]
}

# extract_vmlinux BZIMAGE OUT: decompress the LZ4 payload and check that the
# result is an x86-64 ELF with the PVH entry note.  The magic 02 21 4c 18 can
# also occur by chance inside the image, so every occurrence is tried in
# order.  lz4 exits non-zero at the bytes that follow the payload (the image
# appends its uncompressed size); the ELF check decides, not lz4's status.
extract_vmlinux() {
	local z=$1 out=$2 off
	for off in $(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$z" | cut -d: -f1); do
		tail -c +"$((off + 1))" "$z" | lz4 -dc >"$out" 2>/dev/null || true
		# readelf (binutils 2.40) prints the note as "Xen 0x00000008
		# Unknown note type: (0x00000012)"; newer ones may name it.
		if [ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] &&
			[[ $(readelf -n "$out" 2>/dev/null) =~ Xen[[:space:]]+0x[0-9a-f]+[[:space:]]+[^$'\n']*(\(0x00000012\)|PHYS32_ENTRY) ]]; then
			say "vmlinux: LZ4 payload at offset $off, PVH note present"
			return 0
		fi
	done
	rm -f "$out"
	return 1
}

# build_initrd KROOT KVER OUT: pack busybox, the virtio modules and /init.
build_initrd() {
	local kroot=$1 kver=$2 out=$3 ird
	ird=$(mktemp -d "$WORK/initrd.XXXXXX")
	dk_initrd_root "$ird"
	# shellcheck disable=SC2086
	dk_add_modules "$kroot" "$kver" "$ird" $MODULES
	write_init "$ird"
	dk_pack "$ird" "$out"
	say "initrd: $(wc -l <"$ird/etc/kit-modules") modules, $(du -k "$out" | cut -f1) KiB"
}

# write_init IRD: the initramfs's /init and what busybox init runs there.
#
# /init (a shell script) mounts /proc, /sys and /dev, loads the modules,
# starts acpid and hands PID 1 to busybox init, which runs /etc/inittab:
#   ::once:/sbin/kit-run           the hook named by kit.run=PATH, then
#                                  `poweroff` if kit.poweroff was given
#   ::respawn:cttyhack sh -l       a shell on the console (not with kit.poweroff)
#   ::shutdown:/sbin/kit-shutdown  stop every process, unmount the disks
# So `poweroff`, `reboot` and `halt` in the guest shut it down in order, and
# so does the ACPI power button (Shoal's graceful stop): busybox acpid reads
# the button's evdev and runs /etc/acpi/PWRF/00000080, which is `poweroff`.
# Kernel command-line words: kit.poweroff (power off after "init ready" and
# the hook), kit.quiet (no "loaded MODULE" lines), kit.run=PATH (run the
# shell script PATH, typically from an initramfs appended to this one, with
# stdin from /dev/null and its output on the console).
write_init() {
	local ird=$1
	mkdir -p "$ird/etc/acpi/PWRF" "$ird/var/log" "$ird/var/run" "$ird/run" "$ird/mnt"
	cat >"$ird/init" <<'EOF'
#!/bin/sh
# /init of the Shoal guest kit (written by scripts/guest-kit.sh).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
quiet=0; off=0
for w in $(cat /proc/cmdline); do
	case $w in kit.quiet) quiet=1 ;; kit.poweroff) off=1 ;; esac
done
for m in $(cat /etc/kit-modules); do
	if modprobe "$m" 2>/dev/null; then
		[ $quiet = 1 ] || echo "shoal-kit: loaded $m"
	else
		echo "shoal-kit: modprobe $m failed"
	fi
done
hostname shoal-kit
ip link set lo up
# The power button reports through evdev; both modules are loaded above, so
# its /dev/input/eventN is there for acpid to open.
acpid -l /var/log/acpid.log
{
	echo "::once:/sbin/kit-run"
	[ $off = 1 ] || echo "::respawn:/bin/cttyhack /bin/sh -l"
	echo "::shutdown:/sbin/kit-shutdown"
	echo "::ctrlaltdel:/sbin/reboot"
} >/etc/inittab
echo "shoal-kit: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus, $(sed -n 's/^MemTotal: *//p' /proc/meminfo)"
echo "shoal-kit: init ready"
exec /sbin/init
EOF
	cat >"$ird/sbin/kit-run" <<'EOF'
#!/bin/sh
# Run once by busybox init: the kit.run= hook, then kit.poweroff.
run=""; off=0
for w in $(cat /proc/cmdline); do
	case $w in kit.run=*) run=${w#kit.run=} ;; kit.poweroff) off=1 ;; esac
done
if [ -n "$run" ]; then
	echo "shoal-kit: running $run"
	sh "$run" </dev/null
	echo "shoal-kit: $run exited $?"
fi
[ $off = 1 ] && poweroff
exit 0
EOF
	cat >"$ird/sbin/kit-shutdown" <<'EOF'
#!/bin/sh
# Run by busybox init on poweroff, reboot or halt, before it kills what is
# left: stop every process, then unmount the disks (or at least make them
# read-only), so that their file systems are left clean.
echo "shoal-kit: shutting down"
kill -TERM -1 2>/dev/null
sleep 1
kill -KILL -1 2>/dev/null
sync
for m in $(awk '$1 ~ "^/dev/" { print $2 }' /proc/mounts | sort -r); do
	umount "$m" 2>/dev/null || mount -o remount,ro "$m" ||
		echo "shoal-kit: cannot unmount $m"
done
sync
EOF
	cat >"$ird/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
# Run by busybox acpid on the ACPI power button (Shoal's graceful stop).
echo "shoal-kit: power button pressed; powering off" >/dev/console
poweroff
EOF
	chmod 755 "$ird/init" "$ird/sbin/kit-run" "$ird/sbin/kit-shutdown" \
		"$ird/etc/acpi/PWRF/00000080"
}

build_kit() {
	local pkg=$1 ver=$2 digest=$3 new kroot kver
	NEW=$(mktemp -d "$CACHE/kit.new.XXXXXX")
	WORK=$(mktemp -d "$CACHE/work.XXXXXX")
	trap 'rm -rf "$WORK" "$NEW"' EXIT
	new=$NEW
	chmod 755 "$new"
	kver=$(dk_fetch "$pkg" "$ver" "$WORK") || exit $?
	kroot=$WORK/pkg
	cp "$kroot/boot/vmlinuz-$kver" "$new/bzImage"
	cp "$kroot/boot/config-$kver" "$new/config"
	if [ "$NEED_VMLINUX" = 0 ]; then
		extract_vmlinux "$new/bzImage" "$new/vmlinux" || say "no vmlinux (not needed)"
	else
		extract_vmlinux "$new/bzImage" "$new/vmlinux" ||
			die "no LZ4 payload with a PVH-noted ELF found in $kroot/boot/vmlinuz-$kver"
	fi
	build_initrd "$kroot" "$kver" "$new/initrd.cpio.gz"
	cat >"$new/kit.env" <<EOF
SHOAL_KIT_DIR=$KIT
SHOAL_KIT_BZIMAGE=$KIT/bzImage
SHOAL_KIT_VMLINUX=$([ -s "$new/vmlinux" ] && echo "$KIT/vmlinux")
SHOAL_KIT_INITRD=$KIT/initrd.cpio.gz
SHOAL_KIT_KVER=$kver
SHOAL_KIT_PKG="$pkg $ver"
EOF
	echo "$pkg $ver $digest" >"$new/stamp"
	rm -rf "$KIT"
	mv "$new" "$KIT"
	rm -rf "$WORK"
	trap - EXIT
}

main() {
	local pv
	mkdir -p "$CACHE"
	exec 9>"$CACHE/kit.lock"
	flock 9
	dk_need_tools
	pv=$(dk_resolve_or_update "$META") || pv=""
	if [ -z "$pv" ]; then
		if kit_complete; then
			say "cannot resolve $META (offline?); using the existing kit"
			print_paths
			return 0
		fi
		die "cannot resolve $META to a kernel package (no apt lists or no network)" 3
	fi
	# The stamp names the package and a digest of what this script puts in
	# the initramfs, so a change to /init or the module list rebuilds it.
	pv="$pv $({ declare -f write_init; echo "$MODULES"; } | md5sum | cut -c1-12)"
	if [ "$FORCE" -eq 0 ] && kit_complete && [ "$(cat "$KIT/stamp")" = "$pv" ]; then
		print_paths
		return 0
	fi
	# shellcheck disable=SC2086
	build_kit $pv
	print_paths
}

main
