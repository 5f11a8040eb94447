#!/bin/bash
# slow_linux_daemon_net.sh - shoald's networks (docs/networks.md) with Linux VMs.
# tier: kvm
#
# As root, in a network namespace of its own (linux_in_netns), whose
# "uplink" is a veth to a second namespace, "the outside" (198.51.100.2),
# which has no route back to the VMs' subnets: only NAT lets them reach it.
# A real shoald (jailed VMMs, its default as root):
#   - `shoal net create lan` (NAT, the default 10.89.0.0/24) and
#     `shoal net create iso --subnet 10.77.0.0/24 --isolated`: bridges with
#     the first address, dnsmasq running with its lease and pid files in
#     the state directory, `net list` / `net show -o json`;
#   - bad input: a bad name 400, a public subnet 400, host bits 400, an
#     overlapping subnet 409, a spec naming an unknown network 400, the
#     same name twice 409;
#   - the daemon stopped: its dnsmasq stop; the bridge removed by hand; the
#     daemon started again: bridge, address and dnsmasq are back;
#   - two Linux VMs (the guest kit's kernel, busybox udhcpc) on lan get
#     DHCP addresses from dnsmasq in 10.89.0.0/24 with 10.89.0.1 as their
#     router, ping each other, and ping the outside through NAT; each has
#     its TAP on the bridge; deleting lan while they exist is 409 naming
#     them; dnsmasq killed is started again and answers a new DHCP request;
#   - the VMs stopped: their TAPs are gone;
#   - two Linux VMs on iso get addresses (no router offered), ping each
#     other, but with a default route added by hand via 10.77.0.1 reach
#     neither the host's uplink address nor the outside (the firewall,
#     not a missing route, stops them: the host has forwarding on and
#     owns that address);
#   - VMs deleted, both networks deleted: bridges, nftables tables and
#     dnsmasq are gone.
# Needs nftables in the kernel (the KVM box's kit must load nf_tables,
# nft_chain_nat, nft_masq, nft_ct: scripts/kvm-box.sh's MODULES) and
# dnsmasq (dnsmasq-base); skips and says so otherwise.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
linux_in_netns "$@"
. "$(dirname "$0")/daemon_lib.bash"
OUTNS=shoal-out-$$
trap 'linux_keep; ip netns del $OUTNS 2>/dev/null; daemon_cleanup' EXIT
need_daemon
for t in ip nft dnsmasq jq cpio; do
	[ -x "/usr/sbin/$t" ] || command -v $t >/dev/null ||
		{ skip "$(linux_script)" "$t is not installed (scripts/install-deps.sh)"; exit 0; }
done
if ! nft add table inet shoal_probe 2>"$TMP/nft.err" || ! nft delete table inet shoal_probe; then
	skip "$(linux_script)" "nftables does not work in this kernel ($(head -1 "$TMP/nft.err")); the KVM box needs nf_tables, nft_chain_nat, nft_masq and nft_ct in scripts/kvm-box.sh's MODULES"
	exit 0
fi

# ---- the host's uplink and the outside ----
ip link set lo up
ip netns add $OUTNS
ip link add uplink0 type veth peer name out0
ip link set out0 netns $OUTNS
ip addr add 198.51.100.1/24 dev uplink0
ip link set uplink0 up
ip -n $OUTNS addr add 198.51.100.2/24 dev out0
ip -n $OUTNS link set out0 up
ip -n $OUTNS link set lo up
ip route add default via 198.51.100.2

start_daemon --stop-timeout 20 || { fail "daemon starts"; finish; }
if grep -q "without a jail" "$TMP/shoald.log"; then
	fail "the daemon jails its VMMs (root's default)" "$(grep -m1 'without a jail' "$TMP/shoald.log")"
fi

# ---- networks ----
linux_same "net create lan" "$("$SHOAL" net create lan -o json 2>&1 | jq -r '[.subnet, .gateway, .bridge, .isolated] | join(" ")')" \
	"10.89.0.0/24 10.89.0.1 sb-lan false"
check "net create iso --subnet 10.77.0.0/24 --isolated" quiet "$SHOAL" net create iso --subnet 10.77.0.0/24 --isolated
check "bridge sb-lan has 10.89.0.1/24" bash -c "ip -4 -o addr show dev sb-lan | grep -q 'inet 10.89.0.1/24'"
check "bridge sb-iso has 10.77.0.1/24" bash -c "ip -4 -o addr show dev sb-iso | grep -q 'inet 10.77.0.1/24'"
lan_pid=$("$SHOAL" net show lan -o json | jq -r .dnsmasq_pid)
check "lan's dnsmasq runs (pid $lan_pid), its pid and lease files in the state directory" bash -c \
	"[ \"\$(cat /proc/$lan_pid/comm)\" = dnsmasq ] && [ \"\$(cat $STATE/networks/lan/dnsmasq.pid)\" = $lan_pid ] && [ -f $STATE/networks/lan/leases ]"
check "nftables: lan masquerades 10.89.0.0/24" bash -c "nft list table inet shoal_lan | grep -q 'ip saddr 10.89.0.0/24 ip daddr != 10.89.0.0/24 masquerade'"
check "IP forwarding is on" bash -c "[ \"\$(cat /proc/sys/net/ipv4/ip_forward)\" = 1 ]"
"$SHOAL" net list >"$TMP/netlist" 2>&1
check "net list shows both (nat, isolated)" bash -c "grep -q '^lan .*10.89.0.0/24 *nat' $TMP/netlist && grep -q '^iso .*10.77.0.0/24 *isolated' $TMP/netlist"

# ---- bad input ----
expect() {      # WHAT STATUS METHOD PATH BODY [MESSAGE PART]
	local st
	st=$(api "$3" "$4" "${5:-}")
	if [ "$st" = "$2" ] && { [ -z "${6:-}" ] || grep -qF -- "$6" "$TMP/body"; }; then
		pass "$1: $st"
	else
		fail "$1" "got $st: $(head -c 300 "$TMP/body")"
	fi
}
expect "a bad network name" 400 POST /v1/networks '{"name": "Bad!"}' "not a network name"
expect "a public subnet" 400 POST /v1/networks '{"name": "pub", "subnet": "8.8.8.0/24"}' "not a private network"
expect "a subnet with host bits" 400 POST /v1/networks '{"name": "hb", "subnet": "10.60.0.5/24"}' "host bits"
expect "a subnet that overlaps lan's" 409 POST /v1/networks '{"name": "over", "subnet": "10.89.0.0/16"}' 'overlaps network \"lan\"'
expect "lan again" 409 POST /v1/networks '{"name": "lan"}' "already exists"
expect "an unknown network in a spec" 400 POST /v1/vms \
	"{\"name\": \"x\", \"kernel\": \"$SHOAL_KIT_BZIMAGE\", \"nets\": [{\"network\": \"nope\"}]}" 'no network \"nope\"'
expect "show an unknown network" 404 GET /v1/networks/nope
out=$("$SHOAL" net create q --subnet 10.1.2.3 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q "not an IPv4 subnet"; then
	pass "net create with a bad subnet exits $rc, saying why"
else
	fail "net create with a bad subnet exits non-zero, saying why" "status $rc: $out"
fi

# ---- the daemon restarts: its networks come back ----
kill "$DPID"; wait "$DPID" 2>/dev/null
check "daemon stopped: its dnsmasq stopped too" bash -c "! kill -0 $lan_pid 2>/dev/null"
ip link del sb-lan
start_daemon --stop-timeout 20 || { fail "daemon starts again"; finish; }
check "daemon started again: sb-lan made again with 10.89.0.1/24" bash -c "ip -4 -o addr show dev sb-lan | grep -q 'inet 10.89.0.1/24'"
lan_pid=$("$SHOAL" net show lan -o json | jq -r .dnsmasq_pid)
check "... and its dnsmasq runs again (pid $lan_pid)" bash -c "[ \"\$(cat /proc/$lan_pid/comm 2>/dev/null)\" = dnsmasq ]"

# ---- Linux VMs ----
# The guest's hook: DHCP with busybox udhcpc (its script sets the address
# and the router it was given), then report; the host types commands into
# its console afterwards.
linux_initrd "$TMP/initrd" '
cat >/tmp/dhcp.sh <<"EOS"
#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	[ -n "$router" ] && ip route replace default via "${router%% *}"
	echo "$ip" >/tmp/dhcp.ip ;;
esac
exit 0
EOS
chmod +x /tmp/dhcp.sh
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -n -q -t 15 -T 2 -s /tmp/dhcp.sh >/tmp/dhcp.out 2>&1
t "addr $(cat /tmp/dhcp.ip 2>/dev/null || echo none)"
t "router $(ip route | sed -n "s/^default via \([^ ]*\).*/\1/p" | head -1)"
t "ready"'

vm_spec() {     # NAME NETWORK
	jq -n --arg n "$1" --arg k "$SHOAL_KIT_BZIMAGE" --arg i "$TMP/initrd" --arg c "$LINUX_CMDLINE" \
		--arg net "$2" '{name: $n, kernel: $k, initrd: $i, cmdline: $c, cpus: 1, memory: "160M",
		nets: [{network: $net}]}'
}
# guest_fact NAME KEY: the last "linux-test: KEY VALUE" of NAME's console.
guest_fact() { "$SHOAL" console "$1" --show-log 2>/dev/null | tr -d '\r' | sed -n "s/.*linux-test: $2 //p" | tail -1; }
# guest_run NAME TAG CMD: type CMD into the guest's shell; 0 if it
# succeeded.  The answer is TAG-42 or TAG-36, computed by the guest's
# shell, so the echo of the typed line cannot pass for it.
guest_run() {
	local end=$((SECONDS + 90))
	type_console "$1" "$3 >/dev/null 2>&1 && echo $2-\$((6*7)) || echo $2-\$((6*6))
" >/dev/null
	while [ $SECONDS -lt $end ]; do
		"$SHOAL" console "$1" --show-log 2>/dev/null | tr -d '\r' >"$TMP/con.$1"
		grep -q "^$2-42" "$TMP/con.$1" && return 0
		grep -q "^$2-36" "$TMP/con.$1" && return 1
		sleep 0.5
	done
	return 2
}
# refused NAME TAG CMD: the guest ran CMD and it failed.
refused() { guest_run "$@"; [ $? = 1 ]; }
boot_pair() {   # NAME1 NAME2 NETWORK
	local v
	for v in "$1" "$2"; do
		vm_spec "$v" "$3" >"$TMP/$v.json"
		check "vm create $v on network $3" quiet "$SHOAL" vm create -f "$TMP/$v.json" --start
	done
	for v in "$1" "$2"; do
		if wait_console_long "$v" "linux-test: ready" 2400; then
			pass "$v: Linux booted and ran its DHCP client"
		else
			fail "$v: Linux booted and ran its DHCP client" "state $(vm_field "$v" .state); $(vm_field "$v" .exit_reason)"
		fi
	done
}

boot_pair a b lan
A=$(guest_fact a addr); B=$(guest_fact b addr)
check "a and b got DHCP addresses in 10.89.0.0/24 ($A, $B), distinct" bash -c \
	"[[ '$A' == 10.89.0.* ]] && [[ '$B' == 10.89.0.* ]] && [ '$A' != '$B' ]"
linux_same "a's router from DHCP is the bridge's address" "$(guest_fact a router)" "10.89.0.1"
check "dnsmasq's lease file has both" bash -c "grep -q ' $A ' $STATE/networks/lan/leases && grep -q ' $B ' $STATE/networks/lan/leases"
ports=$(ip -o link show master sb-lan | wc -l)
linux_same "two TAPs on sb-lan" "$ports" "2"
check "a pings b ($B)" guest_run a p1 "ping -c 2 -W 5 $B"
check "b pings a ($A)" guest_run b p2 "ping -c 2 -W 5 $A"
check "a pings the outside (198.51.100.2) through NAT" guest_run a p3 "ping -c 2 -W 5 198.51.100.2"
check "a pings the host's uplink address (198.51.100.1): what iso's firewall must stop" \
	guest_run a p9 "ping -c 1 -W 5 198.51.100.1"
expect "delete lan while a and b exist" 409 DELETE /v1/networks/lan "a (running), b (running)"

# dnsmasq killed: started again, and it answers
kill -9 "$lan_pid"
new=""
for _ in $(seq 100); do
	new=$("$SHOAL" net show lan -o json | jq -r 'select(.dnsmasq_restarts >= 1) | .dnsmasq_pid')
	[ -n "$new" ] && [ "$new" != "$lan_pid" ] && [ "$new" != 0 ] && break
	sleep 0.1
done
check "dnsmasq killed: the daemon starts it again (pid $lan_pid -> $new)" bash -c \
	"[ -n '$new' ] && [ '$new' != '$lan_pid' ] && [ \"\$(cat /proc/$new/comm 2>/dev/null)\" = dnsmasq ]"
check "... and the new dnsmasq answers b's DHCP request" guest_run b p4 "udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh"

for v in a b; do "$SHOAL" vm stop "$v" --force >/dev/null 2>&1; done
wait_state a exited 400; wait_state b exited 400
ports=$(ip -o link show master sb-lan 2>/dev/null | wc -l)
linux_same "a and b stopped: their TAPs are gone" "$ports" "0"
for v in a b; do quiet "$SHOAL" vm delete "$v"; done

boot_pair c d iso
C=$(guest_fact c addr); D=$(guest_fact d addr)
check "c and d got DHCP addresses in 10.77.0.0/24 ($C, $D)" bash -c \
	"[[ '$C' == 10.77.0.* ]] && [[ '$D' == 10.77.0.* ]] && [ '$C' != '$D' ]"
linux_same "no router offered on the isolated network" "$(guest_fact c router)" ""
check "c pings d ($D)" guest_run c p5 "ping -c 2 -W 5 $D"
type_console c "ip route add default via 10.77.0.1
" >/dev/null
check "c (default route via 10.77.0.1 added by hand) cannot reach the host's uplink address" \
	refused c p6 "ping -c 2 -W 3 198.51.100.1"
check "c cannot reach the outside either" refused c p7 "ping -c 2 -W 3 198.51.100.2"
check "c still pings d afterwards (the shell answered, the bridge works)" guest_run c p8 "ping -c 1 -W 5 $D"

for v in c d; do "$SHOAL" vm delete "$v" --force >/dev/null 2>&1; done
iso_pid=$("$SHOAL" net show iso -o json | jq -r .dnsmasq_pid)
check "net delete iso" quiet "$SHOAL" net delete iso
check "net delete lan" quiet "$SHOAL" net delete lan
check "bridges, nftables tables and dnsmasq are gone" bash -c \
	"! ip link show sb-lan 2>/dev/null && ! ip link show sb-iso 2>/dev/null && ! nft list tables | grep -q shoal_ && ! kill -0 $iso_pid 2>/dev/null && [ ! -d $STATE/networks/lan ]"
finish
