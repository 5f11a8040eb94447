#!/bin/bash
# scripts/install-deps.sh - install the Debian 12 packages Shoal builds and
# tests with.  Safe to run again: installs only what is missing.
set -e
PKGS="build-essential clang libcmocka-dev libjansson-dev liburing-dev libzstd-dev zlib1g-dev libxxhash-dev
      qemu-system-x86 qemu-utils busybox-static cpio lz4 kmod xz-utils zstd
      libmicrohttpd-dev libsqlite3-dev sqlite3 curl jq python3-yaml openssl"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "shoal: installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
