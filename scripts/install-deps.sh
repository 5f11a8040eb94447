#!/bin/bash
# scripts/install-deps.sh - install the Debian 12 packages Shoal builds and
# tests with.  Safe to run again: installs only what is missing.
set -e
PKGS="build-essential clang libcmocka-dev libjansson-dev liburing-dev libzstd-dev zlib1g-dev libxxhash-dev
      qemu-system-x86 qemu-system-common qemu-utils busybox-static cpio lz4 kmod xz-utils zstd
      libmicrohttpd-dev libcurl4-openssl-dev libsqlite3-dev sqlite3 curl jq python3-yaml openssl seabios libseccomp-dev man-db groff-base libssl-dev"
# nodejs and npm run the OpenAPI validators (scripts/api-tools.sh installs
# them from npm); prometheus brings promtool, which checks shoald's /metrics.
PKGS="$PKGS nodejs prometheus"
# libisofs-dev builds the cloud-init seed (src/boot/cidata.c); genisoimage's
# isoinfo reads it back in test_cidata, independently of libisofs.
PKGS="$PKGS libisofs-dev genisoimage"
# shoald's networks (docs/networks.md): dnsmasq answers DHCP and DNS on
# each bridge, nft writes the NAT and isolation rules (iproute2's ip, in
# every Debian, makes the bridges and TAPs).
PKGS="$PKGS dnsmasq-base nftables"
# debhelper builds the Debian package (scripts/build-deb.sh, slow_deb.sh).
PKGS="$PKGS debhelper"
# mmdebstrap makes the Debian 12 image that firmware boot and cloud-init are
# tested with, and grub-pc-bin makes it bootable (scripts/debian-image.sh).
PKGS="$PKGS mmdebstrap grub-pc-bin"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
# npm: Debian's package, unless node's own packages (NodeSource) brought one
command -v npm >/dev/null || missing="$missing npm"
[ -z "$missing" ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "shoal: installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
# prometheus is wanted for promtool only: the server its package starts on a
# systemd host is stopped and disabled (in a container none starts).
case " $missing " in *" prometheus "*)
	if [ -d /run/systemd/system ]; then $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; fi ;;
esac
