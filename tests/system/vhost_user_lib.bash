# tests/system/vhost_user_lib.bash - sourced by tests/system/vhost_user_*.sh
# (after lib.sh).  Linux's own virtio drivers, in the guest kit's kernel
# under QEMU's software CPU (TCG), drive Shoal's device models through
# `shoal vhost-user` (environment.md section 4).
#
#   vu_require DEVICE        SKIP (exit 0) unless the kit, QEMU and DEVICE exist
#   vu_initrd OUT BODY       the kit's initramfs plus an overlay whose /init
#                            loads the modules, runs BODY (shell), powers off
#   vu_backend NAME ARGS...  start `shoal vhost-user ARGS` in the background,
#                            wait for its socket; $VU_PID, log $TMP/NAME.log
#   vu_backend_stop NAME     SIGTERM it; FAIL unless it exits 0 in 10 s
#   vu_qemu LOG INITRD ARGS  boot QEMU (TCG, memfd memory shared) with the
#                            device ARGS; console to LOG; bounded by
#                            $VU_QEMU_TIMEOUT seconds (default 120)
#
# The guest prints "vu-test: ..." lines; the scripts grep them.

VU_QEMU=${VU_QEMU:-qemu-system-x86_64}
VU_QEMU_TIMEOUT=${VU_QEMU_TIMEOUT:-120}

# vu_require DEVICE: skip the whole script with a reason when something is missing.
vu_require() {
	local kit rc
	if [ ! -x "$SHOAL" ]; then skip "$1" "$SHOAL not built"; exit 0; fi
	if ! command -v "$VU_QEMU" >/dev/null; then skip "$1" "$VU_QEMU not installed"; exit 0; fi
	if ! "$VU_QEMU" -device help 2>/dev/null | grep -q "\"$1\""; then
		skip "$1" "this QEMU has no $1 device"; exit 0
	fi
	kit=$("$ROOT/scripts/guest-kit.sh" -q 2>"$TMP/kit.err"); rc=$?
	if [ $rc -ne 0 ]; then
		skip "$1" "guest kit not available (guest-kit.sh status $rc: $(tail -1 "$TMP/kit.err"))"
		exit 0
	fi
	eval "$kit"
}

# vu_initrd OUT BODY: write the kit's initramfs with our /init appended.
vu_initrd() {
	local out=$1 body=$2 ov=$TMP/overlay.$$
	rm -rf "$ov"; mkdir -p "$ov"
	cat >"$ov/init" <<EOF
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in \$(cat /etc/kit-modules); do modprobe "\$m" 2>/dev/null; done
echo "vu-test: init"
$body
echo "vu-test: done"
sync
poweroff -f
EOF
	chmod 755 "$ov/init"
	(cd "$ov" && find . | cpio -o -H newc -R 0:0 --quiet | gzip) >"$TMP/overlay.cpio.gz"
	cat "$SHOAL_KIT_INITRD" "$TMP/overlay.cpio.gz" >"$out"
}

# vu_backend NAME ARGS...: start the back end; VU_PID gets its pid.
vu_backend() {
	local name=$1 sock i
	shift
	sock=$(echo "$@" | sed -n 's/.*--socket \([^ ]*\).*/\1/p')
	"$SHOAL" vhost-user "$@" >>"$TMP/$name.log" 2>&1 &
	VU_PID=$!
	for i in $(seq 100); do
		[ -S "$sock" ] && return 0
		kill -0 $VU_PID 2>/dev/null || break
		sleep 0.05
	done
	fail "$name starts" "no socket $sock: $(tail -3 "$TMP/$name.log")"
	return 1
}

# vu_backend_stop NAME PID: SIGTERM and expect a clean exit 0.
vu_backend_stop() {
	local name=$1 pid=$2 i rc
	kill -TERM "$pid" 2>/dev/null
	for i in $(seq 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid"
		fail "$name stops on SIGTERM" "still running after 10 s"
		return 1
	fi
	wait "$pid"; rc=$?
	if [ $rc -eq 0 ]; then pass "$name stops on SIGTERM (status 0)"; else fail "$name stops on SIGTERM" "status $rc"; fi
}

# vu_qemu LOG INITRD ARGS...: one bounded boot; returns QEMU's status.
vu_qemu() {
	local log=$1 initrd=$2
	shift 2
	timeout "$VU_QEMU_TIMEOUT" "$VU_QEMU" -accel tcg -m 256 -no-user-config -nodefaults \
		-object memory-backend-memfd,id=mem,size=256M,share=on \
		-machine q35,memory-backend=mem -display none -serial "file:$log" -no-reboot \
		-kernel "$SHOAL_KIT_BZIMAGE" -initrd "$initrd" \
		-append "console=ttyS0 quiet panic=-1" "$@" >"$log.qemu" 2>&1
}

# vu_line LOG KEY: the value after "vu-test: KEY " in LOG (first match).
vu_line() {
	sed -n "s/^vu-test: $2 //p" "$1" | tr -d '\r' | head -1
}
