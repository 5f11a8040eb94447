#!/bin/bash
# slow_linux_daemon.sh - a Linux VM run by shoald and driven through the CLI.
# tier: kvm
#
# In a network namespace of its own (root only), with a TAP at 10.0.2.1/24
# and a real shoald (daemon_lib.bash's start_daemon), one Linux VM (Debian's
# bzImage, 2 vCPUs, 512 MiB, busybox init, a qcow2 disk and the TAP):
#   - `shoal vm create -f` and `shoal vm start`: the VM runs;
#   - the guest pings the host, makes ext2 on its disk and writes 2 MiB
#     (synced); the console log (`shoal console --show-log`) shows it;
#   - `shoal console` attached: a command typed into the guest's shell is
#     answered (the shell computes $((6 * 7)), so an echo of the typed line
#     cannot pass for the answer), and the file's checksum read through the
#     console matches;
#   - `shoal metrics -o json` and the Prometheus text: the disk's written
#     bytes cover the 2 MiB, and the NIC's counters moved both ways;
#   - the balloon (statistics every second): Linux's driver reports its
#     memory, seen in `vm show` and as shoal_vm_balloon_guest_memory_bytes;
#   - `shoal vm stop` (graceful: the ACPI power button, busybox acpid, init's
#     shutdown) ends the VM with status 0, "stopped on request", and the
#     console log shows the guest's clean shutdown;
#   - `qemu-img check` finds the disk clean, e2fsck finds its file system
#     clean and unmounted (a VM stopped by force leaves it "not clean"), with
#     the file intact; `shoal vm delete` removes the VM.
# Kernel, initramfs and disk lie under $TMP or the kit cache, which
# start_daemon allows.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
linux_in_netns "$@"
. "$(dirname "$0")/daemon_lib.bash"
trap 'linux_keep; daemon_cleanup' EXIT
need_daemon
for t in ip cpio qemu-img e2fsck dumpe2fs debugfs jq; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

TAP=shoaltap0
linux_tap $TAP
DISK=$TMP/disk.qcow2
"$SHOAL" img create -f qcow2 "$DISK" 32M >/dev/null || { fail "shoal img create qcow2"; finish; }

linux_initrd "$TMP/initrd" '
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
if ping -c 3 -W 5 10.0.2.1 >/tmp/ping 2>&1; then t "ping ok"; else t "ping failed: $(tail -1 /tmp/ping)"; fi
mke2fs -F /dev/vda >/tmp/mke2fs 2>&1 || t "mke2fs failed: $(tail -1 /tmp/mke2fs)"
mkdir -p /mnt/vda && mount -t ext2 /dev/vda /mnt/vda
dd if=/dev/urandom of=/mnt/vda/data bs=64k count=32 2>/dev/null
sync
t "data $(sha /mnt/vda/data)"
t "ready"'

jq -n --arg k "$SHOAL_KIT_BZIMAGE" --arg i "$TMP/initrd" --arg c "$LINUX_CMDLINE" \
	--arg d "$DISK" --arg t "$TAP" \
	'{name: "lin", kernel: $k, initrd: $i, cmdline: $c, cpus: 2, memory: "512M",
	  disks: [{path: $d}], nets: [{tap: $t}], balloon: {stats_interval: 1}}' >"$TMP/lin.json"

start_daemon --stop-timeout 60 || { fail "daemon starts"; finish; }
linux_same "vm create" "$("$SHOAL" vm create -f "$TMP/lin.json" 2>&1)" "lin: created"
check "vm start" quiet "$SHOAL" vm start lin
linux_same "running after start" "$(vm_field lin .state)" "running"

# console_has TEXT: the console log has TEXT (bounded wait).
console_has() {
	local end=$((SECONDS + LINUX_TIMEOUT))
	while [ $SECONDS -lt $end ]; do
		"$SHOAL" console lin --show-log 2>/dev/null | tr -d '\r' >"$TMP/console.txt"
		grep -qF -- "$1" "$TMP/console.txt" && return 0
		[ "$(vm_field lin .state)" = running ] || break
		sleep 0.5
	done
	grep -qF -- "$1" "$TMP/console.txt"
}
if console_has "linux-test: ready"; then
	pass "console log: Linux booted, pinged, wrote its disk"
else
	fail "console log: Linux booted, pinged, wrote its disk" "state $(vm_field lin .state); last line: $(grep -v '^$' "$TMP/console.txt" | tail -1)"
fi
fact() { sed -n "s/.*linux-test: $1 //p" "$TMP/console.txt" | tail -1; }
linux_same "guest pings the host over the TAP" "$(fact ping)" "ok"
DATA_SUM=$(fact data)

# --- the console, attached ---
out=$(printf 'echo typed-$((6 * 7)); sha256sum /mnt/vda/data\n' |
	timeout 60 "$SHOAL" console lin --linger 3 2>&1 | tr -d '\r')
if echo "$out" | grep -qx 'typed-42'; then
	pass "console attach: a typed command is run by the guest's shell"
else
	fail "console attach: a typed command is run by the guest's shell" "$(echo "$out" | tail -3 | tr '\n' ' ')"
fi
if [ -n "$DATA_SUM" ] && echo "$out" | grep -q "^$DATA_SUM  /mnt/vda/data"; then
	pass "console attach: the file's checksum, read in the guest, matches"
else
	fail "console attach: the file's checksum, read in the guest, matches" "want '$DATA_SUM'"
fi

# --- metrics ---
"$SHOAL" metrics lin -o json >"$TMP/metrics.json" 2>&1
wb=$(jq -r '.disks[0].write_bytes // 0' "$TMP/metrics.json" 2>/dev/null)
if [ "${wb:-0}" -ge 2097152 ] 2>/dev/null; then
	pass "metrics: disk write bytes ($wb) cover the 2 MiB written"
else
	fail "metrics: disk write bytes cover the 2 MiB written" "$(head -c 400 "$TMP/metrics.json")"
fi
if jq -e '.nets[0].rx_bytes > 0 and .nets[0].tx_bytes > 0 and .nets[0].rx_packets > 0 and .nets[0].tx_packets > 0' \
	"$TMP/metrics.json" >/dev/null 2>&1; then
	pass "metrics: NIC bytes and packets moved both ways ($(jq -c '.nets[0] | [.rx_bytes, .tx_bytes]' "$TMP/metrics.json"))"
else
	fail "metrics: NIC bytes and packets moved both ways" "$(jq -c '.nets' "$TMP/metrics.json" 2>&1 | head -c 300)"
fi
"$SHOAL" metrics -o prometheus >"$TMP/prom" 2>&1
# labelled with the names the JSON gives the disk and the NIC
dname=$(jq -r '.disks[0].name' "$TMP/metrics.json" 2>/dev/null)
nname=$(jq -r '.nets[0].name' "$TMP/metrics.json" 2>/dev/null)
if awk -v l="shoal_vm_disk_write_bytes_total{vm=\"lin\",disk=\"$dname\"}" '$1 == l { found = 1; ok = $2 >= 2097152 } END { exit !(found && ok) }' "$TMP/prom" &&
	grep -qF "shoal_vm_net_rx_bytes_total{vm=\"lin\",net=\"$nname\"} " "$TMP/prom" &&
	! grep -qF "shoal_vm_net_rx_bytes_total{vm=\"lin\",net=\"$nname\"} 0" "$TMP/prom"; then
	pass "Prometheus text: disk and NIC byte counters, labelled with the JSON's names ($dname, $nname)"
else
	fail "Prometheus text: disk and NIC byte counters" "$(grep -E 'disk_write_bytes|net_rx_bytes' "$TMP/prom" | head -2 | tr '\n' ' ')"
fi
# The balloon's statistics: Linux's driver answers the device's request
# (every second here) with its own memory figures.
total=0
for _ in $(seq 60); do
	total=$("$SHOAL" vm show lin -o json 2>/dev/null | jq -r '.stats.balloon.stats.total_memory // 0')
	[ "${total:-0}" -gt 0 ] 2>/dev/null && break
	sleep 0.5
done
check "vm show: the guest's balloon driver reports its total memory ($total bytes, under 512M)" \
	bash -c "[ '${total:-0}' -gt 0 ] && [ '${total:-0}' -le 536870912 ]"
"$SHOAL" metrics -o prometheus >"$TMP/prom" 2>&1
check "Prometheus text: shoal_vm_balloon_guest_memory_bytes of lin, total_memory and free_memory" bash -c \
	"grep -q '^shoal_vm_balloon_guest_memory_bytes{vm=\"lin\",stat=\"total_memory\"} [1-9]' '$TMP/prom' &&
	 grep -q '^shoal_vm_balloon_guest_memory_bytes{vm=\"lin\",stat=\"free_memory\"} [1-9]' '$TMP/prom'"
check "shoal vm show prints the guest's free and total memory" \
	bash -c "'$SHOAL' vm show lin | grep -q '^guest mem: .* free of '"

# --- graceful stop ---
check "vm stop (graceful: the power button)" quiet timeout 120 "$SHOAL" vm stop lin --timeout 60
linux_same "exited with status 0, stopped on request" \
	"$(vm_field lin '.state, .last_exit.status, .last_exit.reason' | tr '\n' '|')" \
	"exited|0|stopped on request (VMM exited normally)|"
"$SHOAL" console lin --show-log 2>/dev/null | tr -d '\r' >"$TMP/console.txt"
check "console log: acpid's handler, the kit's shutdown, Linux's power-off" \
	grep -qz 'power button pressed.*shoal-kit: shutting down.*reboot: Power down' "$TMP/console.txt"

# --- the disk, judged by qemu-img and e2fsprogs ---
check "qemu-img check: the qcow2 disk is clean" quiet qemu-img check -q -f qcow2 "$DISK"
qemu-img convert -f qcow2 -O raw "$DISK" "$TMP/flat.raw"
check "e2fsck: the guest's file system is clean" quiet e2fsck -fn "$TMP/flat.raw"
linux_same "the file system was unmounted by the guest's shutdown (state clean)" \
	"$(dumpe2fs -h "$TMP/flat.raw" 2>/dev/null | sed -n 's/^Filesystem state: *//p')" "clean"
linux_same "the 2 MiB file read back by debugfs" \
	"$(debugfs -R 'cat /data' "$TMP/flat.raw" 2>/dev/null | sha256sum | cut -c1-64)" "$DATA_SUM"
check "vm delete" quiet "$SHOAL" vm delete lin
finish
