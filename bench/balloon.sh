#!/bin/bash
# bench/balloon.sh - how much host memory a balloon gives back, and how fast:
# Shoal's virtio-balloon against QEMU's, with Linux's own virtio_balloon
# driver in the same guest, side by side in one run (issue 13's figures).
#
# Each boot: Debian's cloud kernel and the guest kit (bench/lib.bash), 1
# vCPU, 512 MiB, and the balloon device with free page reporting on both
# sides (Shoal's --balloon offers it; QEMU's virtio-balloon-pci with
# free-page-reporting=on).  The guest fills FILL MiB of a tmpfs (so the
# VMM's memory holds those pages) and says "filled"; 4 s later it deletes
# the file and says "freed".  The host measures the VMM's VmRSS (the same measure for both:
# Shoal's guest RAM is a shared memfd mapping, QEMU's anonymous memory;
# both count in VmRSS), in two phases:
#   1. free page reporting: VmRSS when "filled" is seen; from the sight
#      of "freed", VmRSS is polled every 20 ms until it has dropped by 90 %
#      of FILL (or 30 s pass): that time, and VmRSS 1 s later (Linux
#      reports free blocks of 2 MiB and up, 2 s after they are freed, in
#      rounds; what is left is what it did not report);
#   2. the balloon: a target that leaves KEEP MiB to the guest,
#        Shoal  {"cmd": "balloon", "target_bytes": 512M - KEEP}  (the balloon's size)
#        QEMU   QMP {"execute": "balloon", "arguments": {"value": KEEP}}
#                                                         (the guest's size)
#      polled every 20 ms until the device says the guest reached it
#      (Shoal's status balloon.actual_bytes, QEMU's query-balloon
#      "actual"): the inflation time, and VmRSS 0.5 s after.
# Printed per VMM, medians of ROUNDS boots with the order swapped every
# other round, and the ratios Shoal/QEMU.
#
#   bench/balloon.sh [-n ROUNDS] [-f FILL_MIB] [-k KEEP_MIB] [-A KERNEL_ARGS]
#   (defaults: 3 rounds, 320 MiB filled, 128 MiB kept; -A adds to the
#   guest's command line, e.g. -A init_on_alloc=0: Debian's kernel zeroes
#   every page it allocates, the balloon's too, so each ballooned page is
#   first faulted in on the host and then released)
#
# Needs /dev/kvm (run it in the KVM box: scripts/kvm-box.sh --
# bench/balloon.sh), QEMU, python3 and the guest kit; exits 77 without them.
set -u
. "$(dirname "$0")/lib.bash"
N=3; FILL=320; KEEP=128
while getopts "n:f:k:A:" o; do
	case $o in n) N=$OPTARG ;; f) FILL=$OPTARG ;; k) KEEP=$OPTARG ;; A) BENCH_CMDLINE="$BENCH_CMDLINE $OPTARG" ;; *) exit 64 ;; esac
done
bench_require_linux
command -v python3 >/dev/null || bench_skip "python3 is not installed"
BENCH_CPUS=1
MEM_MIB=512
[ "$FILL" -lt $((MEM_MIB - 96)) ] && [ "$KEEP" -lt "$MEM_MIB" ] || { echo "balloon.sh: -f/-k do not fit $MEM_MIB MiB" >&2; exit 64; }

TMP=$(mktemp -d /tmp/shoal-bench.XXXXXX)
trap bench_cleanup EXIT
BENCH_INITRD=$TMP/initrd
bench_initrd "$BENCH_INITRD" "
[ -d /sys/bus/virtio/drivers/virtio_balloon ] || modprobe virtio_balloon 2>/dev/null
mkdir -p /m && mount -t tmpfs -o size=$((FILL + 16))M none /m || { r error no tmpfs; exit 0; }
dd if=/dev/zero of=/m/fill bs=1M count=$FILL 2>/dev/null || { r error fill failed; exit 0; }
r balloon-driver \$(ls /sys/bus/virtio/drivers/virtio_balloon 2>/dev/null | grep -c '^virtio')
r filled
sleep 4
rm -f /m/fill
r freed
exec sleep 3600"

# measure KIND SOCK PID LOG: print "report_start report_end report_ms rss_before rss_after ms"
# (MiB and ms; report_ms is "-" when VmRSS never dropped by 90 % of FILL).
measure() {
	python3 - "$@" "$MEM_MIB" "$KEEP" "$BENCH_TIMEOUT" "$FILL" <<'PY'
import json, socket, sys, time
kind, path, pid, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
mem, keep, limit, fill = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
MiB = 1 << 20

def rss():
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS for %d" % pid)

# phase 1: free page reporting, timed from the host's sight of "freed"
r0 = rss()
end = time.monotonic() + limit
while b"bench: freed" not in open(log, "rb").read():
    if time.monotonic() > end:
        raise SystemExit("%s: the guest never said freed" % kind)
    time.sleep(0.02)
t_freed = time.monotonic()
rep_ms = "-"
while time.monotonic() - t_freed < 30:
    if r0 - rss() >= fill * MiB * 9 // 10:
        rep_ms = "%.0f" % ((time.monotonic() - t_freed) * 1000)
        break
    time.sleep(0.02)
time.sleep(1)
r1 = rss()

s = socket.socket(socket.AF_UNIX)
s.settimeout(limit)
s.connect(path)
f = s.makefile("rw")

def call(obj):
    f.write(json.dumps(obj) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if kind == "qemu" and ("event" in r or "QMP" in r):
            continue
        return r

if kind == "qemu":
    json.loads(f.readline())            # the greeting
    call({"execute": "qmp_capabilities"})
    req = {"execute": "balloon", "arguments": {"value": keep * MiB}}
    done = lambda: call({"execute": "query-balloon"})["return"]["actual"] <= keep * MiB
else:
    req = {"cmd": "balloon", "target_bytes": (mem - keep) * MiB}
    done = lambda: call({"cmd": "status"}).get("balloon", {}).get("actual_bytes", 0) >= (mem - keep) * MiB
before = rss()
t0 = time.monotonic()
r = call(req)
if r.get("error") or r.get("ok") is False:
    raise SystemExit("%s refused the balloon request: %s" % (kind, r))
while not done():
    if time.monotonic() - t0 > limit:
        raise SystemExit("%s: the balloon did not reach its target in %d s" % (kind, limit))
    time.sleep(0.02)
ms = (time.monotonic() - t0) * 1000
time.sleep(0.5)
print(r0 // MiB, r1 // MiB, rep_ms, before // MiB, rss() // MiB, "%.0f" % ms)
PY
}

for i in $(seq "$N"); do
	order="shoal qemu"; [ $((i % 2)) = 0 ] && order="qemu shoal"
	for v in $order; do
		log=$TMP/$v.$i.log
		if [ $v = shoal ]; then
			bench_shoal "$log" --balloon --api-socket "$TMP/api.sock"
			sock=$TMP/api.sock
		else
			bench_qemu microvm,pcie=on "$log" -device virtio-balloon-pci,free-page-reporting=on -qmp "unix:$TMP/qmp.sock,server=on,wait=off"
			sock=$TMP/qmp.sock
		fi
		bench_wait "$log" filled || { echo "balloon.sh: $v round $i: the guest did not get ready: $(tail -3 "$log")" >&2; exit 1; }
		[ "$(bench_facts "$log" balloon-driver)" = 1 ] || { echo "balloon.sh: $v: Linux's virtio_balloon did not bind" >&2; exit 1; }
		m=$(measure "$v" "$sock" "$BENCH_PID" "$log") || { echo "balloon.sh: $v round $i: $m" >&2; exit 1; }
		echo "$m" >>"$TMP/$v.m"
		read -r r0 r1 rt b a t <<<"$m"
		echo "round $i $v: free page reporting: VmRSS $r0 -> $r1 MiB (90 % of $FILL MiB in $rt ms); balloon: VmRSS $b -> $a MiB, inflation $t ms"
		bench_stop
		rm -f "$TMP/api.sock" "$TMP/qmp.sock"
	done
done

col() { cut -d' ' -f"$2" "$TMP/$1.m" | grep -v '^-$' | median; }
echo
echo "512 MiB guest, 1 vCPU; $FILL MiB filled and freed; medians of $N boots (VmRSS, MiB)"
echo "free page reporting (the guest frees $FILL MiB):"
printf '  %-6s %10s %10s %12s %16s\n' vmm before after "given back" "90 % given, ms"
for v in shoal qemu; do
	printf '  %-6s %10s %10s %12s %16s\n' "$v" "$(col $v 1)" "$(col $v 2)" "$(awk '{ print $1 - $2 }' "$TMP/$v.m" | median)" "$(col $v 3)"
	eval "P_$v=$(col $v 3)"
done
echo "balloon to leave $KEEP MiB:"
printf '  %-6s %10s %10s %12s %14s %10s\n' vmm before after "given back" "inflation ms" "MiB/s"
for v in shoal qemu; do
	t=$(col $v 6)
	rate=$(awk '{ if ($6 > 0) print ($4 - $5) / ($6 / 1000) }' "$TMP/$v.m" | median)
	printf '  %-6s %10s %10s %12s %14s %10.0f\n' "$v" "$(col $v 4)" "$(col $v 5)" "$(awk '{ print $4 - $5 }' "$TMP/$v.m" | median)" "$t" "$rate"
	eval "T_$v=$t"
done
echo "ratio shoal/qemu: free page reporting time $(ratio "${P_shoal:-0}" "${P_qemu:-0}"), balloon inflation time $(ratio "$T_shoal" "$T_qemu")"
