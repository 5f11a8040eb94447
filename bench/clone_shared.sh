#!/bin/bash
# bench/clone_shared.sh - shared pages kept from guest eviction (issue 13
# item 4, docs/memory.md "Shared pages kept from guest eviction"): the
# private memory of N clones after one balloon round, with the pv-shared
# hint and without it.
#
# The template is the test guest ($BUILD/shoal-guest), 1 vCPU, 64 MiB,
# --balloon, booted with "fill 16M 32M 1; shell" and snapshotted.  For each
# mode (hint=1, then hint=0), N clones run at once (`--restore T --clone`);
# each writes 16 MiB of the template's data ("fill 24M 16M SEED", its own
# copies) and waits for a balloon target (`vballoon 16M 32M hint=H
# wait=300`); then the host sets each a target of TARGET over its control
# socket ({"cmd": "balloon"}) and the guest inflates from its pool
# (16M+32M): private frames first with the hint, lowest address first
# without.  Measured per clone VMM, before and
# after the round: the anonymous pages of its mapping of the template's
# memory file (/proc/PID/smaps: exactly the clone's own copies of guest
# RAM), and smaps_rollup's Private_Clean + Private_Dirty (the whole VMM);
# and what the guests reported (frames given, how many private).
#
#   bench/clone_shared.sh [-n CLONES] [-t TARGET]   (defaults: 10, 8M)
#
# Needs /dev/kvm (run it in the KVM box: scripts/kvm-box.sh --
# bench/clone_shared.sh) and python3; exits 77 without them.  Figures,
# never checked.
set -u
. "$(dirname "$0")/lib.bash"
N=10; TARGET=8M
while getopts "n:t:" o; do
	case $o in n) N=$OPTARG ;; t) TARGET=$OPTARG ;; *) exit 64 ;; esac
done
[ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] ||
	bench_skip "/dev/kvm is not available; run it in the KVM box: scripts/kvm-box.sh -- $0"
command -v python3 >/dev/null || bench_skip "python3 is not installed"
for f in shoal shoal-guest; do
	[ -x "$BUILD/$f" ] || { echo "$(basename "$0"): build $BUILD/$f first (make)" >&2; exit 1; }
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "private memory of $N clones after one balloon round (target $TARGET each), the test guest" \
     "in 64M, 32M of template data, 16M written by each clone, $(date -u '+%F %H:%M UTC'), $(nproc) cpus"
PYTHONPATH="$BENCH_ROOT/tests/system" python3 - "$BUILD/shoal" "$BUILD/shoal-guest" "$TMP" "$N" "$TARGET" <<'PY'
import os, re, subprocess, sys, time
import vmtest
from vmtest import ctl, text as console, wait_for
shoal, guest, tmp, n, target = sys.argv[1:6]
n = int(n)
u = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
target = int(target[:-1]) * u[target[-1].upper()] if target[-1].upper() in u else int(target)

def start(name, args):
    sock = os.path.join(tmp, name + ".sock"); log = os.path.join(tmp, name + ".console")
    p = subprocess.Popen([shoal, "run", *args, "--console", "file:" + log, "--api-socket", sock,
                          "--timeout", "300"], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    return p, sock, log

def wait_console(log, pattern, secs=120):
    m = wait_for(lambda: re.findall(pattern, console(log)), secs)
    if not m:
        sys.exit(f"{log}: no {pattern!r}: {console(log)[-300:]}")
    return m

def type_into(sock, text):
    vmtest.type_into(sock, text).close()

snap = os.path.join(tmp, "snap"); memfile = os.path.join(snap, "memory")
def mem_of(pid):
    anon, cur = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = line.rstrip().endswith(" " + memfile)
            elif cur and line.startswith("Anonymous:"):
                anon += int(line.split()[1])
    priv = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                priv += int(line.split()[1])
    return anon, priv

p, sock, log = start("tmpl", ["--kernel", guest, "--memory", "64M", "--balloon", "--cmdline",
                              "fill 16M 32M 1; shell"])
wait_console(log, r"shoal> ")
subprocess.run([shoal, "snapshot", "create", "--socket", sock, snap], check=True, capture_output=True)
type_into(sock, "exit 0\r"); p.wait(timeout=60)

VB = r"vballoon ok pages=(\d+) private=(\d+) shared=(\d+)"
res = {}
for hint in (1, 0):
    vms = []
    t0 = time.monotonic()
    for i in range(n):
        p, sock, log = start(f"c{hint}-{i}", ["--restore", snap, "--clone"])
        type_into(sock, f"fill 24M 16M {i + 2}; vballoon 16M 32M hint={hint} wait=300\r")
        vms.append((p, sock, log))
    for p, sock, log in vms:
        wait_console(log, r"fill addr=0x1800000 ")
    before = [mem_of(p.pid) for p, _, _ in vms]
    for p, sock, log in vms:
        ctl(sock, {"cmd": "balloon", "target_bytes": target})
    got = [wait_console(log, VB)[0] for p, sock, log in vms]
    after = [mem_of(p.pid) for p, _, _ in vms]
    for p, sock, log in vms:
        type_into(sock, "exit 0\r")
    for p, sock, log in vms:
        try: p.wait(timeout=60)
        except subprocess.TimeoutExpired: p.kill(); p.wait()
    res[hint] = dict(before=sum(a for a, _ in before), after=sum(a for a, _ in after),
                     vmm_before=sum(b for _, b in before), vmm_after=sum(b for _, b in after),
                     pages=sum(int(g[0]) for g in got), priv=sum(int(g[1]) for g in got),
                     secs=time.monotonic() - t0)

print(f"| | clones' own copies of RAM before -> after | VMMs' Private_* before -> after | frames given (private) |")
print(f"|---|---|---|---|")
for hint in (1, 0):
    r = res[hint]
    print(f"| {'with the hint' if hint else 'without (hint=0)'} | {r['before'] / 1024:.1f} -> "
          f"**{r['after'] / 1024:.1f} MiB** | {r['vmm_before'] / 1024:.1f} -> {r['vmm_after'] / 1024:.1f} MiB "
          f"| {r['pages']} ({r['priv']}) |")
h, w = res[1], res[0]
print(f"ratio: private memory after the round, without / with the hint: "
      f"{w['after'] / max(h['after'], 1):.2f} (copies); {w['vmm_after'] / max(h['vmm_after'], 1):.2f} (VMMs' Private_*)")
print(f"freed by the round: with the hint {(h['before'] - h['after']) / 1024:.1f} MiB, "
      f"without {(w['before'] - w['after']) / 1024:.1f} MiB (of {n * target / 2**20:.0f} MiB ballooned)")
PY
