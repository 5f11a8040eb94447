"""tests/system/vmtest.py - what the Python parts of the system tests share:
PASS/FAIL lines, waiting for files and console text, typing into a VMM's
console, talking to its control socket, and starting test-guest VMMs
(sources and --incoming destinations) and `shoal migrate`.

A script imports it with the directory of this file on sys.path:

    python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
    import sys; sys.path.insert(0, "tests/system")   # or the script's own dir
    from vmtest import *
    T = Test(*sys.argv[1:4])

Every wait is bounded; nothing here sleeps longer than it must (each
process start costs a good part of a second in the KVM box).  Every VMM
that Test.start started and that still runs when the script exits (a
failed check, an exception) is killed then.
"""
import atexit
import json
import os
import socket
import subprocess
import time


def text(path):
    """The file's contents as text ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def wait_for(cond, secs, step=0.05):
    """Poll cond() until it is true or secs pass; its last value."""
    end = time.time() + secs
    while True:
        v = cond()
        if v or time.time() >= end:
            return v
        time.sleep(step)


def wait_path(path, p=None, secs=60):
    """Wait until path exists (False at once if process p ended)."""
    return wait_for(lambda: os.path.exists(path) or (p is not None and p.poll() is not None),
                    secs) and os.path.exists(path)


def wait_text(path, s, secs=60):
    return wait_for(lambda: s in text(path), secs, 0.05)


def ctl(sock, obj, secs=30):
    """One request on a VMM's control socket; its reply ({} when none came)."""
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(secs)
    try:
        c.connect(sock)
        c.sendall((json.dumps(obj) + "\n").encode())
        line = c.makefile().readline()
        return json.loads(line) if line else {}
    except (OSError, ValueError):
        return {}
    finally:
        c.close()


def type_into(sock, s, delay=0.002):
    """Attach to the VMM's console and type s; the attached socket (close
    it when done)."""
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock)
    f = c.makefile("rwb")
    f.write(b'{"cmd": "console-attach", "force": true}\n')
    f.flush()
    if not json.loads(f.readline()).get("ok"):
        raise RuntimeError("console-attach refused")
    for ch in s.encode():
        c.sendall(bytes([ch]))
        time.sleep(delay)
    return c


def json_or_empty(s):
    """s parsed as JSON ({} when it is not)."""
    try:
        return json.loads(s)
    except ValueError:
        return {}


def wait_migrating(sock, m, secs=30):
    """Wait until the VMM on sock is sending pages in its migration (round
    0 under way: dirty tracking on), or the `shoal migrate` process m ended."""
    def sending():
        st = ctl(sock, {"cmd": "migrate-status"}, secs=5)
        return st.get("state") == "active" and st.get("pages_sent", 0) > 0
    return wait_for(lambda: m.poll() is not None or sending(), secs)


def finish(p, secs=60):
    """Wait for p (killing it after secs); its status."""
    try:
        p.wait(timeout=secs)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return p.returncode


class VM:
    """A VMM started by Test.start: its process, control socket, console log
    and stderr log."""

    def __init__(self, p, sock, log, err):
        self.p, self.sock, self.log, self.err = p, sock, log, err

    def console(self):
        return text(self.log)

    def stderr(self):
        return text(self.err)

    def running(self):
        return self.p.poll() is None and ctl(self.sock, {"cmd": "status"}).get("state") == "running"


# A relay process between a source and a destination's unix socket (argv:
# its own socket path, the target's, and optionally a direction, "fwd"
# (source to destination) or "back", and an 8-byte word): it pipes both
# ways, and where the word would pass in that direction it cuts the
# connection instead (nothing of the word goes through) and exits.
RELAY = r'''
import os, socket, sys, threading
lsn = socket.socket(socket.AF_UNIX); lsn.bind(sys.argv[1]); lsn.listen(4)
open(sys.argv[1] + ".up", "w").close()
CUT = (sys.argv[3], sys.argv[4].encode()) if len(sys.argv) > 4 else None
def pipe(a, b, way):
    tail = b""
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            i = (tail + d).find(CUT[1]) if CUT and CUT[0] == way else -1
            if i >= 0:
                b.sendall(d[:max(0, i - len(tail))])
                for s in (a, b): s.shutdown(socket.SHUT_RDWR)
                os._exit(0)
            tail = (tail + d)[-7:]
            b.sendall(d)
    except OSError: pass
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
while True:
    c, _ = lsn.accept()
    d = socket.socket(socket.AF_UNIX); d.connect(sys.argv[2])
    threading.Thread(target=pipe, args=(c, d, "fwd"), daemon=True).start()
    threading.Thread(target=pipe, args=(d, c, "back"), daemon=True).start()
'''


class Test:
    def __init__(self, shoal, guest, tmp):
        self.shoal, self.guest, self.tmp = shoal, guest, tmp
        self.ok = True
        self.procs = []
        atexit.register(self.kill_all)

    def kill_all(self):
        """Kill every VMM started here that still runs."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def check(self, name, cond, why=""):
        print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)[-600:]),
              flush=True)
        self.ok = self.ok and bool(cond)
        return bool(cond)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self, name, cmdline, memory="64M", incoming=None, extra=(), timeout=300):
        """`shoal run` of the test guest; with incoming (a URI) a destination,
        returned once it says it is waiting (-v)."""
        sock, log, err = (self.path(name + x) for x in (".sock", ".console", ".err"))
        args = [self.shoal, "run", "--kernel", self.guest, "--cmdline", cmdline, "--memory", memory,
                "--console", "file:" + log, "--api-socket", sock, "--timeout", str(timeout),
                "--seccomp", "on", *extra]
        if incoming:
            args += ["--incoming", incoming, "-v"]
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=open(err, "w"))
        self.procs.append(p)
        vm = VM(p, sock, log, err)
        if incoming:
            wait_for(lambda: "waiting on" in vm.stderr() or p.poll() is not None, 30)
        else:
            wait_path(sock, p)
        return vm

    def relay(self, name, target, cut=()):
        """A relay (RELAY) from unix:TMP/NAME to the unix socket target; cut:
        (direction, word) to cut the connection where that word would pass.
        Returns (its Popen, its URI)."""
        path = self.path(name)
        p = subprocess.Popen(["python3", "-c", RELAY, path, target, *cut])
        self.procs.append(p)
        wait_for(lambda: os.path.exists(path + ".up") or p.poll() is not None, 10)
        return p, "unix:" + path

    def migrate(self, vm, uri, *extra):
        """`shoal migrate` of vm to uri, running (a Popen with text pipes)."""
        return subprocess.Popen([self.shoal, "migrate", "--socket", vm.sock, uri, *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def exit(self):
        raise SystemExit(0 if self.ok else 1)
