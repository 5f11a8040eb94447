#!/bin/bash
# virtio_net.sh - Shoal's virtio-net on a real TAP, driven by the test
# guest's `vnet` command: the guest reads its MAC, ARPs for the gateway and
# pings it with a 1000-byte patterned payload; the "gateway" is the Linux
# kernel behind the TAP.
#
# Nothing here touches the host's network: every TAP lives in a network
# namespace this script creates (10.0.2.0/24 and 10.0.3.0/24 inside it, no
# route out) and removes on exit, and the VMM runs inside that namespace.
#
# Checks: modern, legacy and transitional interfaces; a multi-queue TAP
# with 4 queue pairs; an fd passed in by the caller (`--net fd=N`, the VMM
# opens nothing itself): a TAP fd, and a datagram socketpair with a tiny
# Python peer (that one needs no root); the host side saw the guest's frames.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

# fd=N with a datagram socketpair: no TAP, no root.  A small peer in
# Python answers the guest's ARP and ICMP echo for 10.0.2.2 on the other end.
vnet_socketpair() {
	local log=$TMP/socketpair.log rc
	cat >"$TMP/peer.py" <<'PEER'
import os, socket, struct, sys
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
pid = os.fork()
if pid == 0:
    a.close()
    os.dup2(b.fileno(), 3)
    os.set_inheritable(3, True)
    os.execv(sys.argv[1], sys.argv[1:])
b.close()
a.settimeout(0.2)
gw_mac, gw_ip = bytes.fromhex("525400000002"), bytes([10, 0, 2, 2])
def csum(d):
    if len(d) % 2:
        d += b"\0"
    s = sum(struct.unpack("!%dH" % (len(d) // 2), d))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
answered = 0
while True:
    try:
        f = a.recv(65536)
    except socket.timeout:
        if os.waitpid(pid, os.WNOHANG)[0]:
            sys.exit(1)
        continue
    except ConnectionRefusedError:
        break
    if len(f) < 42:
        continue
    src, typ = f[6:12], f[12:14]
    if typ == b"\x08\x06" and f[20:22] == b"\0\1" and f[38:42] == gw_ip:
        r = src + gw_mac + typ + b"\0\1\x08\0\6\4\0\2" + gw_mac + gw_ip + f[22:28] + f[28:32]
        a.send(r + bytes(60 - len(r)))
        answered += 1
    elif typ == b"\x08\0" and f[23] == 1 and f[30:34] == gw_ip and f[34] == 8:
        ip = bytearray(f[14:34])
        ip[12:16], ip[16:20], ip[10:12] = f[30:34], f[26:30], b"\0\0"
        ip[10:12] = struct.pack("!H", csum(bytes(ip)))
        icmp = bytearray(f[34:])
        icmp[0], icmp[2:4] = 0, b"\0\0"
        icmp[2:4] = struct.pack("!H", csum(bytes(icmp)))
        a.send(src + gw_mac + typ + bytes(ip) + bytes(icmp))
        answered += 1
        break
_, st = os.waitpid(pid, 0)
print("peer answered %d" % answered)
sys.exit(os.waitstatus_to_exitcode(st))
PEER
	timeout 60 python3 "$TMP/peer.py" "$SHOAL" run -k "$GUEST" --net fd=3 --timeout 50 \
		--cmdline "vnet; exit 0" </dev/null >"$log" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && grep -q '^shoal-guest: vnet ok .*arp=1 ping=1' "$log"; then
		pass "vnet on a socketpair fd, no TAP, no privileges ($(grep -o 'peer answered [0-9]*' "$log"))"
	else
		fail "vnet on a socketpair fd" "status $rc; $(grep -h 'error\|vnet\|shoal:\|Error' "$log" | head -3 | tr '\n' ' ')"
	fi
}
if [ -r /dev/kvm ] && [ -x "$SHOAL" ] && [ -x "$GUEST" ] && command -v python3 >/dev/null; then
	vnet_socketpair
else
	skip "vnet on a socketpair fd" "needs /dev/kvm, python3 and the built binaries"
fi

NS=shoal-vnet-$$
[ "$(id -u)" = 0 ] || { skip "virtio-net on a TAP" "needs root to make a network namespace and a TAP"; finish; }
command -v ip >/dev/null || { skip "virtio-net on a TAP" "iproute2 (ip) is not installed"; finish; }
[ -c /dev/net/tun ] || { skip "virtio-net on a TAP" "/dev/net/tun is missing"; finish; }
[ -r /dev/kvm ] || { skip "virtio-net on a TAP" "/dev/kvm is not available"; finish; }
[ -x "$SHOAL" ] && [ -x "$GUEST" ] || { fail "virtio-net on a TAP" "$SHOAL or $GUEST is not built"; finish; }
ip netns add "$NS" 2>"$TMP/ns.err" || { skip "virtio-net on a TAP" "cannot make a network namespace: $(cat "$TMP/ns.err")"; finish; }
trap 'ip netns del "$NS" 2>/dev/null; rm -rf "$TMP"' EXIT

in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up
in_ns ip tuntap add dev vtap0 mode tap
in_ns ip addr add 10.0.2.2/24 dev vtap0
in_ns ip link set vtap0 up
in_ns ip tuntap add dev vtap1 mode tap multi_queue
in_ns ip addr add 10.0.3.2/24 dev vtap1
in_ns ip link set vtap1 up

# vnet_run NAME NET-SPEC SUBNET [PRE...]: boot the guest with `vnet` and
# check its report.  PRE is a command prefix run inside the namespace.
vnet_run() {
	local name=$1 spec=$2 net=$3 log=$TMP/$1.log rc
	shift 3
	in_ns timeout 60 "$@" "$SHOAL" run -k "$GUEST" --net "$spec" --timeout 50 \
		--cmdline "vnet ip=10.0.$net.15 gw=10.0.$net.2; exit 0" </dev/null >"$log" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && grep -q '^shoal-guest: vnet ok .*arp=1 ping=1' "$log"; then
		pass "$name: $(grep -o 'vnet ok mode=[a-z]*' "$log")"
	else
		fail "$name" "status $rc; $(grep -h 'error\|vnet\|shoal:' "$log" | head -3 | tr '\n' ' ')"
	fi
}

vnet_run "vnet transitional" "tap=vtap0" 2
vnet_run "vnet legacy" "tap=vtap0,mode=legacy" 2
vnet_run "vnet modern, fixed MAC" "tap=vtap0,mode=modern,mac=52:54:00:aa:bb:cc" 2
if grep -q 'mac=52:54:00:aa:bb:cc' "$TMP/vnet modern, fixed MAC.log"; then pass "guest sees the configured MAC"
else fail "guest sees the configured MAC" "$(grep -o 'mac=[0-9a-f:]*' "$TMP/vnet modern, fixed MAC.log" | head -1)"; fi
vnet_run "vnet 4 queue pairs on a multi-queue TAP" "tap=vtap1,queues=4" 3

# fd=N: a helper opens the TAP and hands the VMM the open fd (3).
if command -v python3 >/dev/null; then
	cat >"$TMP/tapfd.py" <<'EOF'
import fcntl, os, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
# IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH22x", sys.argv[1].encode(), 0x0002 | 0x1000 | 0x4000))
if fd != 3:
    os.dup2(fd, 3)
os.set_inheritable(3, True)
os.execv(sys.argv[2], sys.argv[2:])
EOF
	vnet_run "vnet on a passed TAP fd" "fd=3" 2 python3 "$TMP/tapfd.py" vtap0
else
	skip "vnet on a passed TAP fd" "python3 is not installed (it opens the TAP for the VMM)"
fi

# The host side counted the guest's frames (ARP + ICMP per run, 4 runs).
rx=$(in_ns cat /sys/class/net/vtap0/statistics/rx_packets 2>/dev/null || echo 0)
if [ "${rx:-0}" -ge 8 ]; then pass "host TAP received the guest's frames ($rx)"
else fail "host TAP received the guest's frames" "rx_packets=$rx"; fi

# A bad spec is a usage error, not a crash.
in_ns "$SHOAL" run -k "$GUEST" --net tap=no-such-tap-name-that-is-long </dev/null >"$TMP/bad.log" 2>&1
rc=$?
if [ $rc -eq 64 ]; then pass "over-long TAP name is a usage error"; else fail "over-long TAP name is a usage error" "status $rc"; fi
finish
