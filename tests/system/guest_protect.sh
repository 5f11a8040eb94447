#!/bin/bash
# guest_protect.sh - guest-set page protection with a fault handler in the
# guest (pv-protect: src/devices/pv_protect.c, src/vmm/mem_protect.c,
# docs/memory.md), with the test guest on 2 vCPUs under KVM:
#   - PROTECT before REGISTER is refused (status 6);
#   - a write from vCPU 1 into a read-only page is caught and reported
#     to the handler on vCPU 0 with its address, vCPU and data; refused,
#     the page keeps its old bytes; allowed, it holds the new ones;
#   - a read of a read-only page is no fault;
#   - a fault nobody answers is refused after the registered timeout, and
#     the VMM logs it;
#   - a read of an inaccessible page is caught; refused it returns the
#     handler's value, allowed the real one;
#   - after UNPROTECT, writes go through with no fault;
#   - bad requests get their codes (misaligned, zero length, bad mode,
#     outside RAM, a wrapping length, the shared page, overlap, the 17th
#     range, unknown range or fault, a bad GSI, REGISTER again with
#     ranges, a misaligned request block ignored);
#   - a VM restored from a snapshot keeps the registration: it protects
#     and catches a write without registering again;
#   - the metrics reply counts the faults, verdicts and ranges;
#   - a snapshot while a range is protected is refused with a clear error,
#     and succeeds once the guest removed it.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm guest_protect

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import json, os, re, socket, subprocess, sys, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

A = 0x2000000          # read-only range: 2 pages
N = 0x2010000          # inaccessible page
BAD = 0x2100000        # 34 pages for the hostile requests
cmds = [
    f"protect ro {A:#x} 0x1000 expect=6",
    "protect register timeout=300",
    f"protect write {A:#x} 0x1111111111111111 cpu=1",
    f"protect write {N:#x} 0x5555555555555555 cpu=1",
    f"protect ro {A:#x} 0x2000",
    f"protect read {A:#x} cpu=1",
    f"protect write {A:#x} 0x2222222222222222 cpu=1 answer=refuse",
    f"protect peek {A:#x}",
    f"protect write {A + 0x1008:#x} 0x3333333333333333 cpu=1 answer=allow",
    f"protect peek {A + 0x1008:#x}",
    f"protect write {A + 0x10:#x} 0x4444444444444444 cpu=1 answer=none",
    f"protect peek {A + 0x10:#x}",
    f"protect na {N:#x} 0x1000",
    f"protect read {N:#x} cpu=1 answer=refuse value=0xdead",
    f"protect read {N:#x} cpu=1 answer=allow",
    f"protect unprotect {A:#x} 0x2000",
    f"protect write {A:#x} 0x6666666666666666 cpu=1",
    f"protect peek {A:#x}",
    f"protect unprotect {N:#x} 0x1000",
    f"protect unprotect {N:#x} 0x1000 expect=5",
    f"protect bad {BAD:#x}",
    f"protect ro {A:#x} 0x1000",
    "echo protected-for-snapshot",
    "shell",
]
sock = os.path.join(tmp, "vm.sock")
log = os.path.join(tmp, "vm.console")
p = subprocess.Popen([shoal, "run", "--kernel", guest, "--cmdline", "; ".join(cmds),
                      "--memory", "64M", "--cpus", "2", "--console", "file:" + log,
                      "--api-socket", sock, "--timeout", "120", "-v"],
                     stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)

def console(log=log):
    try:
        with open(log, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def reports(log=log):
    return [part.strip() for l in console(log).splitlines() for part in l.split("shoal-guest: ")[1:]]

def wait_report(text, secs=60, count=1, log=log, proc=p):
    end = time.time() + secs
    while time.time() < end:
        if sum(text in l for l in reports(log)) >= count: return True
        if proc.poll() is not None: return False
        time.sleep(0.1)
    return False

def ctl(obj, sock=sock):
    c = socket.socket(socket.AF_UNIX); c.connect(sock)
    c.sendall((json.dumps(obj) + "\n").encode())
    line = c.makefile().readline(); c.close()
    return json.loads(line)

def type_into(text, sock=sock):
    s = socket.socket(socket.AF_UNIX); s.connect(sock)
    f = s.makefile("rwb")
    f.write(b'{"cmd": "console-attach", "force": true}\n'); f.flush()
    reply = json.loads(f.readline())
    assert reply["ok"], reply
    for ch in text.encode():
        s.sendall(bytes([ch])); time.sleep(0.002)
    return s

def snapshot(d):
    return subprocess.run([shoal, "snapshot", "create", "--socket", sock, d],
                          capture_output=True, text=True, timeout=120)

reached = wait_report("protected-for-snapshot", 90)
R = reports()
check("the command list ran to the snapshot point", reached, "\n".join(R[-8:]) or console()[-2000:])

def line(prefix, n=1):
    got = [l for l in R if l.startswith(prefix)]
    return got[n - 1] if len(got) >= n else ""

def field(l, key):
    m = re.search(r"\b" + key + r"=(\S+)", l)
    return m.group(1) if m else None

l = line("protect ro ")
check("PROTECT before REGISTER: status 6 (no handler)", field(l, "status") == "6", R[:8])
l = line("protect register")
check("REGISTER: status 0, the shared page carries the magic",
      field(l, "status") == "0" and field(l, "magic") == "ok", l)
l = line("protect write ", 1) + " | " + line("protect write ", 2)
check("writes before any protection: no fault", l.count("faults=0") == 2, l)
l = line("protect read ", 1)
check("a read of a read-only page: no fault, the old value",
      field(l, "faults") == "0" and field(l, "got") == "0x1111111111111111", l)

faults = [l for l in R if l.startswith("protect fault ")]
f1 = faults[0] if faults else ""
check("a write from vCPU 1 is caught and reported with its address",
      field(f1, "gpa") == hex(A) and field(f1, "cpu") == "1" and " write " in f1 and
      field(f1, "data") == "0x2222222222222222" and field(f1, "len") == "8", f1)
l = line("protect peek ", 1)
check("refused: the page keeps its old bytes", field(l, "value") == "0x1111111111111111", l)
f2 = faults[1] if len(faults) > 1 else ""
check("the second fault: its own address and a new seq",
      field(f2, "gpa") == hex(A + 0x1008) and field(f2, "seq") not in (None, field(f1, "seq")), f2)
l = line("protect peek ", 2)
check("allowed: the page holds the new bytes", field(l, "value") == "0x3333333333333333", l)
l = line("protect write ", 5)
check("unanswered: refused after the timeout", field(l, "faults") == "1" and
      field(l, "timeouts") == "1", l)
l = line("protect peek ", 3)
check("unanswered: the page keeps its old bytes (zero)", field(l, "value") == "0x0", l)
f4 = faults[3] if len(faults) > 3 else ""
check("an inaccessible page: the read is caught", field(f4, "gpa") == hex(N) and " read " in f4, f4)
l = line("protect read ", 2)
check("refused read: the handler's value", field(l, "got") == "0xdead", l)
l = line("protect read ", 3)
check("allowed read: the real bytes", field(l, "got") == "0x5555555555555555" and
      field(l, "faults") == "1", l)
l = line("protect write ", 6)
check("after UNPROTECT: the write goes through with no fault", field(l, "faults") == "0", l)
l = line("protect peek ", 4)
check("after UNPROTECT: the new bytes", field(l, "value") == "0x6666666666666666", l)
l = line("protect unprotect ", 3)
check("UNPROTECT of a range that is not there: status 5", field(l, "status") == "5", l)
l = line("protect bad ")
check("bad requests get their codes, nothing is left protected", l.endswith(" ok") and
      "misaligned=1 zero_len=1 mode=1 outside=2 huge=2 shared=7 overlap=3 nospc=4 noent=5 "
      "answer=5 gsi=1 again=8 ignored=1 left=0" in l, l)
check("no other command failed", not any(x.startswith("error") for x in R),
      [x for x in R if x.startswith("error")])

if reached:
    m = ctl({"cmd": "metrics"}).get("devices", {}).get("pv-protect", {})
    check("metrics: pv-protect's counters (5 faults: 2 allowed, 3 refused, 1 timeout; 1 range)",
          m.get("registered") is True and m.get("ranges") == 1 and m.get("faults") == 5 and
          m.get("allowed") == 2 and m.get("refused") == 3 and m.get("timeouts") == 1, m)
    d = os.path.join(tmp, "snap1")
    r = snapshot(d)
    check("a snapshot while a range is protected is refused with a clear error",
          r.returncode != 0 and "protected page range" in r.stderr and not os.path.exists(d),
          (r.returncode, r.stderr))
    s = type_into(f"protect unprotect {A:#x} 0x1000\n")
    got = wait_report(f"protect unprotect addr={A:#x} len=0x1000 status=0", 30)
    d = os.path.join(tmp, "snap2")
    r = snapshot(d) if got else None
    check("once the guest removed it, the snapshot is taken",
          r is not None and r.returncode == 0 and os.path.isdir(d), r and (r.returncode, r.stderr))
    s.sendall(b"exit 0\n")
    s.close()
try:
    p.wait(timeout=60)
except subprocess.TimeoutExpired:
    p.kill(); p.wait()
err = p.stderr.read().decode(errors="replace")

# the registration (page, timeout) is device state: a restored guest
# protects and handles a fault without registering again
d = os.path.join(tmp, "snap2")
if os.path.isdir(d):
    sock2, log2 = os.path.join(tmp, "r.sock"), os.path.join(tmp, "r.console")
    p2 = subprocess.Popen([shoal, "run", "--restore", d, "--console", "file:" + log2,
                           "--api-socket", sock2, "--timeout", "60", "-v"],
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(sock2) or p2.poll() is not None: break
        time.sleep(0.05)
    s = type_into(f"protect ro {A:#x} 0x1000; protect write {A:#x} 0x7777 cpu=1 answer=refuse; "
                  f"protect peek {A:#x}\n", sock2)
    got = wait_report("protect peek ", 30, log=log2, proc=p2)
    R2 = reports(log2)
    f = [l for l in R2 if l.startswith("protect fault ")]
    pk = [l for l in R2 if l.startswith("protect peek ")]
    check("restored: the registration holds; a refused write is caught, the old bytes stay",
          got and f and field(f[0], "gpa") == hex(A) and field(f[0], "cpu") == "1" and
          pk and field(pk[0], "value") == "0x6666666666666666", R2[-6:])
    s.sendall(b"exit 0\n")
    s.close()
    try:
        p2.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p2.kill(); p2.wait()
    check("restored: the VM exits 0", p2.returncode == 0,
          (p2.returncode, p2.stderr.read().decode(errors="replace")[-800:]))
check("the VMM logs the unanswered fault", "no answer to fault" in err and "refused" in err,
      err[-1500:])
check("the VM exits 0", p.returncode == 0, (p.returncode, err[-800:]))
sys.exit(0 if ok else 1)
PY
[ $? = 0 ] || T_FAILED=1
finish
