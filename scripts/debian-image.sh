#!/bin/bash
# scripts/debian-image.sh - a Debian 12 disk image as users have them: a
# root file system made by mmdebstrap (debootstrap's successor in Debian,
# which installs with apt and runs the packages' own scripts), with
# Debian's cloud kernel, systemd and cloud-init, in an ext4 partition of a
# qcow2 image that GRUB boots through the BIOS.  For firmware boot and
# cloud-init NoCloud (docs/linux-guests.md; tests/system/slow_linux_debian.sh).
#
# Kept in a cache outside the repository, never committed:
#
#   ${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}/debian-image/
#     debian-12.qcow2   2 GiB virtual, qcow2 (qemu-img), the disk:
#                       MBR, GRUB's boot.img and core.img, one partition
#                       (scripts/grub-disk.bash), ext4 labelled "debian-root"
#     stamp             this script's and grub-disk.bash's digest, and the
#                       kernel package installed; a change rebuilds
#     image.env         SHOAL_DEBIAN_IMAGE=PATH SHOAL_DEBIAN_KVER=...
#
# What is in it, and why:
#   - packages: minbase plus linux-image-cloud-amd64 (virtio, ext4, isofs
#     as modules; its initramfs-tools initrd loads them), systemd-sysv,
#     udev, cloud-init, ifupdown, isc-dhcp-client, iproute2, and the
#     libraries Shoal's .deb depends on (so a test can install it with
#     dpkg and no network); no docs, man pages or locales (smaller, and
#     nothing a boot reads);
#   - /etc/fstab mounts LABEL=debian-root on /;
#   - cloud-init looks for NoCloud only (then None): no network
#     datasources to probe, which would wait for timeouts on a VM with no
#     metadata server;
#   - root has no password and cannot log in; the login prompt on ttyS0
#     (systemd's serial-getty, from console=ttyS0) is what a boot reaches;
#   - GRUB: serial console, no menu wait, one entry: root=LABEL=debian-root
#     console=ttyS0 quiet (each byte on an emulated UART is a VM exit: a
#     boot's 60 KB of kernel and systemd lines cost tens of seconds in the
#     KVM box), and "panic=-1" so that a kernel that cannot mount its root
#     resets (and a test sees it) rather than waits.
#
# Usage: scripts/debian-image.sh [--force] [--quiet]
#   Prints SHOAL_DEBIAN_IMAGE=PATH and SHOAL_DEBIAN_KVER=VERSION on stdout
#   (for eval); progress on stderr.  Exit status: 0 ready; 3 it cannot be
#   built here (not root, no mmdebstrap, no GRUB for BIOS, no qemu-img, or
#   the Debian mirror cannot be reached), the reason on stderr; 1 anything
#   else.  Built in a scratch directory, moved into place when complete,
#   under a lock.  The mirror is $SHOAL_DEBIAN_MIRROR
#   (default http://deb.debian.org/debian).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}
OUT=$CACHE/debian-image
MIRROR=${SHOAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SIZE_MIB=2048
LABEL=debian-root
PACKAGES=linux-image-cloud-amd64,systemd-sysv,udev,cloud-init,ifupdown,isc-dhcp-client,netbase,iproute2
# The libraries Shoal's own package depends on (debian/control and what
# dpkg-shlibdeps finds), so that its .deb installs in the guest with dpkg
# alone: the box has no network for apt (slow_linux_debian.sh).
PACKAGES=$PACKAGES,libjansson4,liburing2,libzstd1,zlib1g,libxxhash0,libseccomp2,libsqlite3-0,libmicrohttpd12,libcurl4,libssl3,libisofs6,libgnutls30
FORCE=0
QUIET=0
for a in "$@"; do
	case $a in
	--force) FORCE=1 ;;
	--quiet|-q) QUIET=1 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "debian-image: unknown argument: $a" >&2; exit 1 ;;
	esac
done
say() { [ "$QUIET" -eq 1 ] || echo "debian-image: $*" >&2; }
die() { echo "debian-image: $1" >&2; exit "${2:-1}"; }
. "$ROOT/scripts/grub-disk.bash"

stamp="$( { cat "$0" "$ROOT/scripts/grub-disk.bash"; } | md5sum | cut -c1-12)"
emit() {
	echo "SHOAL_DEBIAN_IMAGE=$OUT/debian-12.qcow2"
	echo "SHOAL_DEBIAN_KVER=$(cut -d' ' -f2 "$OUT/stamp")"
}
fresh() { [ $FORCE = 0 ] && [ -s "$OUT/debian-12.qcow2" ] && [ "$(cut -d' ' -f1 "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; }
fresh && { emit; exit 0; }

[ "$(id -u)" = 0 ] || die "building the image needs root (mmdebstrap installs packages in a chroot)" 3
command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (scripts/install-deps.sh)" 3
command -v qemu-img >/dev/null || die "qemu-img is not installed (Debian's qemu-utils)" 3
grub_disk_check || die "$GRUB_DISK_WHY" 3

mkdir -p "$CACHE"
exec 9>"$CACHE/debian-image.lock"
flock 9
fresh && { emit; exit 0; }
WORK=$(mktemp -d "$CACHE/debian-image-work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say "building a Debian 12 root file system with mmdebstrap from $MIRROR (a few minutes)"

# The customize hook runs on the host with the root file system as $1.
cat >"$WORK/customize" <<EOF
#!/bin/sh
set -e
echo "LABEL=$LABEL / ext4 errors=remount-ro 0 1" >"\$1/etc/fstab"
echo debian >"\$1/etc/hostname"
mkdir -p "\$1/etc/cloud/cloud.cfg.d"
printf 'datasource_list: [ NoCloud, None ]\n' >"\$1/etc/cloud/cloud.cfg.d/90-shoal-nocloud.cfg"
# The kernel and initrd under fixed names for grub.cfg.
ln -sf "\$(basename "\$(ls "\$1"/boot/vmlinuz-* | head -1)")" "\$1/boot/vmlinuz"
ln -sf "\$(basename "\$(ls "\$1"/boot/initrd.img-* | head -1)")" "\$1/boot/initrd.img"
EOF
chmod 755 "$WORK/customize"
if ! mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
	--aptopt='Acquire::Retries "3"' \
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
	--customize-hook="$WORK/customize \"\$1\"" \
	bookworm "$WORK/root" "$MIRROR" >"$WORK/mmdebstrap.log" 2>&1; then
	tail -5 "$WORK/mmdebstrap.log" >&2
	grep -qiE 'could not resolve|failed to fetch|connection failed|unable to connect' "$WORK/mmdebstrap.log" &&
		die "the Debian mirror $MIRROR cannot be reached" 3
	die "mmdebstrap failed (its log's last lines are above)"
fi
kver=$(basename "$(ls "$WORK"/root/boot/vmlinuz-* | head -1)" | sed 's/^vmlinuz-//')
[ -n "$kver" ] && [ -s "$WORK/root/boot/initrd.img-$kver" ] || die "the root file system has no kernel and initrd in /boot"

mkdir -p "$WORK/root/boot/grub"
cat >"$WORK/root/boot/grub/grub.cfg" <<EOF
# Written by scripts/debian-image.sh.
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
set default=0
menuentry "Debian 12 ($kver)" {
	echo "grub: loading Linux $kver"
	linux /boot/vmlinuz root=LABEL=$LABEL ro console=ttyS0 quiet panic=-1
	initrd /boot/initrd.img
}
EOF

say "making the disk: ext4 of $(du -sm "$WORK/root" | cut -f1) MiB in a $SIZE_MIB MiB image, GRUB"
grub_disk_build "$WORK/disk.raw" "$SIZE_MIB" "$WORK/root" "$LABEL" || die "$GRUB_DISK_WHY"
rm -rf "$WORK/root"
qemu-img convert -q -f raw -O qcow2 "$WORK/disk.raw" "$WORK/debian-12.qcow2" || die "qemu-img convert failed"
mkdir -p "$OUT"
mv "$WORK/debian-12.qcow2" "$OUT/debian-12.qcow2.new"
mv "$OUT/debian-12.qcow2.new" "$OUT/debian-12.qcow2"
echo "$stamp $kver" >"$OUT/stamp"
emit >"$OUT/image.env"
say "image ready: $OUT/debian-12.qcow2 ($(du -m "$OUT/debian-12.qcow2" | cut -f1) MiB, Linux $kver)"
emit
