#!/bin/bash
# slow_linux_balloon.sh - Linux's own virtio_balloon driver against Shoal's
# virtio-balloon (docs/memory.md): the memory it gives leaves the host.
# tier: kvm
#
# One boot of Debian's vmlinux (1 vCPU, 256 MiB, --balloon, --api-socket).
# The guest fills 120 MiB of its RAM (so the VMM's memfd holds it), waits
# for the balloon to start inflating (/proc/vmstat balloon_inflate), frees
# the 120 MiB, and later, once every ballooned page came back, fills
# 150 MiB: more than it could while the balloon held 128 MiB.  The host:
#   - bad balloon requests (a string, more than the VM's memory) are errors;
#   - {"cmd": "balloon", "target_bytes": 128 MiB}: the status reply's
#     balloon.actual_bytes reaches 128 MiB (Linux wrote `actual`);
#   - the VMM's memory use dropped: the guest memfd's allocated bytes
#     (stat -L of /proc/PID/fd/N: what a punched hole changes, and nothing
#     of the VMM's own heap, which RSS would add) went down and are at most
#     memory - balloon, and so is the metrics' guest_rss_bytes;
#   - the counters: pages inflated, no bad PFNs, the features Linux took
#     (statistics, free page reporting, deflate on OOM), free page reports
#     arrive, statistics arrive and are refreshed (total_memory, free_memory);
#   - a snapshot of the ballooned VM saves no data for the balloon's pages,
#     and `shoal run --restore` of it comes back with the same target and
#     actual;
#   - target 0: actual returns to 0 and the guest fills its 150 MiB.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

linux_require
for t in cpio python3 jq; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done

API=$TMP/api.sock
MEM=$((256 << 20))
TARGET=$((128 << 20))

linux_initrd "$TMP/initrd" '
# the balloon counters of /proc/vmstat into IN and DE, with no fork: the
# waits below poll it on a software CPU
ev() {
	IN="" DE=""
	while read -r k n; do
		case $k in balloon_inflate) IN=$n ;; balloon_deflate) DE=$n ;; esac
	done </proc/vmstat
}
ev; [ -n "$IN" ] || t "no balloon counters in /proc/vmstat"
t "driver $(ls /sys/bus/virtio/drivers/virtio_balloon | grep -c "^virtio")"
t "available-kib $(awk "/^MemAvailable/ { print \$2 }" /proc/meminfo)"
# a tmpfs of its own: the root file system is capped at half the RAM
mkdir -p /m && mount -t tmpfs -o size=240M none /m || t "no tmpfs"
dd if=/dev/zero of=/m/fill bs=1M count=120 2>/dev/null
t "filled"
while ev; [ "$IN" = 0 ]; do sleep 0.5; done
rm -f /m/fill
t "freed"
# the host deflates: wait until every page the balloon took came back
while ev; [ "$DE" = 0 ] || [ "$DE" -lt "$IN" ]; do sleep 0.5; done
if dd if=/dev/zero of=/m/fill bs=1M count=150 2>/dev/null; then
	t "refilled $(($(wc -c </m/fill) >> 20))"
else
	t "refilled failed"
fi
exec sleep 600'

ctl() { hostside control "$1" "$2"; }
jqok() { jq -e "$1" >/dev/null 2>&1; }
# status_wait SOCK PY: poll the status reply (bounded) until the Python
# expression PY holds for its balloon object `b`; one process for the whole
# wait (a python3 start per poll costs the box's one CPU more than the guest).
status_wait() {
	python3 - "$1" "$2" "$LINUX_TIMEOUT" "$LINUX_PID" "$ROOT/tests/linux" <<'PY'
import json, os, sys, time
path, expr, limit, pid = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, sys.argv[5])
from hostside import request
end = time.time() + limit
while True:
    try:
        b = json.loads(request(path, '{"cmd": "status"}', 10)).get("balloon", {})
        if eval(expr, {}, {"b": b}):
            sys.exit(0)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    if time.time() > end:
        sys.exit(1)
    time.sleep(0.5)
PY
}
# memfd_bytes PID: bytes the VMM's guest memfd has allocated.
memfd_bytes() {
	local f
	for f in /proc/"$1"/fd/*; do
		case $(readlink "$f") in
		/memfd:shoal-guest-ram*) echo $(($(stat -L -c %b "$f") * 512)); return 0 ;;
		esac
	done
	echo "none"
}

linux_start balloon "$SHOAL_KIT_VMLINUX" "$TMP/initrd" --cpus 1 --memory 256M --balloon \
	--api-socket "$API" --timeout $((4 * LINUX_TIMEOUT))
if linux_wait balloon filled; then
	pass "guest filled 120 MiB"
else
	fail "guest filled 120 MiB" "$(linux_why balloon)"
	finish
fi
linux_same "Linux's virtio_balloon driver bound the device" "$(linux_fact balloon driver)" "1"
before=$(memfd_bytes "$LINUX_PID")

r=$(ctl "$API" '{"cmd": "balloon", "target_bytes": "128M"}')
check "balloon: a target that is not a number is refused, saying so" \
	jqok '.ok == false and (.error | test("non-negative integer"))' <<<"$r"
r=$(ctl "$API" "{\"cmd\": \"balloon\", \"target_bytes\": $((MEM + 4096))}")
check "balloon: a target over the VM's memory is refused, saying so" \
	jqok '.ok == false and (.error | test("larger than the VM.s memory"))' <<<"$r"
r=$(ctl "$API" "{\"cmd\": \"balloon\", \"target_bytes\": $TARGET}")
check "balloon: target 128 MiB accepted" jqok ".ok and .balloon.target_bytes == $TARGET" <<<"$r"

if status_wait "$API" "b['actual_bytes'] == $TARGET"; then
	pass "the guest's balloon reached 128 MiB (actual_bytes in the status reply)"
else
	fail "the guest's balloon reached 128 MiB" "$(ctl "$API" '{"cmd": "status"}' | jq -c .balloon) $(linux_why balloon)"
fi
after=$(memfd_bytes "$LINUX_PID")
if [ "$before" != none ] && [ "$after" != none ] && [ "$after" -lt "$before" ] &&
	[ "$after" -le $((MEM - TARGET)) ]; then
	pass "guest memfd allocation dropped: $((before >> 20)) -> $((after >> 20)) MiB (<= memory - balloon)"
else
	fail "guest memfd allocation dropped to memory - balloon or less" "before $before, after $after"
fi
m=$(ctl "$API" '{"cmd": "metrics"}')
check "metrics: guest_rss_bytes <= memory - balloon, and a balloon object" \
	jqok ".guest_rss_bytes <= $((MEM - TARGET)) and .balloon.actual_bytes == $TARGET" <<<"$m"
st=$(ctl "$API" '{"cmd": "status"}')
check "counters: >= 32768 pages inflated, released, no bad PFNs, not broken" \
	jqok ".balloon | .inflated_pages >= 32768 and .released_bytes >= $TARGET and .bad_pfns == 0 and
		.broken == false and .discard_errors == 0" <<<"$st"
check "Linux took statistics, free page reporting and deflate on OOM" \
	jqok '.balloon | .stats_queue and .reporting and .deflate_on_oom' <<<"$st"
if status_wait "$API" "b['reports'] > 0 and b['reported_bytes'] > 0"; then
	pass "free page reports arrive"
else
	fail "free page reports arrive" "$(ctl "$API" '{"cmd": "status"}' | jq -c .balloon)"
fi
if status_wait "$API" "b['stats_updates'] >= 2 and b['stats']['total_memory'] > 0 and b['stats']['free_memory'] > 0"; then
	pass "statistics arrive and are refreshed (total_memory, free_memory)"
else
	fail "statistics arrive and are refreshed" "$(ctl "$API" '{"cmd": "status"}' | jq -c .balloon)"
fi

# a snapshot of the ballooned VM, and a restore of it
r=$(ctl "$API" "{\"cmd\": \"snapshot\", \"dir\": \"$TMP/snap\"}")
check "snapshot: the balloon's pages are not saved (memory_data_bytes <= memory - balloon)" \
	jqok ".ok and .memory_data_bytes <= $((MEM - TARGET))" <<<"$r"
"$SHOAL" run --restore "$TMP/snap" --console "file:$TMP/restored.log" --api-socket "$TMP/r.sock" \
	--timeout 120 </dev/null >"$TMP/restored.vmm" 2>&1 &
RPID=$!
end=$((SECONDS + 60))
while [ ! -S "$TMP/r.sock" ] && [ $SECONDS -lt $end ] && kill -0 $RPID 2>/dev/null; do sleep 0.1; done
r=$(ctl "$TMP/r.sock" '{"cmd": "status"}' 2>&1)
check "restored: the balloon keeps its target and actual" \
	jqok ".balloon.target_bytes == $TARGET and .balloon.actual_bytes == $TARGET and .balloon.broken == false" <<<"$r"
kill -9 $RPID 2>/dev/null
wait $RPID 2>/dev/null

r=$(ctl "$API" '{"cmd": "balloon", "target_bytes": 0}')
check "balloon: target 0 accepted" jqok '.ok' <<<"$r"
if status_wait "$API" "b['actual_bytes'] == 0 and b['deflated_pages'] >= 32768"; then
	pass "the balloon deflated to 0"
else
	fail "the balloon deflated to 0" "$(ctl "$API" '{"cmd": "status"}' | jq -c .balloon)"
fi
if linux_wait balloon refilled; then
	linux_same "the guest uses the memory again: 150 MiB written" "$(linux_fact balloon refilled)" "150"
else
	fail "the guest uses the memory again" "$(linux_why balloon)"
fi
ctl "$API" '{"cmd": "stop", "mode": "force"}' >/dev/null
linux_wait_exit 60 || fail "shoal run ends after a forced stop" "status $LINUX_RC"
finish
