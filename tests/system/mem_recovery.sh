#!/bin/bash
# mem_recovery.sh - memory-error recovery from page hashes (mem/page_hash.c,
# vmm/mce.c, docs/memory.md "Memory errors") with the test guest under KVM:
#   - a 128 MiB guest fills 32 MiB with a pattern and is snapshotted; the
#     snapshot is restored with --mem-recovery;
#   - a page of the pattern (never written since the restore) is poisoned
#     (the control command inject-memory-error: madvise MADV_HWPOISON in
#     the VMM): the guest's verify of the whole pattern passes, the VMM
#     logs the recovery and its metrics count it (recovered 1, no machine
#     check);
#   - a page the guest wrote after the restore (no good copy) is poisoned:
#     reading it is a machine check the guest's #MC handler reports as
#     "mce addr=" that page, and the VMM keeps running (status answers,
#     metrics count one machine check for a written page);
#   - --mem-recovery with --zero-scan is refused, saying why.
# Needs root (MADV_HWPOISON needs CAP_SYS_ADMIN) and CONFIG_MEMORY_FAILURE;
# skips without them.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm mem_recovery

out=$("$SHOAL" run --kernel "$GUEST" --mem-recovery --zero-scan 0 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "mem-recovery cannot go with --zero-scan" <<<"$out"; then
	pass "--mem-recovery with --zero-scan is refused, saying why"
else
	fail "--mem-recovery with --zero-scan is refused, saying why" "rc $rc: $out"
fi
if [ "$(id -u)" != 0 ]; then
	skip mem_recovery "not root: MADV_HWPOISON needs CAP_SYS_ADMIN"
	finish
fi
if [ ! -e /proc/sys/vm/memory_failure_early_kill ]; then
	skip mem_recovery "the kernel has no CONFIG_MEMORY_FAILURE (no /proc/sys/vm/memory_failure_early_kill)"
	finish
fi

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY' || T_FAILED=1
import json, os, socket, subprocess, sys, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

def start(name, cmdline=None, restore=None):
    sock = os.path.join(tmp, name + ".sock")
    log = os.path.join(tmp, name + ".console")
    err = open(os.path.join(tmp, name + ".err"), "wb")
    if restore:
        args = [shoal, "run", "--restore", restore, "--mem-recovery"]
    else:
        args = [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", "128M"]
    p = subprocess.Popen(args + ["--console", "file:" + log, "--api-socket", sock,
                                 "--timeout", "120", "-v"],
                         stdin=subprocess.DEVNULL, stderr=err)
    procs.append(p)
    for _ in range(400):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    return p, sock, log, err.name

def text(path):
    try:
        with open(path, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_for(path, s, secs=30, count=1):
    end = time.time() + secs
    while time.time() < end:
        if text(path).count(s) >= count: return True
        time.sleep(0.05)
    return False

def ctl(sock, req):
    s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sock)
    f = s.makefile("rwb")
    f.write((json.dumps(req) + "\n").encode()); f.flush()
    r = json.loads(f.readline()); s.close()
    return r

def type_into(sock, line):
    s = socket.socket(socket.AF_UNIX); s.connect(sock)
    f = s.makefile("rwb")
    f.write(b'{"cmd": "console-attach", "force": true}\n'); f.flush()
    assert json.loads(f.readline())["ok"]
    for ch in line.encode():
        s.sendall(bytes([ch])); time.sleep(0.002)
    return s

def finish(p, secs=30):
    try: p.wait(timeout=secs)
    except subprocess.TimeoutExpired: p.kill(); p.wait()
    return p.returncode

procs = []
def crashed(exc_type, exc, tb):
    # any exception is a FAIL line with what the VMM said, not a bare rc
    import traceback
    vmm = [(q.pid, q.poll()) for q in procs]
    print("FAIL: the test script: " + "".join(traceback.format_exception(exc_type, exc, tb))[-600:]
          .replace("\n", " | ") + f" VMMs (pid, status): {vmm}; restored VMM's stderr: "
          + text(os.path.join(tmp, "restored.err"))[-800:].replace("\n", " | "))
    for q in procs:
        if q.poll() is None: q.kill()
    sys.exit(1)
sys.excepthook = crashed

P0, PLEN = 0x2000000, 32 << 20          # the pattern
BAD1 = P0 + 5 * 4096                    # poisoned, has its good copy
W = 0x3000000                           # written after the restore
p, sock, log, _ = start("orig", f"fill {hex(P0)} 32M 7; echo filled; shell")
check("the guest filled 32 MiB and waits at its shell", wait_for(log, "shoal> ", 60), text(log)[-300:])
snap = os.path.join(tmp, "snap")
r = subprocess.run([shoal, "snapshot", "create", "--socket", sock, snap], capture_output=True,
                   text=True, timeout=120)
check("snapshot create", r.returncode == 0, r.stdout + r.stderr)
s = type_into(sock, "exit 3\r"); rc = finish(p); s.close()

p, sock, log, errf = start("restored", restore=snap)
check("restored with --mem-recovery", p.poll() is None and os.path.exists(sock), text(errf)[-600:])
check("the VMM hashed the restored pages", wait_for(errf, "mem-recovery: hashed", 10), text(errf)[-400:])
r = ctl(sock, {"cmd": "inject-memory-error", "gpa": BAD1 + 123})
if not r.get("ok") and ("EPERM" in r.get("error", "") or "not permitted" in r.get("error", "")
                        or "MEMORY_FAILURE" in r.get("error", "")):
    print("SKIP: mem_recovery: " + r["error"])
    ctl(sock, {"cmd": "stop", "mode": "force"}); finish(p)
    sys.exit(0)
check("inject-memory-error poisons a page of the pattern", r.get("ok") and r.get("gpa") == BAD1, r)
s = type_into(sock, f"verify {hex(P0)} 32M 7\r")
check("the guest's verify of the whole pattern passes", wait_for(log, "verify ok", 60), text(log)[-400:])
s.close()
check("the VMM logged the recovery", "memory error (action required) at guest page "
      f"{hex(BAD1)}: recovered from its good copy" in text(errf), text(errf)[-800:])
m = ctl(sock, {"cmd": "metrics"}).get("memory_errors", {})
check("metrics: one error, recovered, no machine check",
      m.get("events") == 1 and m.get("recovered") == 1 and m.get("machine_checks") == 0, m)
check("the guest saw no machine check", "mce addr=" not in text(log), text(log)[-300:])

s = type_into(sock, f"fill {hex(W)} 4096 9; echo wrote\r")
# twice: the shell echoes the typed line, which says "wrote" too
check("the guest wrote a page after the restore", wait_for(log, "wrote", 30, 2), text(log)[-300:])
s.close()
r = ctl(sock, {"cmd": "inject-memory-error", "gpa": W})
check("inject-memory-error poisons the written page", r.get("ok"), r)
s = type_into(sock, f"verify {hex(W)} 4096 9\r")
check("reading it is a machine check the guest reports with its address",
      wait_for(log, f"mce addr={hex(W)} ", 30), text(log)[-400:])
s.close()
time.sleep(0.3)
st = ctl(sock, {"cmd": "status"})
check("the VMM keeps running: status answers", p.poll() is None and st.get("ok")
      and st.get("state") == "running", (p.poll(), st))
m = ctl(sock, {"cmd": "metrics"}).get("memory_errors", {})
check("metrics: a second error, one machine check for a written page",
      m.get("events") == 2 and m.get("machine_checks") == 1 and m.get("written") == 1
      and m.get("recovered") == 1, m)
check("the VMM logged the machine check", f"machine check delivered to the guest: guest page {hex(W)}"
      in text(errf), text(errf)[-800:])
ctl(sock, {"cmd": "stop", "mode": "force"})
rc = finish(p)
check("the VMM ends when told to", rc == 0, (rc, text(errf)[-400:]))
print("note: " + " | ".join(l for l in text(errf).splitlines() if "memory error" in l or "mem-recovery" in l or "machine check" in l))
sys.exit(0 if ok else 1)
PY
finish
