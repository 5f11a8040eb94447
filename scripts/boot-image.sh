#!/bin/bash
# scripts/boot-image.sh - a bootable disk image (MBR, GRUB, Linux) built
# from the guest kit, for firmware boot: `shoal run --disk IMAGE` with no
# --kernel (docs/boot.md, "Firmware boot"; tests/system/slow_linux_firmware.sh).
#
# The image is what a PC boots from, made without root, loop devices or
# mounts, and kept in a cache outside the repository:
#
#   ${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}/boot-image/
#     disk.img     64 MiB raw (sparse), made by scripts/grub-disk.bash:
#                  sector 0       GRUB's boot.img (its first 440 bytes), then
#                                 the MBR partition table: one Linux (0x83)
#                                 partition, active, from sector 2048 to the end
#                  sectors 1..    GRUB's core.img (grub-mkimage -O i386-pc:
#                                 biosdisk, part_msdos, ext2, linux, normal,
#                                 configfile, serial...), in the gap before
#                                 the partition; boot.img's default block list
#                                 already points at sector 1 and core.img's at 2
#                  partition 1    ext4 made by `mkfs.ext4 -d DIR -E offset=`:
#                                 /boot/vmlinuz   the kit's bzImage
#                                 /boot/initrd    the kit's initramfs plus
#                                                 /etc/boot-check (below)
#                                 /boot/grub/grub.cfg  serial console, no menu
#                                                 wait, one entry
#     stamp        the kit's stamp and this script's digest; a change to
#                  either rebuilds the image
#     image.env    SHOAL_BOOT_IMAGE=PATH, for eval
#
# GRUB boots Linux with "console=ttyS0 kit.quiet kit.run=/etc/boot-check"
# (plus kit.poweroff, and nothing else, from the default entry): the kit's
# init prints "shoal-kit: init ready", then runs /etc/boot-check, which
# reports what Linux found on the console as "boot-check: KEY VALUE" lines
# (the ACPI tables' signatures and OEM, the power button, the PCI root
# bridge from ACPI, the disk), and powers off.  The second menu entry,
# "shell", boots the same kernel to the kit's shell instead.  GRUB prints
# "grub: loading the kit" before it loads the kernel.
#
# Usage: scripts/boot-image.sh [--force] [--quiet]
#   Prints SHOAL_BOOT_IMAGE=PATH (and the kit's SHOAL_KIT_* lines) on
#   stdout for eval; progress on stderr.  Exit status: 0 image ready; 3 it
#   cannot be built here (no kit: see scripts/guest-kit.sh; or GRUB's
#   i386-pc files, Debian's grub-pc-bin, or mkfs.ext4 with -d missing), the
#   reason on stderr; 1 anything else.  Built in a scratch directory and
#   moved into place when complete, under a lock.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}
OUT=$CACHE/boot-image
SIZE_MIB=64
FORCE=0
QUIET=0
for a in "$@"; do
	case $a in
	--force) FORCE=1 ;;
	--quiet|-q) QUIET=1 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "boot-image: unknown argument: $a" >&2; exit 1 ;;
	esac
done
say() { [ "$QUIET" -eq 1 ] || echo "boot-image: $*" >&2; }
die() { echo "boot-image: $1" >&2; exit "${2:-1}"; }
. "$ROOT/scripts/grub-disk.bash"

rc=0
kit=$("$ROOT/scripts/guest-kit.sh" -q) || rc=$?
[ $rc -eq 0 ] || die "the guest kit is not available (scripts/guest-kit.sh exited $rc)" "$([ $rc -eq 3 ] && echo 3 || echo 1)"
eval "$kit"
grub_disk_check || die "$GRUB_DISK_WHY" 3

# The digest covers this script (the layout, grub.cfg, the check) and GRUB.
stamp="$(cat "$SHOAL_KIT_DIR/stamp") $( { cat "$0" "$ROOT/scripts/grub-disk.bash"; md5sum "$GRUB_DISK_DIR/boot.img" "$GRUB_DISK_DIR/kernel.img"; } | md5sum | cut -c1-12)"

emit() {
	echo "SHOAL_BOOT_IMAGE=$OUT/disk.img"
	echo "$kit"
}

if [ $FORCE = 0 ] && [ -s "$OUT/disk.img" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
	emit
	exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/boot-image.lock"
flock 9
if [ $FORCE = 0 ] && [ -s "$OUT/disk.img" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
	emit
	exit 0
fi
WORK=$(mktemp -d "$CACHE/boot-image-work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say "building the disk image from $SHOAL_KIT_PKG"

# /etc/boot-check: run once by the kit's init (kit.run=), output on the console.
ov=$WORK/overlay
mkdir -p "$ov/etc"
cat >"$ov/etc/boot-check" <<'EOF'
#!/bin/sh
# Written by scripts/boot-image.sh: what Linux found, one fact a line.
t() { echo "boot-check: $*"; }
tabs=""
for f in /sys/firmware/acpi/tables/*; do
	[ -f "$f" ] && tabs="$tabs $(basename "$f")"
done
t acpi-tables${tabs:- none}
# The OEM ID is bytes 10-15 of a table's header.
[ -r /sys/firmware/acpi/tables/FACP ] && t acpi-oem "$(dd if=/sys/firmware/acpi/tables/FACP bs=1 skip=10 count=6 2>/dev/null | tr -d ' ')"
t rsdp "$(dmesg | sed -n 's/.*ACPI: RSDP \(0x[0-9A-F]*\).*/\1/p' | head -1)"
[ -e /sys/bus/acpi/devices/LNXPWRBN:00 ] && t power-button acpi
[ -e /sys/bus/acpi/devices/PNP0A08:00 ] || [ -e /sys/bus/acpi/devices/PNP0A03:00 ] && t pci-root acpi
dmesg | grep -q 'PCI Root Bridge \[PCI0\]' && t pci-root-bridge PCI0
[ -e /sys/block/vda ] && t disk "vda $(cat /sys/block/vda/size) sectors"
t cmdline "$(cat /proc/cmdline)"
t done
EOF
chmod 755 "$ov/etc/boot-check"
(cd "$ov" && find . | cpio -o -H newc -R 0:0 --quiet | gzip) >"$WORK/overlay.cpio.gz"

# The file system's contents.
fs=$WORK/fs
mkdir -p "$fs/boot/grub"
cp "$SHOAL_KIT_BZIMAGE" "$fs/boot/vmlinuz"
cat "$SHOAL_KIT_INITRD" "$WORK/overlay.cpio.gz" >"$fs/boot/initrd"
cat >"$fs/boot/grub/grub.cfg" <<'EOF'
# Written by scripts/boot-image.sh.
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
set default=0
menuentry "check" {
	echo "grub: loading the kit"
	linux /boot/vmlinuz console=ttyS0 kit.quiet kit.run=/etc/boot-check kit.poweroff
	initrd /boot/initrd
}
menuentry "shell" {
	echo "grub: loading the kit"
	linux /boot/vmlinuz console=ttyS0 kit.quiet
	initrd /boot/initrd
}
EOF

# The disk: the partition table, the file system at its offset, GRUB
# (scripts/grub-disk.bash).
img=$WORK/disk.img
grub_disk_build "$img" "$SIZE_MIB" "$fs" shoal-boot || die "$GRUB_DISK_WHY"
core_sectors=$GRUB_DISK_CORE_SECTORS

mkdir -p "$OUT"
mv "$img" "$OUT/disk.img.new"
mv "$OUT/disk.img.new" "$OUT/disk.img"
echo "$stamp" >"$OUT/stamp"
say "image ready: $OUT/disk.img ($core_sectors sectors of GRUB, $(du -k "$OUT/disk.img" | cut -f1) KiB used)"
emit
