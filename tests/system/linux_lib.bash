# tests/system/linux_lib.bash - sourced by tests/system/slow_linux_*.sh (after
# lib.sh).  Not a test itself (scripts/test.sh runs *.sh only).
#
# Debian's own kernel (the guest kit, scripts/guest-kit.sh) boots under
# `shoal run` on real KVM, to busybox init, and Linux's own drivers use
# Shoal's in-process devices.  A test writes a guest script (the hook),
# packs it with any files it needs into a small initramfs appended to the
# kit's (Linux unpacks concatenated archives in order), and boots with
# `kit.run=/test/hook`: the kit's init runs it once user space is up.  The
# hook reports facts as console lines "linux-test: KEY VALUE"; the host
# side judges them against what it knows (checksums, byte counts) and
# against independent tools (qemu-img, e2fsck, debugfs).
#
#   linux_require             SKIP (exit 0) without /dev/kvm or the kit, saying
#                             how to run the script in the KVM box; FAIL
#                             (exit 1) when Shoal or tests/linux is not built
#   linux_in_netns            run this script again inside a network namespace
#                             of its own (root only), so its TAPs and addresses
#                             never touch the host's; SKIP without root
#   linux_tap NAME            a TAP with 10.0.2.1/24 for the host (in the netns)
#   linux_initrd OUT HOOK [FILE...]
#                             the kit's initramfs plus /test/hook (the shell
#                             text HOOK after a small prelude) and FILEs in /test
#   linux_start NAME KERNEL INITRD [ARG...]
#                             `shoal run` in the background: 2 vCPUs, 512 MiB,
#                             console in $TMP/NAME.log, ARGs added; LINUX_PID
#   linux_wait NAME TEXT [S]  wait (bounded) for "linux-test: TEXT" on the console
#   linux_wait_file FILE TEXT [S]  the same for TEXT in any FILE
#   linux_wait_exit [S]       wait (bounded, then SIGKILL) for the VMM to exit;
#                             its status in LINUX_RC
#   linux_poweroff_ok NAME    PASS when the VMM ended with status 0 after Linux
#                             powered off through ACPI
#   linux_fact NAME KEY       the VALUE of the last "linux-test: KEY VALUE"
#   linux_same WHAT GOT WANT  PASS if equal, else FAIL showing both
#   linux_why NAME            a one-line account of a boot, for FAIL messages
#   hostside ARG...           tests/linux/hostside.py (host ends of sockets)
#   linux_listening PORT      wait (bounded) for a TCP listener on PORT here
#   quiet CMD...              CMD, its output thrown away (for check)
#   sha FILE...               SHA-256 of the files' bytes (the guest has sha too)
#
# Every wait is bounded by LINUX_TIMEOUT seconds (default 300; a boot takes
# about 10 s in the KVM box), and `shoal run --timeout` bounds each VM too.
# LINUX_KEEP=DIR keeps each boot's console log and VMM messages in DIR.

LINUX_TIMEOUT=${LINUX_TIMEOUT:-300}
LINUX_BINS=$BUILD/tests/linux
LINUX_PID=""
LINUX_RC=""
LINUX_CMDLINE="console=ttyS0 quiet kit.quiet kit.run=/test/hook"

# linux_keep: with LINUX_KEEP=DIR, keep the consoles and VMM messages there.
linux_keep() {
	[ -n "${LINUX_KEEP:-}" ] || return 0
	mkdir -p "$LINUX_KEEP" && cp "$TMP"/*.log "$TMP"/*.vmm "$TMP"/*.txt "$LINUX_KEEP"/ 2>/dev/null
	return 0
}

# linux_cleanup: end the VMM we started (by pid) and remove $TMP.
linux_cleanup() {
	if [ -n "$LINUX_PID" ]; then
		kill -9 "$LINUX_PID" 2>/dev/null
		wait "$LINUX_PID" 2>/dev/null
	fi
	linux_keep
	rm -rf "$TMP"
}
trap linux_cleanup EXIT

linux_script() { basename "$0"; }

linux_require() {
	local kit rc
	if [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
		skip "$(linux_script)" "/dev/kvm is not available here; run it in the KVM box: scripts/guest-kit.sh && scripts/kvm-box.sh -- env BUILD=$BUILD bash tests/system/$(linux_script)"
		exit 0
	fi
	if [ ! -x "$SHOAL" ] || [ ! -d "$LINUX_BINS" ]; then
		fail "$(linux_script)" "$SHOAL or $LINUX_BINS is not built (make BUILD=$BUILD tests)"
		exit 1
	fi
	kit=$("$ROOT/scripts/guest-kit.sh" -q 2>"$TMP/kit.err"); rc=$?
	if [ $rc -eq 3 ]; then
		skip "$(linux_script)" "guest kit not available ($(tail -1 "$TMP/kit.err")); build it with scripts/guest-kit.sh where a Debian mirror is reachable"
		exit 0
	elif [ $rc -ne 0 ]; then
		fail "$(linux_script)" "scripts/guest-kit.sh failed with status $rc: $(tail -1 "$TMP/kit.err")"
		exit 1
	fi
	eval "$kit"
}

linux_in_netns() {
	local ns rc
	[ -n "${LINUX_NETNS:-}" ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		skip "$(linux_script)" "needs root for a network namespace and a TAP"
		exit 0
	fi
	ns=shoal-linux-$$
	if ! ip netns add "$ns" 2>"$TMP/netns.err"; then
		skip "$(linux_script)" "cannot make a network namespace: $(cat "$TMP/netns.err")"
		exit 0
	fi
	BUILD=$BUILD LINUX_NETNS=$ns ip netns exec "$ns" bash "$0" "$@"
	rc=$?
	ip netns del "$ns"
	exit $rc
}

# linux_tap NAME: a TAP NAME with the host's address 10.0.2.1/24, up (the
# guest takes 10.0.2.15); inside linux_in_netns only.  FAIL and exit if not.
linux_tap() {
	if ! ip tuntap add dev "$1" mode tap 2>"$TMP/tap.err" || ! ip addr add 10.0.2.1/24 dev "$1" ||
		! ip link set "$1" up || ! ip link set lo up; then
		fail "TAP $1 with 10.0.2.1/24" "$(cat "$TMP/tap.err")"
		finish
	fi
}

linux_initrd() {
	local out=$1 hook=$2 ov=$TMP/overlay.$RANDOM
	shift 2
	mkdir -p "$ov/test"
	{
		echo '#!/bin/sh'
		echo '# written by tests/system/linux_lib.bash for one boot'
		echo 't() { echo "linux-test: $*"; }'
		echo 'sha() { sha256sum "$@" | cut -c1-64; }'
		echo "$hook"
	} >"$ov/test/hook"
	[ $# -gt 0 ] && cp "$@" "$ov/test/"
	(cd "$ov" && find . | cpio -o -H newc -R 0:0 --quiet | gzip) >"$ov.cpio.gz" || return 1
	cat "$SHOAL_KIT_INITRD" "$ov.cpio.gz" >"$out"
}

linux_start() {
	local name=$1 kernel=$2 initrd=$3
	shift 3
	: >"$TMP/$name.log"
	"$SHOAL" run --kernel "$kernel" --initrd "$initrd" --cpus 2 --memory 512M \
		--cmdline "$LINUX_CMDLINE" --console "file:$TMP/$name.log" \
		--timeout $((LINUX_TIMEOUT + 60)) "$@" </dev/null >"$TMP/$name.vmm" 2>&1 &
	LINUX_PID=$!
}

linux_wait() { linux_wait_file "$TMP/$1.log" "linux-test: $2" "${3:-}"; }

# linux_wait_file FILE TEXT [S]: wait (bounded, and only while the VMM
# runs) until FILE has TEXT.
linux_wait_file() {
	local end=$((SECONDS + ${3:-$LINUX_TIMEOUT}))
	while [ $SECONDS -lt $end ]; do
		grep -qF -- "$2" "$1" 2>/dev/null && return 0
		kill -0 "$LINUX_PID" 2>/dev/null || break
		sleep 0.2
	done
	grep -qF -- "$2" "$1" 2>/dev/null
}

# shellcheck disable=SC2120  # callers in the test scripts pass S
linux_wait_exit() {
	local end=$((SECONDS + ${1:-$LINUX_TIMEOUT}))
	while kill -0 "$LINUX_PID" 2>/dev/null && [ $SECONDS -lt $end ]; do
		sleep 0.2
	done
	if kill -0 "$LINUX_PID" 2>/dev/null; then
		kill -9 "$LINUX_PID"
		wait "$LINUX_PID" 2>/dev/null
		LINUX_RC="still running after ${1:-$LINUX_TIMEOUT}s (killed)"
	else
		wait "$LINUX_PID"
		LINUX_RC=$?
	fi
	LINUX_PID=""
	[ "$LINUX_RC" = 0 ]
}

linux_poweroff_ok() {
	if linux_wait_exit && grep -q 'reboot: Power down' "$TMP/$1.log"; then
		pass "$1: \`poweroff\` in the guest ends shoal run with status 0"
	else
		fail "$1: \`poweroff\` in the guest ends shoal run with status 0" "$(linux_why "$1")"
	fi
}

linux_fact() {
	sed -n "s/.*linux-test: $2 //p" "$TMP/$1.log" | tr -d '\r' | tail -1
}

linux_same() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got \"$2\", expected \"$3\""; fi
}

linux_why() {
	local log=$TMP/$1.log
	printf 'VMM status %s; last console line: %s; VMM said: %s' "${LINUX_RC:-running}" \
		"$(tr -d '\r' <"$log" | grep -v '^$' | tail -1 | cut -c1-160)" \
		"$(grep -m1 . "$TMP/$1.vmm" 2>/dev/null | cut -c1-160)"
}

hostside() { python3 "$ROOT/tests/linux/hostside.py" "$@"; }

# linux_listening PORT: wait (bounded) until a TCP socket listens on PORT here.
linux_listening() {
	local hex end=$((SECONDS + 60))
	hex=$(printf ':%04X ' "$1")
	while [ $SECONDS -lt $end ]; do
		awk '$4 == "0A" { print $2 " " }' /proc/net/tcp | grep -q -- "$hex" && return 0
		sleep 0.1
	done
	return 1
}

# quiet CMD...: CMD with its output thrown away (for lib.sh's check).
quiet() { "$@" >/dev/null 2>&1; }

# sha FILE...: the SHA-256 of the files' bytes, as the guest's sha() prints it.
sha() { cat "$@" | sha256sum | cut -c1-64; }
