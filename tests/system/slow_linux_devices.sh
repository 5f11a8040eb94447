#!/bin/bash
# slow_linux_devices.sh - Linux's drivers on Shoal's in-process virtio-rng,
# virtio-console and virtio-vsock.
# tier: kvm
#
# One boot of Debian's bzImage (2 vCPUs, busybox init) with --rng,
# --virtio-console file:OUT,in=IN, --vsock cid=3,socket=S and --api-socket:
#   - virtio-rng: /dev/hwrng is backed by virtio_rng.0; two 64 KiB reads
#     arrive whole, differ, and use all 256 byte values; the control socket's
#     metrics show the device gave the driver at least those bytes;
#   - virtio-console: the guest puts /dev/hvc0 in raw mode without echo and
#     writes "hvc-ready" lines to it, once a second, until input arrives;
#     when the first reaches OUT the host appends 48 KiB of random bytes to
#     IN (empty until then: Linux's driver throws away what arrives before
#     its port is set up).  The guest reports the size and SHA-256 of what it
#     read, then writes 32 KiB of random bytes: OUT must be "hvc-ready"
#     lines followed by exactly those bytes;
#   - vsock, guest to host: a static guest program (tests/linux/vsock_echo.c)
#     connects to CID 2 port 5000, which Shoal forwards to the Unix socket
#     S_5000 where the host echoes; 512 KiB go there and back, and the host
#     checks what it received;
#   - vsock, host to guest: the host connects to S, says "CONNECT 6000",
#     gets "OK", and 512 KiB come back from the guest's echo server;
#   - `poweroff` in the guest ends shoal run with status 0.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
for t in cpio python3 jq base64; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

head -c 49152 /dev/urandom >"$TMP/hvc.data"
IN_LEN=49152
: >"$TMP/hvc.in"
head -c 32768 /dev/urandom >"$TMP/hvc.payload"
head -c 524288 /dev/urandom >"$TMP/vsock.dat"
head -c 524288 /dev/urandom >"$TMP/vsock-host.dat"
VSOCK=$TMP/vsock.sock
API=$TMP/api.sock

linux_initrd "$TMP/initrd" "
t \"rng-current \$(cat /sys/class/misc/hw_random/rng_current)\"
head -c 65536 /dev/hwrng >/tmp/r1
head -c 65536 /dev/hwrng >/tmp/r2
cmp -s /tmp/r1 /tmp/r2 && same=same || same=differ
t \"rng \$(wc -c </tmp/r1) \$(wc -c </tmp/r2) \$same \$(od -An -v -tx1 /tmp/r1 | tr -s ' ' '\\n' | sort -u | grep -c .)\"
mount -t debugfs debugfs /sys/kernel/debug
exec 3<>/dev/hvc0
stty raw -echo <&3
(i=0; while [ \$i -lt 60 ] && [ ! -e /tmp/hvc.done ]; do echo hvc-ready >&3; sleep 1; i=\$((i + 1)); done) &
timeout 60 head -c $IN_LEN <&3 >/tmp/hvc.in
touch /tmp/hvc.done
wait \$!
t \"hvc-in \$(wc -c </tmp/hvc.in) \$(sha /tmp/hvc.in)\"
t \"hvc-port \$(grep -h -e bytes_received -e bytes_discarded /sys/kernel/debug/virtio-ports/* | tr '\\n' ' ')\"
cat /test/hvc.payload >&3
t \"hvc-out written\"
/test/vsock_echo connect 2 5000 /test/vsock.dat >/tmp/vc 2>&1
t \"vsock-connect \$? \$(cat /tmp/vc)\"
/test/vsock_echo serve 6000 >/tmp/vs 2>&1 &
t \"vsock-listening\"
wait \$!
t \"vsock-serve \$? \$(cat /tmp/vs)\"
poweroff" "$TMP/hvc.payload" "$TMP/vsock.dat" "$LINUX_BINS/vsock_echo"

hostside vsock-echo-server "${VSOCK}_5000" "$TMP/vsock.got" >"$TMP/vsock-server.out" 2>&1 &
SERVER=$!
linux_start dev "$SHOAL_KIT_BZIMAGE" "$TMP/initrd" --rng \
	--virtio-console "file:$TMP/hvc.out,in=$TMP/hvc.in" \
	--vsock "cid=3,socket=$VSOCK" --api-socket "$API"

if linux_wait_file "$TMP/hvc.out" hvc-ready; then
	cat "$TMP/hvc.data" >>"$TMP/hvc.in"
else
	fail "hvc0: the guest's ready line reached the output file" "$(linux_why dev)"
fi
if linux_wait dev vsock-listening; then
	hostside control "$API" '{"cmd": "metrics"}' >"$TMP/metrics.json"
	hostside vsock-connect "$VSOCK" 6000 "$TMP/vsock-host.dat" >"$TMP/vsock-connect.out" 2>&1
	if grep -q ', match$' "$TMP/vsock-connect.out"; then
		pass "vsock host -> guest: CONNECT 6000, OK, 512 KiB echoed by the guest"
	else
		fail "vsock host -> guest: CONNECT 6000, OK, 512 KiB echoed by the guest" "$(tail -1 "$TMP/vsock-connect.out")"
	fi
else
	fail "guest reached its vsock server step" "$(linux_why dev)"
fi
linux_wait dev vsock-serve
linux_poweroff_ok dev
wait $SERVER

# --- virtio-rng ---
linux_same "/dev/hwrng is virtio-rng" "$(linux_fact dev rng-current)" "virtio_rng.0"
linux_same "/dev/hwrng: two 64 KiB reads arrive, differ, use all 256 byte values" \
	"$(linux_fact dev rng)" "65536 65536 differ 256"
rng_in=$(jq -r '[.devices | to_entries[] | select(.key | startswith("virtio-rng")) | .value.virtio.bytes_in] | first // 0' "$TMP/metrics.json" 2>/dev/null)
if [ "${rng_in:-0}" -ge 131072 ] 2>/dev/null; then
	pass "virtio-rng metrics: $rng_in bytes given to the driver"
else
	fail "virtio-rng metrics: at least 131072 bytes given to the driver" "got '${rng_in}' in $(head -c 300 "$TMP/metrics.json")"
fi

# --- virtio-console ---
if [ "$(linux_fact dev hvc-in)" = "$IN_LEN $(sha "$TMP/hvc.data")" ]; then
	pass "hvc0: the host's 48 KiB reached the guest intact"
else
	fail "hvc0: the host's 48 KiB reached the guest intact" "guest read $(linux_fact dev hvc-in | cut -d' ' -f1) bytes; its port: $(linux_fact dev hvc-port)"
fi
out_len=$(stat -c %s "$TMP/hvc.out" 2>/dev/null || echo 0)
if [ "$(tail -c 32768 "$TMP/hvc.out" | sha256sum | cut -c1-64)" = "$(sha "$TMP/hvc.payload")" ] &&
	[ "$out_len" -gt 32768 ] && ! head -c $((out_len - 32768)) "$TMP/hvc.out" | grep -qvx hvc-ready; then
	pass "hvc0: the guest's ready lines, then its 32 KiB intact, reached the output file"
else
	fail "hvc0: the guest's ready lines, then its 32 KiB intact, reached the output file" "$out_len bytes: $(head -c 60 "$TMP/hvc.out" | od -An -c | head -2 | tr -s ' \n' ' ')"
fi

# --- vsock ---
linux_same "vsock guest -> host: the guest's program got its bytes back" \
	"$(linux_fact dev vsock-connect)" "0 vsock_echo: sent 524288, received 524288, match"
linux_same "vsock guest -> host: what the host received" \
	"$(sha "$TMP/vsock.got" 2>/dev/null)" "$(sha "$TMP/vsock.dat")"
linux_same "vsock host -> guest: the guest's server saw the host close" \
	"$(linux_fact dev vsock-serve)" "0 vsock_echo: echoed 524288 bytes, peer closed"
finish
