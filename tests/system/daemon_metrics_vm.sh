#!/bin/bash
# daemon_metrics_vm.sh - GET /metrics with a running VM: a test guest with
# two vCPUs, a virtio-blk disk it writes and flushes (`vblk`) and, where a
# TAP can be made, a NIC; and a second VM created but not started (one VM
# runs at a time: several VMMs at once have crashed the KVM box's kernel,
# docs/testing.md).  The text passes `promtool check metrics` and is
# written family by family (metrics_lib.bash); a disk's and a NIC's label
# is the name the JSON figures (GET /v1/vms/NAME/metrics) give it; every
# disk counter of the JSON, flush_ops included, is exported with the same
# value.  Without VMs running: daemon_metrics.sh.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
. "$(dirname "$0")/metrics_lib.bash"
need_daemon
require_kvm daemon_metrics_vm
need_kvm daemon_metrics_vm || finish

TAP=""
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && ip tuntap add dev "shm$$" mode tap 2>/dev/null; then
	TAP=shm$$
	trap 'ip link del "$TAP" 2>/dev/null; daemon_cleanup' EXIT
fi
truncate -s 4M "$TMP/disk.raw"
start_daemon || { fail "daemon starts"; finish; }
NET=""
[ -n "$TAP" ] && NET=", \"nets\": [{\"tap\": \"$TAP\"}]"
check "create m1 (a disk${TAP:+ and a NIC})" test "$(api POST '/v1/vms?start=true' \
	"$(spec m1 'vblk 8 7; shell' "\"cpus\": 2, \"disks\": [{\"path\": \"$TMP/disk.raw\"}]$NET")")" = 201
check "create m2 (not started)" test "$(api POST /v1/vms "$(spec m2)")" = 201
for _ in $(seq 600); do
	"$SHOAL" console m1 --show-log 2>/dev/null | grep -q 'shoal-guest: vblk ok' && break
	sleep 0.05
done
check "m1's guest wrote and flushed its disk" bash -c "'$SHOAL' console m1 --show-log 2>/dev/null | grep -q 'shoal-guest: vblk ok.* flush=1'"

check "GET /v1/vms/m1/metrics: 200" test "$(api GET /v1/vms/m1/metrics)" = 200
cp "$TMP/body" "$TMP/m1.json"
check "GET /metrics: 200" test "$(api GET /metrics)" = 200
cp "$TMP/body" "$TMP/running.prom"
prom_check "a running VM and a created one" "$TMP/running.prom"
check "m1 up with both vCPUs, resident and device series; m2 down" bash -c "
	grep -q '^shoal_vm_up{vm=\"m1\"} 1\$' '$TMP/running.prom' &&
	grep -q '^shoal_vm_up{vm=\"m2\"} 0\$' '$TMP/running.prom' &&
	grep -q '^shoal_vm_vcpu_seconds_total{vm=\"m1\",vcpu=\"1\"} ' '$TMP/running.prom' &&
	grep -q '^shoal_vm_exits_total{vm=\"m1\",vcpu=\"0\"} [1-9]' '$TMP/running.prom' &&
	grep -q '^shoal_vm_resident_bytes{vm=\"m1\"} [1-9]' '$TMP/running.prom' &&
	grep -q '^shoal_vm_device_io_total{vm=\"m1\",' '$TMP/running.prom' &&
	! grep -q '^shoal_vm_vcpu_seconds_total{vm=\"m2\"' '$TMP/running.prom'"

# Each counter of the JSON's disks and nets, by the JSON's name: the same
# value in the Prometheus text (the guest is idle in its shell by now).
out=$(python3 - "$TMP/m1.json" "$TMP/running.prom" <<'PY'
import json, re, sys
m = json.load(open(sys.argv[1]))
prom = {}
for line in open(sys.argv[2]):
    g = re.match(r'(shoal_vm_(disk|net)_(\w+)_total)\{vm="m1",(disk|net)="([^"]*)"\} (\d+)$', line)
    if g:
        prom[(g.group(2), g.group(5), g.group(3))] = int(g.group(6))
errs, n = [], 0
for kind, arr in (("disk", m.get("disks", [])), ("net", m.get("nets", []))):
    for d in arr:
        for k, v in d.items():
            if k == "name":
                continue
            n += 1
            got = prom.get((kind, d["name"], k))
            if got != v:
                errs.append("%s %s %s: JSON %r, Prometheus %r" % (kind, d["name"], k, v, got))
print("%d counters; %s" % (n, "; ".join(errs[:4])) if errs else "%d counters" % n)
sys.exit(1 if errs or not m.get("disks") else 0)
PY
)
check "every disk and NIC counter of the JSON is exported under the JSON's name, same value ($out)" test $? -eq 0
disk=$(jq -r '.disks[0].name' "$TMP/m1.json")
check "the disk's flush_ops is exported and counts the guest's flush" \
	grep -qE "^shoal_vm_disk_flush_ops_total\{vm=\"m1\",disk=\"$disk\"\} [1-9]" "$TMP/running.prom"
check "the disk's write bytes cover the 8 sectors written" bash -c \
	"awk '/^shoal_vm_disk_write_bytes_total\{vm=\"m1\",disk=\"$disk\"\} / { ok = \$2 >= 4096 } END { exit !ok }' '$TMP/running.prom'"
if [ -n "$TAP" ]; then
	net=$(jq -r '.nets[0].name' "$TMP/m1.json")
	check "the NIC's series are labelled with the JSON's name ($net)" \
		grep -qE "^shoal_vm_net_dropped_total\{vm=\"m1\",net=\"$net\"\} [0-9]+$" "$TMP/running.prom"
else
	skip "the NIC's label" "no TAP could be made here (needs root and ip)"
fi
api POST /v1/vms/m1/stop '{"mode": "force"}' >/dev/null
finish
