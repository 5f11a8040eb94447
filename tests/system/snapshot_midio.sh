#!/bin/bash
# snapshot_midio.sh - a snapshot taken while the guest is in the middle of
# port I/O restores without doing an access twice (src/vmm/vcpu.c,
# vcpu_complete_access; docs/snapshots.md).
#
# KVM finishes the access of a KVM_EXIT_IO (an OUT's instruction end, an
# IN's value into its register) only at the next KVM_RUN.  A vCPU parked
# straight after such an exit has registers from before the instruction's
# end, and a snapshot of them makes the restored guest do the access again:
# a console byte written twice.  The VMM now completes the access (KVM_RUN
# with immediate_exit) before it parks.
#
# The test guest runs `ioseq`: the numbers 1, 2, 3 ... on the serial
# console, one a line, a stream of OUTs to the UART (and LSR reads).  Each
# round pauses the source (its vCPU stops right after one of those exits
# nearly every time), reads its console, takes a snapshot, kills the
# source, restores, and reads the restored console: the two, end to end,
# must be the numbers in order, each line once and whole.  Without the
# completion a round shows a doubled digit or an empty line where the
# source stopped (the OUT done again) about every second round.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

PYTHONPATH="$ROOT/tests/system" python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import os, subprocess, sys, time
from vmtest import Test, ctl, text, wait_for
T = Test(*sys.argv[1:4])
shoal, guest, tmp, check = T.shoal, T.guest, T.tmp, T.check

def run(args, log, sock):
    p = subprocess.Popen([shoal, "run", *args, "--console", "file:" + log, "--api-socket", sock,
                          "--timeout", "120"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: os.path.exists(sock) or p.poll() is not None, 20)
    return p

# The numbers the two consoles show, end to end: the source's up to its
# pause, then the restored guest's; the last line may be cut by the kill.
def numbers(joined):
    body = joined.split("ioseq-start\n", 1)[-1]
    lines = body.replace("\r", "").split("\n")[:-1]      # the last may be partial
    return [l for l in lines]

ROUNDS = 6
bad = []
for i in range(ROUNDS):
    src_log, src_sock = f"{tmp}/src{i}.log", f"{tmp}/src{i}.sock"
    p = run(["--kernel", guest, "--cmdline", "echo ioseq-start; ioseq 1000000", "--memory", "32M"],
            src_log, src_sock)
    # let it print a few hundred lines, at a moment that differs per round
    wait_for(lambda: text(src_log).count("\n") > 200 + 37 * i, 60)
    r = ctl(src_sock, {"cmd": "pause"})
    if not r.get("ok"):
        bad.append((i, "pause", r)); p.kill(); p.wait(); continue
    time.sleep(0.3)                       # what the console had was written
    before = text(src_log)
    snap = f"{tmp}/snap{i}"
    s = subprocess.run([shoal, "snapshot", "create", "--socket", src_sock, snap], capture_output=True, text=True)
    p.kill(); p.wait()
    if s.returncode != 0:
        bad.append((i, "snapshot", s.stderr)); continue
    dst_log, dst_sock = f"{tmp}/dst{i}.log", f"{tmp}/dst{i}.sock"
    q = run(["--restore", snap], dst_log, dst_sock)
    wait_for(lambda: text(dst_log).count("\n") > 50, 60)
    q.kill(); q.wait()
    after = text(dst_log)
    lines = numbers(before + after)
    want = [str(n) for n in range(1, len(lines) + 1)]
    if len(lines) < 100 or lines != want:
        k = next((j for j, (a, b) in enumerate(zip(lines, want)) if a != b), len(lines))
        bad.append((i, f"line {k + 1}: {lines[max(0, k - 2):k + 3]!r}, source printed {before.count(chr(10))}"
                       " lines before its pause"))
    subprocess.run(["rm", "-rf", snap])
check(f"{ROUNDS} snapshots taken mid-I/O: the source's console and the restored one, end to end, "
      "are the numbers in order, each once and whole", not bad, bad)
T.exit()
PY
