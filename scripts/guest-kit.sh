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
#     config            the kernel's .config (for reference)
#     kit.env           the paths below, as shell assignments
#     stamp             "<package> <version>" the kit was built from
#
# Usage: scripts/guest-kit.sh [--force] [--quiet]
#   Prints, on stdout, shell assignments a caller can eval:
#     SHOAL_KIT_DIR=... SHOAL_KIT_BZIMAGE=... SHOAL_KIT_VMLINUX=...
#     SHOAL_KIT_INITRD=... SHOAL_KIT_KVER=... SHOAL_KIT_PKG=...
#   Progress goes to stderr.  Exit status: 0 kit ready; 3 the kernel package
#   could not be found or downloaded (no network or no Debian mirror: callers
#   treat this as a reason to skip); 1 anything else (a bug to look at).
#
# Idempotent: when the stamp matches the current version of the package that
# linux-image-cloud-amd64 depends on, nothing is rebuilt.  Offline, an
# existing kit is used as it is.  A lock keeps concurrent callers (a test and
# a benchmark, say) from building over each other; the new kit is built in a
# scratch directory and moved into place only when complete.
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
PATH=$PATH:/usr/sbin:/sbin          # depmod, modprobe for a non-root user
NEW=""
WORK=""
CACHE=${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}
KIT=$CACHE/kit
META=linux-image-cloud-amd64
# Modules wanted in the initramfs (their dependencies come along).  Names as
# modprobe knows them; a name the kernel has built in or lacks is skipped.
MODULES="virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
	virtio_blk failover net_failover virtio_net virtio_console virtio_rng
	virtio_balloon vmw_vsock_virtio_transport"

FORCE=0
QUIET=0
for a in "$@"; do
	case $a in
	--force) FORCE=1 ;;
	--quiet|-q) QUIET=1 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "guest-kit: unknown argument: $a" >&2; exit 1 ;;
	esac
done

say() { [ "$QUIET" -eq 1 ] || echo "guest-kit: $*" >&2; }
die() { echo "guest-kit: $1" >&2; exit "${2:-1}"; }

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"

# need_tools: make sure the host tools exist, installing them once if not.
need_tools() {
	local t missing=""
	for t in apt-get apt-cache dpkg-deb lz4 cpio depmod modprobe readelf gzip flock; do
		command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
	done
	[ -x /bin/busybox ] || missing="$missing busybox"
	[ -z "$missing" ] && return 0
	say "missing tools:$missing; running scripts/install-deps.sh"
	"$ROOT/scripts/install-deps.sh" >&2 || die "install-deps.sh failed"
}

# need_static_busybox: the initramfs has no libc, so busybox must be the
# static build (package busybox-static, not busybox).
need_static_busybox() {
	if [[ $(readelf -l /bin/busybox 2>/dev/null) == *INTERP* ]]; then
		die "/bin/busybox is dynamically linked; install busybox-static"
	fi
}

# resolve_pkg: print "<versioned package> <version>" for the cloud kernel,
# from the local apt lists (no network unless they lack it).
resolve_pkg() {
	# The metapackage pins its kernel: "Depends: linux-image-6.1.0-56-cloud-amd64
	# (= 6.1.192-2)".  One apt-cache call (about 0.5 s) keeps the no-op quick.
	local dep
	dep=$(apt-cache show --no-all-versions "$META" 2>/dev/null |
		sed -n 's/^Depends: .*\(linux-image-[0-9][^ ,]*-cloud-amd64\) (= \([^)]*\)).*/\1 \2/p' | head -1)
	if [ -z "$dep" ]; then
		# A metapackage that does not pin a version: ask apt-cache depends.
		local pkg ver
		pkg=$(apt-cache depends "$META" 2>/dev/null |
			sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -1)
		[ -n "$pkg" ] || return 1
		ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -1)
		[ -n "$ver" ] || return 1
		dep="$pkg $ver"
	fi
	echo "$dep"
}

print_paths() {
	cat "$KIT/kit.env"
	say "kit ready in $KIT ($(cat "$KIT/stamp"))"
}

kit_complete() {
	[ -f "$KIT/stamp" ] && [ -f "$KIT/kit.env" ] && [ -s "$KIT/bzImage" ] &&
		[ -s "$KIT/vmlinux" ] && [ -s "$KIT/initrd.cpio.gz" ]
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
	local kroot=$1 kver=$2 out=$3 ird m f list
	ird=$(mktemp -d "$WORK/initrd.XXXXXX")
	mkdir -p "$ird"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,root,etc,lib/modules/"$kver"}
	cp /bin/busybox "$ird/bin/busybox"
	# Applet links at pack time, so /init (a shell script) has /bin/sh.
	while read -r f; do
		[ -e "$ird/$f" ] || ln -s /bin/busybox "$ird/$f"
	done < <(/bin/busybox --list-full)

	# Full modules.dep of the package, to find each wanted module's file and
	# the modules it needs; then copy that closure and depmod the initramfs.
	depmod -b "$kroot" "$kver"
	list=""
	for m in $MODULES; do
		if grep -Eq "/${m//_/[-_]}\.ko" "$kroot/lib/modules/$kver/modules.builtin" 2>/dev/null; then
			say "module $m is built in"
			continue
		fi
		if ! f=$(modprobe -d "$kroot" -S "$kver" --show-depends "$m" 2>/dev/null); then
			say "module $m not in this kernel; skipped"
			continue
		fi
		list="$list $m"
		echo "$f" | sed -n 's/^insmod \([^ ]*\).*/\1/p' | while read -r path; do
			local rel=${path#"$kroot"/}
			mkdir -p "$ird/$(dirname "$rel")"
			cp "$path" "$ird/$rel"
		done
	done
	cp "$kroot/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$ird/lib/modules/$kver/" 2>/dev/null || true
	depmod -b "$ird" "$kver"
	echo "$list" | tr ' ' '\n' | sed '/^$/d' >"$ird/etc/kit-modules"
	write_init "$ird/init"
	# Fixed times and owners make the archive the same bytes on every build.
	find "$ird" -exec touch -h -d @0 {} +
	(cd "$ird" && find . -mindepth 1 | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$out"
	say "initrd: $(wc -l <"$ird/etc/kit-modules") modules, $(du -k "$out" | cut -f1) KiB"
}

# write_init FILE: the initramfs's /init.  It must never exit (the kernel
# panics when init dies), so the shell is restarted in a loop.  Kernel
# command-line words it understands: kit.poweroff (power off right after the
# ready line, for scripted boots), kit.quiet (no modprobe messages).
write_init() {
	cat >"$1" <<'EOF'
#!/bin/sh
# /init of the Shoal guest kit (written by scripts/guest-kit.sh).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
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
echo "shoal-kit: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus, $(sed -n 's/^MemTotal: *//p' /proc/meminfo)"
echo "shoal-kit: init ready"
[ $off = 1 ] && poweroff -f
while :; do
	setsid cttyhack sh -l
	echo "shoal-kit: shell exited; starting another"
done
EOF
	chmod 755 "$1"
}

build_kit() {
	local pkg=$1 ver=$2 new kroot kver deb
	NEW=$(mktemp -d "$CACHE/kit.new.XXXXXX")
	WORK=$(mktemp -d "$CACHE/work.XXXXXX")
	trap 'rm -rf "$WORK" "$NEW"' EXIT
	new=$NEW
	chmod 755 "$new"
	say "downloading $pkg $ver"
	(cd "$WORK" && apt-get download -q "$pkg=$ver" >/dev/null 2>"$WORK/apt.err") || {
		cat "$WORK/apt.err" >&2
		die "apt-get download $pkg failed (no network or no Debian mirror?)" 3
	}
	deb=$(ls "$WORK"/*.deb)
	kroot=$WORK/pkg
	dpkg-deb -x "$deb" "$kroot"
	kver=$(ls "$kroot/lib/modules" | head -1)
	if [ -z "$kver" ] || [ ! -f "$kroot/boot/vmlinuz-$kver" ]; then
		die "$deb: no vmlinuz or modules in it"
	fi
	cp "$kroot/boot/vmlinuz-$kver" "$new/bzImage"
	cp "$kroot/boot/config-$kver" "$new/config"
	extract_vmlinux "$new/bzImage" "$new/vmlinux" ||
		die "no LZ4 payload with a PVH-noted ELF found in $kroot/boot/vmlinuz-$kver"
	build_initrd "$kroot" "$kver" "$new/initrd.cpio.gz"
	cat >"$new/kit.env" <<EOF
SHOAL_KIT_DIR=$KIT
SHOAL_KIT_BZIMAGE=$KIT/bzImage
SHOAL_KIT_VMLINUX=$KIT/vmlinux
SHOAL_KIT_INITRD=$KIT/initrd.cpio.gz
SHOAL_KIT_KVER=$kver
SHOAL_KIT_PKG="$pkg $ver"
EOF
	echo "$pkg $ver" >"$new/stamp"
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
	need_tools
	need_static_busybox
	if ! pv=$(resolve_pkg); then
		say "$META not in the apt lists; running apt-get update"
		$SUDO apt-get update -qq >&2 2>/dev/null || true
		pv=$(resolve_pkg) || pv=""
	fi
	if [ -z "$pv" ]; then
		if kit_complete; then
			say "cannot resolve $META (offline?); using the existing kit"
			print_paths
			return 0
		fi
		die "cannot resolve $META to a kernel package (no apt lists or no network)" 3
	fi
	if [ "$FORCE" -eq 0 ] && kit_complete && [ "$(cat "$KIT/stamp")" = "$pv" ]; then
		print_paths
		return 0
	fi
	# shellcheck disable=SC2086
	build_kit $pv
	print_paths
}

main
