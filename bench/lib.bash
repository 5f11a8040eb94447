# bench/lib.bash - sourced by the bench/*.sh scripts: figures, and Linux
# guests for the benchmarks that need Linux's own drivers.
#
# Figures:
#   median              median of the numbers on stdin, one per line (0 if none)
#   ratio A B           A / B to two places, "-" when B is 0
#   bench_skip MSG      say why the benchmark cannot run here, exit 77
#
# Linux guests (bench/linux_blk.sh, bench/linux_net.sh).  The guest is
# Debian's cloud kernel and the busybox initramfs of the guest kit
# (scripts/guest-kit.sh, docs/linux-guests.md), unchanged.  A benchmark
# writes a guest script (the hook), packs it as /bench/hook into a small
# initramfs appended to the kit's (Linux unpacks concatenated archives in
# order) and boots with `kit.run=/bench/hook`: the kit's init runs it once
# busybox init is up.  The hook reports on the serial console in lines
# "bench: KEY VALUE..." and ends with "bench: done"; the host side then
# ends the VMM (SIGKILL, by pid: the figures are in, and the kit's orderly
# poweroff would only add a second to every boot).  `kit.poweroff` is on
# the command line all the same: without it the kit starts a shell on the
# console, whose prompt lands in the middle of the hook's lines.
#
#   bench_require_linux     /dev/kvm, QEMU, cpio, Shoal built and the kit
#                           (exit 77 without them); sets and exports
#                           SHOAL_KIT_* (already set: used as they are)
#   bench_initrd OUT HOOK   the kit's initramfs plus /bench/hook: the shell
#                           text HOOK after a prelude that defines
#                           r KEY VALUE...  (prints "bench: KEY VALUE...")
#                           now_us          (the guest clock in microseconds)
#                           and reports "bench: uptime S", the guest's
#                           /proc/uptime as the hook starts (the kernel's
#                           and the kit's boot, without the VMM's start)
#   bench_start LOG ARGV... the VMM ARGV in the background (stdin /dev/null,
#                           its own messages in LOG.vmm); its pid in BENCH_PID
#   bench_wait LOG TEXT [S] wait (bounded) for "bench: TEXT" in LOG; 1 if the
#                           VMM exited or S seconds passed first
#   bench_stop              end the VMM bench_start started, and reap it
#   bench_cleanup           bench_stop, then remove $TMP; with BENCH_KEEP=DIR
#                           the consoles (TMP/*.log) and VMM messages
#                           (*.log.vmm) are copied to DIR first
#   bench_shoal LOG ARG...  bench_start `shoal run` on the kit's bzImage and
#                           $BENCH_INITRD: 2 vCPUs, 512 MiB, console in LOG,
#                           ARGs (devices) added
#   bench_qemu MACHINE LOG ARG...
#                           the same for qemu-system-x86_64 -accel kvm
#                           -cpu host -M MACHINE (-cpu host: the CPU model
#                           Shoal's default template shows the guest)
#   bench_facts LOG KEY     the text after "bench: KEY " on each line of LOG
#   bench_uptimes VMM...    the median of the uptimes in $TMP/VMM.uptime
#   virtio_names BITS NAMES the names of the virtio feature bits set
#
# Every wait is bounded by BENCH_TIMEOUT seconds (default 240), after which
# the caller stops the VMM, so a guest that hangs costs one bounded wait.
# A benchmark calls bench_cleanup from its EXIT trap.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$BENCH_ROOT/build}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}
BENCH_PID=""
BENCH_CMDLINE="console=ttyS0 quiet kit.quiet kit.poweroff kit.run=/bench/hook"
BENCH_MEMORY=512M
BENCH_CPUS=2

median() {
	sort -n | awk '{ a[NR] = $1 }
		END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2); else print 0 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

bench_skip() { echo "$(basename "$0"): $1; skipped" >&2; exit 77; }

bench_require_linux() {
	local kit t
	[ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] ||
		bench_skip "/dev/kvm is not available; run it in the KVM box: scripts/kvm-box.sh -- $0"
	for t in qemu-system-x86_64 cpio gzip timeout; do
		command -v $t >/dev/null || bench_skip "$t is not installed"
	done
	[ -x "$BUILD/shoal" ] || { echo "$(basename "$0"): build $BUILD/shoal first (make)" >&2; exit 1; }
	# A kit named in the environment (a script run again inside a network
	# namespace, say) is used as it is.
	if [ ! -r "${SHOAL_KIT_BZIMAGE:-}" ] || [ ! -r "${SHOAL_KIT_INITRD:-}" ]; then
		kit=$("$BENCH_ROOT/scripts/guest-kit.sh" -q) ||
			bench_skip "the guest kit is not available (build it on the host: scripts/guest-kit.sh)"
		eval "$kit"
	fi
	export SHOAL_KIT_BZIMAGE SHOAL_KIT_INITRD SHOAL_KIT_KVER="${SHOAL_KIT_KVER:-}"
}

bench_initrd() {
	local out=$1 hook=$2 ov
	ov=$(mktemp -d "${TMPDIR:-/tmp}/bench-initrd.XXXXXX")
	mkdir -p "$ov/bench"
	{
		echo '#!/bin/sh'
		echo '# written by bench/lib.bash for one benchmark boot'
		echo 'r() { echo "bench: $*"; }'
		echo "now_us() { adjtimex | awk '/tv_sec/ { s = \$2 } /tv_usec/ { u = \$2 } END { printf \"%s%06d\\n\", s, u }'; }"
		echo 'r uptime $(cut -d" " -f1 /proc/uptime)'
		echo "$hook"
		echo 'r done'
	} >"$ov/bench/hook"
	(cd "$ov" && find . | cpio -o -H newc -R 0:0 --quiet | gzip) >"$ov.cpio.gz" || return 1
	cat "$SHOAL_KIT_INITRD" "$ov.cpio.gz" >"$out"
	rm -rf "$ov" "$ov.cpio.gz"
}

bench_start() {
	local log=$1
	shift
	: >"$log"
	"$@" </dev/null >"$log.vmm" 2>&1 &
	BENCH_PID=$!
}

bench_wait() {
	local log=$1 text="bench: $2" end=$((SECONDS + ${3:-$BENCH_TIMEOUT}))
	while [ $SECONDS -lt $end ]; do
		grep -qF -- "$text" "$log" && return 0
		kill -0 "$BENCH_PID" 2>/dev/null || break
		sleep 0.1
	done
	grep -qF -- "$text" "$log"
}

bench_stop() {
	[ -n "$BENCH_PID" ] || return 0
	kill -KILL "$BENCH_PID" 2>/dev/null
	wait "$BENCH_PID" 2>/dev/null
	BENCH_PID=""
}

bench_cleanup() {
	bench_stop
	if [ -n "${BENCH_KEEP:-}" ] && [ -d "${TMP:-}" ]; then
		mkdir -p "$BENCH_KEEP" && cp "$TMP"/*.log "$TMP"/*.log.vmm "$BENCH_KEEP"/ 2>/dev/null
	fi
	[ -d "${TMP:-}" ] && rm -rf "$TMP"
}

bench_shoal() {
	local log=$1
	shift
	bench_start "$log" "$BUILD/shoal" run --kernel "$SHOAL_KIT_BZIMAGE" --initrd "$BENCH_INITRD" \
		--cpus "$BENCH_CPUS" --memory "$BENCH_MEMORY" --cmdline "$BENCH_CMDLINE" \
		--console "file:$log" --timeout "$BENCH_TIMEOUT" "$@"
}

bench_qemu() {
	local machine=$1 log=$2
	shift 2
	bench_start "$log" qemu-system-x86_64 -accel kvm -cpu host -M "$machine" \
		-smp "$BENCH_CPUS" -m "$BENCH_MEMORY" -display none -nodefaults -no-user-config \
		-no-reboot -serial "file:$log" -kernel "$SHOAL_KIT_BZIMAGE" -initrd "$BENCH_INITRD" \
		-append "$BENCH_CMDLINE" "$@"
}

# bench_uptimes VMM...: "VMM S" for each, S the median guest uptime at the
# hook's start over the boots in $TMP/VMM.uptime.
bench_uptimes() {
	local v
	for v in "$@"; do
		printf ' %s %s s' "$v" "$(median <"$TMP/$v.uptime" 2>/dev/null || echo -)"
	done
	echo
}

# virtio_names BITS NAMES: the names of the feature bits set in BITS (the
# 0/1 string of /sys/bus/virtio/devices/*/features, bit 0 first), from
# NAMES ("BIT:NAME ...") and the transport bits every device has.
virtio_names() {
	awk -v f="$1" -v names="$2 28:INDIRECT_DESC 29:EVENT_IDX 32:VERSION_1 34:RING_PACKED 35:IN_ORDER" \
		'BEGIN { n = split(names, a, " "); for (i = 1; i <= n; i++) { split(a[i], kv, ":")
			if (substr(f, kv[1] + 1, 1) == "1") out = out (out ? " " : "") kv[2] }; print out }'
}

bench_facts() { tr -d '\r' <"$1" | sed -n "s/.*bench: $2 //p"; }
