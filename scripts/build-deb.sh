#!/bin/bash
# scripts/build-deb.sh [OUTDIR] - build Shoal's Debian package,
# shoal_VERSION_amd64.deb, with dpkg-buildpackage and debhelper (debian/),
# and put it in OUTDIR (default build/deb).  docs/install.md.
#
# The package is built from the project's tracked files (with their
# uncommitted edits) copied into a scratch directory, so the checkout gets
# no debian/build or debian/shoal and the .deb lands where asked, not in
# the checkout's parent.  Missing build tools (dpkg-dev, debhelper) are
# installed through scripts/install-deps.sh's way: apt-get, as root.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/build/deb}")
need=""
command -v dpkg-buildpackage >/dev/null || need="$need dpkg-dev"
command -v dh >/dev/null || need="$need debhelper"
if [ -n "$need" ]; then
	SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
	echo "shoal: build-deb.sh: installing:$need" >&2
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >&2
fi
ver=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version)
work=$(mktemp -d /tmp/shoal-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/shoal-$ver
mkdir "$src"
(cd "$ROOT" && git ls-files -z | while IFS= read -r -d '' f; do
	[ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp -a --parents -t "$src")
log=$work/build.log
if ! (cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" dpkg-buildpackage -b -us -uc) >"$log" 2>&1; then
	echo "shoal: build-deb.sh: dpkg-buildpackage failed; its last lines:" >&2
	tail -30 "$log" >&2
	exit 1
fi
mkdir -p "$OUT"
mv "$work"/shoal_"$ver"_*.deb "$OUT"/
ls "$OUT"/shoal_"$ver"_*.deb
