#!/bin/bash
# zero_pages.sh - the zero-page layer (src/mem/zero_blocks.c, docs/memory.md)
# with the test guest under KVM:
#   - a 256 MiB guest fills 192 MiB, then zeroes 180 MiB of it (70 % of its
#     RAM); the scanner (--zero-scan) finds the zero 2 MiB blocks and gives
#     them back: the memfd's allocated bytes fall under 35 % of RAM;
#   - the guest then reads every word of its RAM (readall): the memfd's
#     allocation and the VMM's RssShmem stay under 35 % (a plain hole would
#     be allocated again by these reads);
#   - the 12 MiB it kept verifies, the zeroed range reads zero, and a write
#     into the zeroed range after the reads (a write-protect fault through
#     KVM) is kept: the guest verifies it, and the memfd grew by it;
#   - every thread of the VMM, the layer's two included, runs under seccomp;
#   - a --live snapshot is refused while the layer is on (it cannot share
#     the mapping's write protection yet);
#   - a snapshot afterwards restores: the kept pattern and the written range
#     verify in the restored guest.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import json, os, socket, subprocess, sys, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

MiB = 1 << 20
RAM = 256 * MiB
def start(name, cmdline, extra=(), restore=None):
    sock = os.path.join(tmp, name + ".sock")
    log = os.path.join(tmp, name + ".console")
    if restore:
        args = [shoal, "run", "--restore", restore]
    else:
        args = [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", "256M", *extra]
    p = subprocess.Popen(args + ["--console", "file:" + log, "--api-socket", sock,
                                 "--timeout", "240", "-v"],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    return p, sock, log

def console(log):
    try:
        with open(log, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_console(log, text, secs=60, count=1):
    end = time.time() + secs
    while time.time() < end:
        if console(log).count(text) >= count: return True
        time.sleep(0.1)
    return False

def type_into(sock, text):
    s = socket.socket(socket.AF_UNIX); s.connect(sock)
    f = s.makefile("rwb")
    f.write(b'{"cmd": "console-attach", "force": true}\n'); f.flush()
    reply = json.loads(f.readline())
    assert reply["ok"], reply
    for ch in text.encode():
        s.sendall(bytes([ch])); time.sleep(0.002)
    return s

def finish(p, secs=120):
    try:
        p.wait(timeout=secs)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    return p.returncode, p.stderr.read().decode(errors="replace")

def memfd_alloc(pid):
    d = f"/proc/{pid}/fd"
    for n in os.listdir(d):
        try:
            if "shoal-guest-ram" in os.readlink(os.path.join(d, n)):
                st = os.stat(os.path.join(d, n))
                if st.st_size == RAM:
                    return st.st_blocks * 512
        except OSError:
            pass
    return -1

def status_kb(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return -1

Z0, ZLEN = 0x2000000, 180 * MiB          # zeroed: 70 % of RAM
K0, KLEN = Z0 + ZLEN, 12 * MiB           # kept
W0 = Z0 + 64 * MiB                       # written again after the reads
cmd = (f"fill {hex(Z0)} 192M 7; zero {hex(Z0)} {ZLEN}; echo zeroed; shell")
p, sock, log = start("zp", cmd, ("--zero-scan", "200000"))
check("guest filled 192 MiB, zeroed 180 MiB, waits at its shell",
      wait_console(log, "shoal> ", 90), console(log)[-400:])
peak = memfd_alloc(p.pid)
check("the fill allocated most of the memfd (the scanner already races the zeroing)",
      peak >= 0.5 * RAM, peak >> 20)
t0 = time.time()
alloc = peak
while time.time() - t0 < 60:
    alloc = memfd_alloc(p.pid)
    if 0 <= alloc < 0.35 * RAM: break
    time.sleep(0.2)
print(f"figure: scanner released {(peak - alloc) >> 20} MiB in {time.time() - t0:.1f} s "
      f"(memfd {peak >> 20} -> {alloc >> 20} MiB of 256)")
check("the scanner gave the zero blocks back: memfd under 35 % of RAM",
      0 <= alloc < 0.35 * RAM, alloc >> 20)

tasks = os.listdir(f"/proc/{p.pid}/task")
filt = [t for t in tasks if "Seccomp:\t2" in open(f"/proc/{p.pid}/task/{t}/status").read()]
check("every VMM thread is filtered by seccomp, the layer's handler and scanner too",
      len(tasks) >= 5 and len(filt) == len(tasks), (len(filt), len(tasks)))

s = type_into(sock, "readall\r")
ok_read = wait_console(log, "readall bytes=", 120)
s.close()
time.sleep(0.3)
alloc2, rss_shmem = memfd_alloc(p.pid), status_kb(p.pid, "RssShmem")
rss_anon = status_kb(p.pid, "RssAnon")
line = [l for l in console(log).splitlines() if "readall bytes=" in l]
print(f"figure: after the guest read all its RAM: memfd {alloc2 >> 20} MiB, RssShmem "
      f"{rss_shmem >> 20} MiB, RssAnon {rss_anon >> 20} MiB of 256 MiB RAM; {line[-1:] }")
check("the guest read every word of its RAM", ok_read and line, console(log)[-300:])
check("after reading it all, the memfd stays under 35 % of RAM", 0 <= alloc2 < 0.35 * RAM, alloc2 >> 20)
check("after reading it all, RssShmem stays under 35 % of RAM", 0 <= rss_shmem < 0.35 * RAM,
      rss_shmem >> 20)

t1 = time.time()
s = type_into(sock, f"verify {hex(K0)} {KLEN} 7\r")
check("the kept 30 % verifies after the reads", wait_console(log, "verify ok", 120), console(log)[-300:])
s.close()
print(f"note: verify of the kept 12 MiB took {time.time() - t1:.1f} s")
t1 = time.time()
s = type_into(sock, f"fill {hex(W0)} 4M 9; verify {hex(W0)} 4M 9\r")
check("a write into a zeroed block after the reads verifies (write-protect fault through KVM)",
      wait_console(log, "verify ok", 120, 2), console(log)[-500:])
s.close()
print(f"note: fill+verify of 4 MiB in zeroed blocks took {time.time() - t1:.1f} s")
check("that write went to the memfd (it grew by about 4 MiB)",
      memfd_alloc(p.pid) - alloc2 >= 4 * MiB, (memfd_alloc(p.pid) - alloc2) >> 20)

snap = os.path.join(tmp, "snap")
r = subprocess.run([shoal, "snapshot", "create", "--socket", sock, snap + "-live", "--live"],
                   capture_output=True, text=True, timeout=120)
check("--live is refused while the layer is on, saying so, and makes nothing",
      r.returncode != 0 and "zero-page layer" in r.stderr and not os.path.exists(snap + "-live"),
      (r.returncode, r.stderr))
r = subprocess.run([shoal, "snapshot", "create", "--socket", sock, snap], capture_output=True,
                   text=True, timeout=300)
check("snapshot create after the reads", r.returncode == 0, r.stdout + r.stderr)
s = type_into(sock, "exit 3\r")
rc, err = finish(p)
s.close()
check("the VM exited 3", rc == 3, (rc, err[-500:]))
zl = [l for l in err.splitlines() if "zero-page layer" in l]
print("note: " + " | ".join(zl))
check("the layer was on and answered reads with the zero page",
      any("read faults" in l for l in zl) and not any("read faults 0," in l for l in zl), zl)

p, sock, log = start("restored", None, restore=snap)
if p.poll() is not None:
    print("restore failed:", p.returncode, p.stderr.read().decode(errors="replace")[-800:])
    sys.exit(1)
time.sleep(1)
s = type_into(sock, f"verify {hex(K0)} {KLEN} 7; verify {hex(W0)} 4M 9; readall; exit 5\r")
rc, err = finish(p)
s.close()
c = console(log)
check("restored: kept data and the later write verify, exit 5",
      rc == 5 and c.count("verify ok") >= 2, (rc, err[-300:], c[-500:]))
print(f"figure: restored guest memfd readall: {[l for l in c.splitlines() if 'readall' in l][-1:]}")
sys.exit(0 if ok else 1)
PY
