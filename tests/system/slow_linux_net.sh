#!/bin/bash
# slow_linux_net.sh - Linux's virtio_net driver on Shoal's in-process
# virtio-net, on a TAP.
# tier: kvm
#
# The script runs in a network namespace of its own (root only), where it
# makes a TAP with `ip tuntap` and gives it 10.0.2.1/24; the guest (Debian's
# vmlinux through PVH, 2 vCPUs, busybox init) takes 10.0.2.15.  One boot:
#   - the guest's eth0 is bound to virtio_net and has the MAC Shoal gave it;
#   - the guest pings the host, and the host pings the guest (ARP and ICMP
#     both ways);
#   - TCP guest -> host: busybox nc sends 4 MiB of random bytes to a host
#     listener (tests/linux/hostside.py); the host compares count and SHA-256
#     with what the guest says it sent;
#   - TCP host -> guest: the host sends 4 MiB to busybox `nc -l` in the
#     guest; the guest reports count and SHA-256 of what it received;
#   - `poweroff` in the guest ends shoal run with status 0.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
linux_in_netns "$@"
for t in ip cpio python3; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

TAP=shoaltap0
MAC=52:54:00:5c:0a:17
linux_tap $TAP
head -c 4M /dev/urandom >"$TMP/to-guest"

linux_initrd "$TMP/initrd" '
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
t "eth0 $(cat /sys/class/net/eth0/address) $(basename $(readlink /sys/class/net/eth0/device/driver))"
if ping -c 3 -W 5 10.0.2.1 >/tmp/ping 2>&1; then t "ping ok"; else t "ping failed: $(tail -1 /tmp/ping)"; fi
dd if=/dev/urandom of=/tmp/out bs=64k count=64 2>/dev/null
t "sent $(wc -c </tmp/out) $(sha /tmp/out)"
timeout 120 nc 10.0.2.1 5000 </tmp/out
t "nc-send $?"
# The host sends once this line is out; nc ends when the host closes.
(timeout 120 nc -l -p 5001 </dev/null >/tmp/in; echo $? >/tmp/in.rc) &
sleep 1
t "listening 5001"
wait
t "received $(wc -c </tmp/in) $(sha /tmp/in) nc $(cat /tmp/in.rc)"
poweroff'

hostside tcp-recv 10.0.2.1 5000 "$TMP/from-guest" >"$TMP/recv.out" 2>&1 &
RECV=$!
linux_listening 5000 || fail "host listener on 10.0.2.1:5000" "$(cat "$TMP/recv.out")"
linux_start net "$SHOAL_KIT_VMLINUX" "$TMP/initrd" --net "tap=$TAP,mac=$MAC"

if linux_wait net "listening 5001"; then
	if busybox ping -c 3 -W 5 10.0.2.15 >"$TMP/ping" 2>&1; then
		pass "host pings the guest"
	else
		fail "host pings the guest" "$(tail -1 "$TMP/ping")"
	fi
	if hostside tcp-send 10.0.2.15 5001 "$TMP/to-guest" >"$TMP/send.out" 2>&1; then
		pass "TCP host -> guest: 4 MiB sent"
	else
		fail "TCP host -> guest: 4 MiB sent" "$(tail -1 "$TMP/send.out")"
	fi
else
	fail "guest reached its listening step" "$(linux_why net)"
fi
linux_wait net received
linux_poweroff_ok net
wait $RECV

linux_same "guest eth0: MAC and driver" "$(linux_fact net eth0)" "$MAC virtio_net"
linux_same "guest pings the host" "$(linux_fact net ping)" "ok"
linux_same "TCP guest -> host: guest's nc exits 0" "$(linux_fact net nc-send)" "0"
linux_same "TCP guest -> host: bytes and SHA-256 the host received" \
	"$(wc -c <"$TMP/from-guest" 2>/dev/null) $(sha "$TMP/from-guest")" "$(linux_fact net sent)"
linux_same "TCP guest -> host: 4 MiB" "$(linux_fact net sent | cut -d' ' -f1)" "4194304"
linux_same "TCP host -> guest: bytes and SHA-256 the guest received" \
	"$(linux_fact net received)" "4194304 $(sha "$TMP/to-guest") nc 0"
finish
