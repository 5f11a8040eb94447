#!/bin/bash
# control.sh - the VMM control socket (docs/vmm-control.md) driven as shoald
# drives it: status, pause/resume, metrics, console log and attach (its
# reply before any guest output, however busy the console), graceful
# and forced stop, bad requests, and a second VMM refused on a live socket.
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

def start(name, extra=()):
    sock = os.path.join(tmp, name + ".sock")
    cmdline = "vblk; shell" if extra else "shell"
    p = subprocess.Popen([shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--cpus", "2",
                          "--console", "none", "--api-socket", sock, "--timeout", "120", *extra],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        if os.path.exists(sock): break
        time.sleep(0.05)
    return p, sock

class Conn:
    def __init__(self, sock):
        self.s = socket.socket(socket.AF_UNIX); self.s.connect(sock); self.f = self.s.makefile("rwb")
    def req(self, o):
        self.f.write((json.dumps(o) + "\n").encode()); self.f.flush()
        line = self.f.readline()
        return json.loads(line) if line else None

p, sock = start("a")
c = Conn(sock)
st = c.req({"cmd": "status"})
check("status: running, pid, cpus, memory, config", st["ok"] and st["state"] == "running" and st["pid"] == p.pid
      and st["cpus"] == 2 and st["memory"] == 256 << 20 and st["config"]["kernel"] == guest, st)
time.sleep(0.3)
log = c.req({"cmd": "console-log"}); data = c.f.read(log["bytes"])
check("console-log returns the console so far", b"shoal-guest: ready cpus=2" in data, data[-200:])
check("pause", c.req({"cmd": "pause"})["state"] == "paused")
m1 = c.req({"cmd": "metrics"}); time.sleep(0.5); m2 = c.req({"cmd": "metrics"})
# parked threads may wake for a few microseconds (a resume check), never run the guest
check("paused vCPUs do not run the guest", all(b["exits"] == a["exits"] and b["cpu_time_ns"] - a["cpu_time_ns"] < 1000000
                                              for a, b in zip(m1["vcpus"], m2["vcpus"])), (m1["vcpus"], m2["vcpus"]))
check("metrics: resident memory and devices", m2["rss_bytes"] > m2["guest_rss_bytes"] > 0 and "serial0" in m2["devices"], m2)
check("pause twice is fine", c.req({"cmd": "pause"})["state"] == "paused")
check("resume", c.req({"cmd": "resume"})["state"] == "running")
r = c.req({"cmd": "bogus"})
check("unknown command is an error", r["ok"] is False and "bogus" in r["error"], r)
r = c.req({"no": "cmd"})
check("request without cmd is an error", r["ok"] is False, r)
r = c.req({"cmd": "stop", "mode": "sideways"})
check("stop with a bad mode is an error", r["ok"] is False and "sideways" in r["error"], r)
r = c.req({"cmd": "balloon", "target_bytes": 4096})
check("balloon without a balloon device is an error", r["ok"] is False and "no balloon device" in r["error"]
      and "balloon" not in c.req({"cmd": "status"}), r)
# a second VMM on the same socket is refused
q = subprocess.run([shoal, "run", "--kernel", guest, "--console", "none", "--api-socket", sock],
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
check("second VMM refused on a live socket", q.returncode == 64 and b"another process is listening" in q.stderr, q.stderr)
# console attach: one writer; force takes over; typed bytes reach the guest
a1 = Conn(sock); r1 = a1.req({"cmd": "console-attach"})
a2 = Conn(sock); r2 = a2.req({"cmd": "console-attach"})
check("second console-attach refused", r1["ok"] and r2["ok"] is False and "attached elsewhere" in r2["error"], (r1, r2))
a3 = Conn(sock); r3 = a3.req({"cmd": "console-attach", "force": True})
a1.s.settimeout(5)
try: gone = a1.s.recv(100) == b""
except Exception: gone = False
check("force takes the console over and drops the old client", r3["ok"] and gone, r3)
a3.s.sendall(b"echo via-control\r")
buf = b""; end = time.time() + 10
a3.s.settimeout(1)
while b"via-control" not in buf and time.time() < end:
    try: buf += a3.s.recv(4096)
    except socket.timeout: pass
check("attached console: typed bytes reach the guest and output comes back", b"via-control" in buf, buf[-200:])
# attaching while the guest prints: the reply comes first, the output after it
a3.s.sendall(b"ioseq 4000\r")
last, bad = a3, []
for i in range(30):
    a = Conn(sock)
    a.f.write(b'{"cmd": "console-attach", "force": true}\n'); a.f.flush()
    line = a.f.readline()
    try: ok_line = json.loads(line).get("ok") is True
    except ValueError: ok_line = False
    if not ok_line: bad.append(line[:60])
    last = a
buf = b""; end = time.time() + 60
last.s.settimeout(1)
while b"\n4000\r\n" not in buf and b"\n4000\n" not in buf and time.time() < end:
    try: buf += last.s.recv(65536)
    except socket.timeout: pass
check("console-attach while the guest prints: each of 30 replies is the first line, the "
      "output follows", not bad and b"4000" in buf, (bad[:3], buf[-100:]))
# oversized request line: error, then the connection is closed
big = Conn(sock); big.s.sendall(b"{" + b" " * (70 * 1024))
r = json.loads(big.f.readline() or b"{}")
check("request line over 64 KiB refused", r.get("ok") is False and "64 KiB" in r.get("error", ""), r)
# graceful stop: ACPI power button, the test guest powers off
r = c.req({"cmd": "stop"})
rc = p.wait(30)
check("graceful stop: guest powers off, status 0", r["ok"] and rc == 0, (r, rc, p.stderr.read()[-300:]))
check("socket removed when the VMM exits", not os.path.exists(sock))
# forced stop of a guest that ignores the button (busy, not at its prompt)
p = subprocess.Popen([shoal, "run", "--kernel", guest, "--cmdline", "spin 60000", "--console", "none",
                      "--api-socket", sock, "--timeout", "120", "-v"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
for _ in range(100):
    if os.path.exists(sock): break
    time.sleep(0.05)
c = Conn(sock)
c.req({"cmd": "stop"}); time.sleep(1)
alive = p.poll() is None
r = c.req({"cmd": "stop", "mode": "force"})
rc = p.wait(30); err = p.stderr.read().decode()
check("forced stop ends a guest that ignores the button", alive and rc == 0 and "stopped through the control socket" in err, (alive, rc, err[-200:]))
# metrics carry each virtio device's requests and bytes (shoald's disk/net figures)
img = os.path.join(tmp, "disk.img")
with open(img, "wb") as fimg: fimg.truncate(16 << 20)
p, sock = start("d", ("--disk", img))
c = Conn(sock)
text = b""; end = time.time() + 30
while b"vblk ok" not in text and time.time() < end:
    time.sleep(0.2)
    r = c.req({"cmd": "console-log"}); text = c.f.read(r["bytes"])
m = c.req({"cmd": "metrics"})
v = m["devices"].get("virtio-blk0", {}).get("virtio", {})
check("metrics: virtio-blk requests and bytes both ways", b"vblk ok" in text and v.get("requests", 0) > 0
      and v.get("bytes_in", 0) > 0 and v.get("bytes_out", 0) > 0, (v, text[-200:]))
dk = (m.get("disks") or [{}])[0]
check("metrics: disks[] with read/write bytes and operations", dk.get("name") == "virtio-blk0"
      and dk.get("read_bytes", 0) > 0 and dk.get("write_bytes", 0) > 0 and dk.get("read_ops", 0) > 0
      and dk.get("write_ops", 0) > 0 and m.get("nets") == [], m.get("disks"))
c.req({"cmd": "stop", "mode": "force"}); p.wait(30)
sys.exit(0 if ok else 1)
PY
T_FAILED=$?
finish
