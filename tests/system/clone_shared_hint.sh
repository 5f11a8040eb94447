#!/bin/bash
# clone_shared_hint.sh - shared pages kept from guest eviction (issue 13
# item 4; docs/memory.md "Shared pages kept from guest eviction"): a clone's
# guest learns from the pv-shared port which of its frames still share the
# template's page, and its balloon gives private frames first.
#   - the template (64 MiB test guest, --balloon) fills 32 MiB at 16M and
#     asks pv-shared: not a clone, nothing shared; it is snapshotted;
#   - clone A writes 8 MiB of that (at 40M): pv-shared says exactly the
#     other 24 MiB (6144 frames) are shared; the host sets a balloon target
#     of 8 MiB and the guest inflates from its pool (16M+32M) with the hint:
#     all 2048 frames it gives are private, the clone's private memory (the
#     anonymous pages of its mapping of the memory file, smaps) drops by
#     about 8 MiB, and the pool is all shared again;
#   - clone B does the same with hint=0: the plain lowest-first order gives
#     2048 shared frames (16M..24M), and its private memory does not drop.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm clone_shared_hint

PYTHONPATH="$ROOT/tests/system" python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import os, re, subprocess, sys, time
import vmtest
from vmtest import Test, ctl, text as console, wait_for
T = Test(*sys.argv[1:4])
shoal, guest, tmp, check = T.shoal, T.guest, T.tmp, T.check

def start(name, args):
    sock = os.path.join(tmp, name + ".sock"); log = os.path.join(tmp, name + ".console")
    p = subprocess.Popen([shoal, "run", *args, "--console", "file:" + log, "--api-socket", sock,
                          "--timeout", "60"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    return p, sock, log

def wait_console(log, pattern, secs=30, after=0):
    return wait_for(lambda: re.findall(pattern, console(log)[after:]), secs) or []

def type_into(sock, text):
    vmtest.type_into(sock, text).close()

def finish(p, secs=30):
    try: p.wait(timeout=secs)
    except subprocess.TimeoutExpired: p.kill(); p.wait()
    return p.returncode, p.stderr.read().decode(errors="replace")

snap = os.path.join(tmp, "snap")
memfile = os.path.join(snap, "memory")
def private_kib(pid):
    """The clone's own copies: anonymous pages of its mappings of the memory file."""
    kib, cur = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = line.rstrip().endswith(" " + memfile)
            elif cur and line.startswith("Anonymous:"):
                kib += int(line.split()[1])
    return kib

PVS = r"pvshared ok frames=(\d+) shared=(\d+) clone=(\d)"
VB = r"vballoon ok pages=(\d+) private=(\d+) shared=(\d+) hint=(\d) clone=(\d)"

# ---- the template ----
p, sock, log = start("tmpl", ["--kernel", guest, "--memory", "64M", "--balloon", "--cmdline",
                              "fill 16M 32M 1; pvshared 16M 32M; shell"])
got = wait_console(log, PVS)
check("the template filled 32 MiB; pv-shared: not a clone, nothing shared (8192 frames)",
      got == [("8192", "0", "0")], (got, console(log)[-300:]))
wait_console(log, r"shoal> ")
r = subprocess.run([shoal, "snapshot", "create", "--socket", sock, snap], capture_output=True, text=True)
check("snapshot create", r.returncode == 0, r.stdout + r.stderr)
type_into(sock, "exit 0\r")
finish(p)

def clone_round(name, hint):
    p, sock, log = start(name, ["--restore", snap, "--clone"])
    if p.poll() is not None:
        check(f"{name}: the clone runs", False, finish(p)); return
    n0 = len(console(log))
    type_into(sock, "fill 40M 8M 2; pvshared 16M 32M\r")
    got = wait_console(log, PVS, after=n0)
    check(f"{name}: after writing 8 MiB, pv-shared says the other 24 MiB are shared (6144 of 8192)",
          got == [("8192", "6144", "1")], (got, console(log)[-300:]))
    before = private_kib(p.pid)
    check(f"{name}: the clone holds at least 8 MiB of its own copies ({before} KiB)",
          before >= 8192, before)
    st = ctl(sock, {"cmd": "balloon", "target_bytes": 8 << 20})
    check(f"{name}: balloon target 8 MiB set", st.get("ok"), st)
    n1 = len(console(log))
    type_into(sock, f"vballoon 16M 32M hint={hint}; pvshared 16M 32M\r")
    vb = wait_console(log, VB, after=n1)
    ps = wait_console(log, PVS, after=n1)
    after = private_kib(p.pid)
    st = ctl(sock, {"cmd": "status"})
    bal = st.get("balloon") or {}
    type_into(sock, "exit 0\r")
    rc, err = finish(p)
    check(f"{name}: exited 0", rc == 0, (rc, err[-300:]))
    return vb, ps, before, after, bal

vb, ps, before, after, bal = clone_round("hint", 1)
check("hint: the guest gave 2048 frames, all private", vb == [("2048", "2048", "0", "1", "1")], vb)
check("hint: the device took 2048 pages", bal.get("inflated_pages") == 2048, bal)
check(f"hint: the clone's private memory dropped by at least 7 MiB ({before} -> {after} KiB)",
      before - after >= 7 * 1024, (before, after))
check("hint: the ballooned frames share the template's page again (8192 shared)",
      ps == [("8192", "8192", "1")], ps)
print(f"figure: with the hint: private {before} -> {after} KiB")

vb, ps, before, after, bal = clone_round("nohint", 0)
check("hint=0: the lowest-first order gave 2048 frames, all shared", vb == [("2048", "0", "2048", "0", "1")], vb)
check(f"hint=0: the clone's private memory did not drop by 1 MiB ({before} -> {after} KiB)",
      before - after < 1024, (before, after))
check("hint=0: its 8 MiB of copies are still private (6144 shared)", ps == [("8192", "6144", "1")], ps)
print(f"figure: without the hint: private {before} -> {after} KiB")
T.exit()
PY
[ $? = 0 ] || T_FAILED=1
finish
