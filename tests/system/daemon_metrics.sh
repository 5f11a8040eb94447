#!/bin/bash
# daemon_metrics.sh - GET /metrics without KVM: a daemon with no VM, and
# with VMs created but not running, answers text that passes `promtool
# check metrics` and is written family by family (metrics_lib.bash);
# `shoal metrics -o prometheus` prints the same families.  With running
# VMs (vCPU, device, disk and NIC series): daemon_metrics_vm.sh, in the
# KVM tier.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
. "$(dirname "$0")/metrics_lib.bash"
need_daemon
: >"$TMP/kernel"

start_daemon || { fail "daemon starts"; finish; }
check "GET /metrics with no VM: 200" test "$(api GET /metrics)" = 200
cp "$TMP/body" "$TMP/empty.prom"
prom_check "no VM" "$TMP/empty.prom"
check "no VM: the host families, no VM series" bash -c \
	"grep -q '^shoal_host_vms{state=\"running\"} 0$' '$TMP/empty.prom' && grep -q '^shoal_host_memory_committed_bytes 0$' '$TMP/empty.prom' && ! grep -q '^shoal_vm_' '$TMP/empty.prom'"

for n in m1 m2 m3; do
	api POST /v1/vms "{\"name\": \"$n\", \"kernel\": \"$TMP/kernel\", \"memory\": \"32M\"}" >/dev/null
done
check "GET /metrics with three created VMs: 200" test "$(api GET /metrics)" = 200
cp "$TMP/body" "$TMP/created.prom"
prom_check "three created VMs" "$TMP/created.prom"
check "created VMs: up 0, memory, restarts, for each" bash -c \
	"for n in m1 m2 m3; do grep -q \"^shoal_vm_up{vm=\\\"\$n\\\"} 0\$\" '$TMP/created.prom' && grep -q \"^shoal_vm_memory_bytes{vm=\\\"\$n\\\"} 33554432\$\" '$TMP/created.prom' && grep -q \"^shoal_vm_restarts_total{vm=\\\"\$n\\\"} 0\$\" '$TMP/created.prom' || exit 1; done"
"$SHOAL" metrics -o prometheus >"$TMP/cli.prom" 2>&1
check "shoal metrics -o prometheus: the same families" bash -c \
	"diff <(grep '^# ' '$TMP/cli.prom') <(grep '^# ' '$TMP/created.prom') >/dev/null"
finish
