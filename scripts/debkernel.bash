# scripts/debkernel.bash - sourced by guest-kit.sh and kvm-box.sh: find,
# fetch and unpack one of Debian's own kernels, and pack a busybox
# initramfs with a closure of its modules.
#
# Nothing here installs a kernel on the host: the package is fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` into a scratch folder.
# The versioned package is always resolved from a metapackage
# (linux-image-amd64, linux-image-cloud-amd64), never named, so a kernel
# update rebuilds whatever was made from it.
#
# The caller sets CACHE and defines say() and die() before sourcing.

PATH=$PATH:/usr/sbin:/sbin          # depmod, modprobe for a non-root user

# dk_resolve META: print "<versioned package> <version>" for the kernel the
# metapackage META depends on, from the local apt lists; status 1 if unknown.
dk_resolve() {
	local meta=$1 dep pkg ver
	# "Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)".  One apt-cache call
	# (about 0.5 s) keeps the no-op quick.
	dep=$(apt-cache show --no-all-versions "$meta" 2>/dev/null |
		sed -n 's/^Depends: .*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -1)
	if [ -z "$dep" ]; then
		# A metapackage that does not pin a version: ask apt-cache depends.
		pkg=$(apt-cache depends "$meta" 2>/dev/null |
			sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
		[ -n "$pkg" ] || return 1
		ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -1)
		[ -n "$ver" ] || return 1
		dep="$pkg $ver"
	fi
	echo "$dep"
}

# dk_resolve_or_update META: dk_resolve, running `apt-get update` once if
# the lists lack META.  Prints nothing (status 1) when offline.
dk_resolve_or_update() {
	local pv sudo=""
	pv=$(dk_resolve "$1") && { echo "$pv"; return 0; }
	[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo -n"
	say "$1 not in the apt lists; running apt-get update"
	$sudo apt-get update -qq >&2 2>/dev/null || true
	dk_resolve "$1"
}

# dk_fetch PKG VER DIR: download PKG=VER into DIR and unpack it to DIR/pkg.
# Prints the kernel version (the lib/modules folder name).  Exits 3 when
# the download fails (no network or no mirror: callers skip on that).
dk_fetch() {
	local pkg=$1 ver=$2 dir=$3 deb kver
	say "downloading $pkg $ver"
	(cd "$dir" && apt-get download -q "$pkg=$ver" >/dev/null 2>"$dir/apt.err") || {
		cat "$dir/apt.err" >&2
		die "apt-get download $pkg failed (no network or no Debian mirror?)" 3
	}
	deb=$(ls "$dir"/*.deb)
	dpkg-deb -x "$deb" "$dir/pkg"
	rm -f "$deb"
	kver=$(ls "$dir/pkg/lib/modules" | head -1)
	if [ -z "$kver" ] || [ ! -f "$dir/pkg/boot/vmlinuz-$kver" ]; then
		die "$deb: no vmlinuz or modules in it"
	fi
	echo "$kver"
}

# dk_need_tools: make sure the host tools exist, installing them once if not.
dk_need_tools() {
	local t missing="" root
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	for t in apt-get apt-cache dpkg-deb lz4 cpio depmod modprobe readelf gzip flock "$@"; do
		command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
	done
	[ -x /bin/busybox ] || missing="$missing busybox"
	if [ -n "$missing" ]; then
		say "missing tools:$missing; running scripts/install-deps.sh"
		"$root/scripts/install-deps.sh" >&2 || die "install-deps.sh failed"
	fi
	# The initramfs has no libc, so busybox must be the static build
	# (package busybox-static, not busybox).
	if [[ $(readelf -l /bin/busybox 2>/dev/null) == *INTERP* ]]; then
		die "/bin/busybox is dynamically linked; install busybox-static"
	fi
}

# dk_initrd_root DIR: a skeleton initramfs in DIR with busybox and every
# applet linked at pack time, so /init (a shell script) has /bin/sh.
dk_initrd_root() {
	local ird=$1 f
	mkdir -p "$ird"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,root,etc}
	cp /bin/busybox "$ird/bin/busybox"
	while read -r f; do
		[ -e "$ird/$f" ] || ln -s /bin/busybox "$ird/$f"
	done < <(/bin/busybox --list-full)
}

# dk_add_modules KROOT KVER IRD MODULES...: copy each wanted module and the
# modules it needs from the unpacked package KROOT into the initramfs IRD,
# run depmod there, and list the loaded names in IRD/etc/kit-modules (in
# the order given; modprobe resolves the rest).  A module the kernel has
# built in or lacks is skipped with a note.
dk_add_modules() {
	local kroot=$1 kver=$2 ird=$3 m f list="" path rel
	shift 3
	mkdir -p "$ird/lib/modules/$kver"
	depmod -b "$kroot" "$kver"
	for m in "$@"; do
		if grep -Eq "/${m//_/[-_]}\.ko" "$kroot/lib/modules/$kver/modules.builtin" 2>/dev/null; then
			say "module $m is built in"
			continue
		fi
		if ! f=$(modprobe -d "$kroot" -S "$kver" --show-depends "$m" 2>/dev/null); then
			say "module $m not in this kernel; skipped"
			continue
		fi
		list="$list $m"
		while read -r path; do
			rel=${path#"$kroot"/}
			mkdir -p "$ird/$(dirname "$rel")"
			cp "$path" "$ird/$rel"
		done < <(echo "$f" | sed -n 's/^insmod \([^ ]*\).*/\1/p')
	done
	cp "$kroot/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$ird/lib/modules/$kver/" 2>/dev/null || true
	depmod -b "$ird" "$kver"
	echo "$list" | tr ' ' '\n' | sed '/^$/d' >"$ird/etc/kit-modules"
}

# dk_pack IRD OUT: a gzip'd newc cpio of IRD.  Fixed times and owners make
# the archive the same bytes on every build.
dk_pack() {
	find "$1" -exec touch -h -d @0 {} +
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$2"
}
