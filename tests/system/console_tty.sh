#!/bin/bash
# console_tty.sh - the console on a real terminal (a pty): raw mode so keys
# reach the guest, Ctrl-A x quits with status 83, and the terminal settings
# are restored exactly on the way out.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

python3 - "$SHOAL" "$GUEST" <<'PY'
import os, pty, subprocess, sys, termios, time, select
shoal, guest = sys.argv[1], sys.argv[2]

def run(keys_after_ready, wait_exit=20):
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    p = subprocess.Popen([shoal, "run", "--kernel", guest, "--cmdline", "shell", "--timeout", "60"],
                         stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    out = b""
    deadline = time.time() + 30
    sent = False
    while time.time() < deadline and p.poll() is None:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
        if not sent and b"shoal> " in out:
            for k in keys_after_ready:
                os.write(master, k)
                time.sleep(0.3)
            sent = True
    try:
        p.wait(wait_exit)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    time.sleep(0.2)
    try:
        while select.select([master], [], [], 0.1)[0]:
            out += os.read(master, 4096)
    except OSError:
        pass
    after = termios.tcgetattr(slave)
    os.close(master); os.close(slave)
    return p.returncode, out.decode(errors="replace"), before == after

rc, out, restored = run([b"echo typed-on-a-tty\r", b"\x01x"])
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + why))
    ok = ok and cond
check("keys typed on a terminal reach the guest", "typed-on-a-tty" in out, out[-300:])
check("Ctrl-A x quits with status 83", rc == 83, "rc=%s" % rc)
check("terminal settings restored after Ctrl-A x", restored)
rc, out, restored = run([b"\x01h", b"exit 9\r"])
check("Ctrl-A h prints the console keys", "Ctrl-A x quit" in out, out[-300:])
check("guest exit from an interactive terminal", rc == 9, "rc=%s" % rc)
check("terminal settings restored after a guest exit", restored)
sys.exit(0 if ok else 1)
PY
T_FAILED=$?
finish
