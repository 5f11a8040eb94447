#!/bin/bash
# migrate_tls.sh - a live migration's stream over TLS 1.3 with the key as
# a pre-shared key (docs/migration.md, "Encryption"; state/migrate_tls.c),
# and the destination's limit on failed handshakes per peer, between VMMs
# on this host with the test guest, seccomp on everywhere:
#   - `--incoming ...,tls=on` without key-file is refused (64);
#   - a migration with the key but no TLS, through a relay in this test
#     that copies the bytes: the guest's fill pattern is on the wire;
#   - against a destination with tls=on,fail-limit=3,fail-window=4: a
#     source with another key fails the TLS handshake (70, "another key")
#     and its VM runs on, its VMM without libssl mapped; a source without
#     --tls is told the destination takes TLS only; a source without a key
#     likewise; the right source is then refused at once (3 failures from
#     127.0.0.1) and runs on; after the window it migrates over TLS
#     through the relay: none of the pattern is on the wire, the
#     destination logged TLSv1.3 with TLS_AES_256_GCM_SHA384, and its
#     guest verifies its memory.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm migrate_tls

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import json, os, socket, struct, subprocess, sys, threading, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

A = 0x2000000
MEM = "64M"
CMDLINE = f"fill {A:#x} 8M 7; shell"
SECCOMP = ("--seccomp", "on")
M64 = (1 << 64) - 1

def pattern(addr, seed=7):
    z = (addr ^ (seed * 0xd6e8feb86659fd93)) & M64
    z = (z + 0x9e3779b97f4a7c15) & M64
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)

# 64 bytes of the guest's pattern at three places of the filled range
NEEDLES = [b"".join(struct.pack("<Q", pattern(a + 8 * i)) for i in range(8))
           for a in (A + 0x10000, A + 0x400000, A + 0x7ff000)]

def keyfile(name, data):
    p = os.path.join(tmp, name)
    with open(p, "wb") as f: f.write(data)
    os.chmod(p, 0o600)
    return p

KEY = keyfile("key", os.urandom(32))
OTHER = keyfile("other.key", os.urandom(32))

def console(log):
    try:
        with open(log, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_for(pred, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if pred(): return True
        time.sleep(0.02)
    return False

def run_vm(name, extra=()):
    sock, log, err = (os.path.join(tmp, name + x) for x in (".sock", ".console", ".err"))
    p = subprocess.Popen([shoal, "run", "--kernel", guest, "--cmdline", CMDLINE, "--memory", MEM,
                          "--console", "file:" + log, "--api-socket", sock, "--timeout", "300",
                          "-v", *SECCOMP, *extra], stdin=subprocess.DEVNULL, stderr=open(err, "w"))
    return p, sock, log, err

def dest(name, uri):
    d = run_vm(name, ("--incoming", uri))
    wait_for(lambda: "waiting on" in console(d[3]) or d[0].poll() is not None, 30)
    return d

def ctl(sock, obj):
    c = socket.socket(socket.AF_UNIX); c.connect(sock)
    c.sendall((json.dumps(obj) + "\n").encode())
    line = c.makefile().readline(); c.close()
    return json.loads(line)

def migrate(sock, uri, *extra, timeout=120):
    return subprocess.run([shoal, "migrate", "--socket", sock, uri, *extra],
                          capture_output=True, text=True, timeout=timeout)

def finish(p, secs=60):
    try: p.wait(timeout=secs)
    except subprocess.TimeoutExpired: p.kill(); p.wait()
    return p.returncode

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    return port

def running(vm):
    try: return vm[0].poll() is None and ctl(vm[1], {"cmd": "status"}).get("state") == "running"
    except OSError: return False

def maps_ssl(p):
    try:
        with open(f"/proc/{p.pid}/maps") as f: return "libssl" in f.read()
    except OSError: return None

class Relay:
    """Listens on a port of its own, forwards one connection to `port`
    and keeps what the source sent."""
    def __init__(self, port):
        self.ls = socket.socket(); self.ls.bind(("127.0.0.1", 0)); self.ls.listen(1)
        self.port, self.to, self.seen = self.ls.getsockname()[1], port, bytearray()
        self.t = threading.Thread(target=self.run, daemon=True); self.t.start()
    def pump(self, a, b, keep):
        try:
            while True:
                d = a.recv(1 << 16)
                if not d: break
                if keep: self.seen += d
                b.sendall(d)
        except OSError: pass
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
    def run(self):
        c, _ = self.ls.accept()
        d = socket.create_connection(("127.0.0.1", self.to))
        back = threading.Thread(target=self.pump, args=(d, c, False), daemon=True); back.start()
        self.pump(c, d, True); back.join(10)
        c.close(); d.close(); self.ls.close()
    def found(self):
        self.t.join(30)
        return [n in self.seen for n in NEEDLES]

r = subprocess.run([shoal, "run", "--kernel", guest, "--memory", MEM, "--incoming",
                    f"tcp:127.0.0.1:{free_port()},tls=on"], capture_output=True, text=True, timeout=60)
check("--incoming tcp:...,tls=on without key-file: 64, saying it needs the key",
      r.returncode == 64 and "tls=on needs key-file" in r.stderr, (r.returncode, r.stderr))

src = run_vm("src")
check("the source guest filled its pattern", wait_for(lambda: "shoal> " in console(src[2])),
      console(src[3])[-300:])

# ---- with the key, without TLS: the pattern is on the wire ----
p1 = free_port()
d1 = dest("d1", f"tcp:127.0.0.1:{p1},key-file={KEY}")
relay = Relay(p1)
r = migrate(src[1], f"tcp:127.0.0.1:{relay.port}", "--key-file", KEY)
check("a migration with the key, in clear, through the relay: status 0", r.returncode == 0,
      (r.returncode, r.stderr, console(d1[3])[-500:]))
seen = relay.found()
check(f"... the guest's pattern is on the wire in clear ({len(relay.seen) >> 20} MiB seen)",
      all(seen), seen)
finish(src[0])
check("the destination (now the source) runs the VM",
      wait_for(lambda: os.path.exists(d1[1]) and running(d1), 30), console(d1[3])[-300:])
check("a VMM that migrated in clear maps no libssl", maps_ssl(d1[0]) is False, maps_ssl(d1[0]))

# ---- a TLS destination ----
p2 = free_port()
uri2 = f"tcp:127.0.0.1:{p2}"
d2 = dest("d2", f"{uri2},key-file={KEY},tls=on,fail-limit=3,fail-window=4")
check("the TLS destination waits, saying so", "over TLS" in console(d2[3]), console(d2[3])[-300:])
check("... it mapped libssl (loaded before its filters)", maps_ssl(d2[0]) is True)

r = migrate(d1[1], uri2, "--key-file", OTHER, "--tls")
check("a source with another key: the TLS handshake fails, 70, saying another key",
      r.returncode == 70 and "TLS handshake failed" in r.stderr and "another key" in r.stderr,
      (r.returncode, r.stderr))
check("... its VM runs on", running(d1))
check("... and its VMM never mapped libssl (shoal migrate does TLS)", maps_ssl(d1[0]) is False)
r = migrate(d1[1], uri2, "--key-file", KEY)
check("a source with the key but without --tls: refused, told to use --tls",
      r.returncode == 70 and "only over TLS" in r.stderr and "--tls" in r.stderr,
      (r.returncode, r.stderr))
check("... its VM runs on", running(d1))
r = migrate(d1[1], uri2)
check("a source without key: refused (in clear, TLS only)",
      r.returncode == 70 and "only over TLS" in r.stderr, (r.returncode, r.stderr))
check("... its VM runs on", running(d1))
t_blocked = time.time()
r = migrate(d1[1], uri2, "--key-file", KEY, "--tls")
check("after 3 failures from 127.0.0.1, even the right source is refused at once, saying why",
      r.returncode == 70 and "failed 3 handshakes within 4 s" in r.stderr and
      "refused for another" in r.stderr, (r.returncode, r.stderr))
check("... its VM runs on", running(d1))
check("the destination still waits", d2[0].poll() is None, console(d2[3])[-500:])

time.sleep(max(0.0, 4.3 - (time.time() - t_blocked)))
relay = Relay(p2)
r = migrate(d1[1], f"tcp:127.0.0.1:{relay.port}", "--key-file", KEY, "--tls", "--output", "json")
try: info = json.loads(r.stdout)
except ValueError: info = {}
check("after the window the right source migrates over TLS through the relay (0, done)",
      r.returncode == 0 and info.get("state") == "done", (r.returncode, r.stdout, r.stderr))
seen = relay.found()
check(f"... none of the guest's pattern is on the wire ({len(relay.seen) >> 20} MiB seen)",
      len(relay.seen) > (8 << 20) and not any(seen), (len(relay.seen), seen))
check("the source exited 0", finish(d1[0]) == 0, console(d1[3])[-300:])
err = console(d2[3])
check("the destination logged the refusals and the TLS session",
      "the TLS handshake failed" in err and "only over TLS" in err and
      "failed 3 handshakes within 4 s" in err and "TLSv1.3 TLS_AES_256_GCM_SHA384" in err,
      err[-1500:])
s = None
if wait_for(lambda: os.path.exists(d2[1]) or d2[0].poll() is not None, 30) and d2[0].poll() is None:
    s = socket.socket(socket.AF_UNIX); s.connect(d2[1]); f = s.makefile("rwb")
    f.write(b'{"cmd": "console-attach", "force": true}\n'); f.flush(); f.readline()
    for ch in f"verify {A:#x} 8M 7; exit 5\r".encode():
        s.sendall(bytes([ch])); time.sleep(0.002)
rc = finish(d2[0])
if s: s.close()
check("the TLS destination's guest verifies its pattern and exits 5",
      rc == 5 and "verify ok" in console(d2[2]), (rc, console(d2[2])[-300:], err[-300:]))
sys.exit(0 if ok else 1)
PY
T_FAILED=$?
finish
