#!/bin/bash
# migrate_shared.sh - live migration over shared storage: two VMMs on one
# host with the same writable image (docs/migration.md, "Shared storage"),
# seccomp on at both ends, raw and qcow2:
#   - the destination (`shoal run --incoming ... --disk SAME`) starts
#     although the source holds the image's write lock: it opens the image
#     inactive;
#   - the guest writes its disk before the migration (`vblk 2048 3`) and
#     during it (`vblk 2048 4`, the migration slowed by --bandwidth); the
#     source gives up its lock at the switch-over and the destination takes
#     it: the source exits 0, and while the destination runs a `qemu-io -c
#     'write 0 4k'` on the image is refused for its lock (the lock moved);
#   - the destination's guest reads back what it wrote at the source
#     (`vblk-verify 2048 4`), writes again after the migration (`vblk 2048
#     5`) and reads that back; the image is then consistent (`shoal img
#     check`, `qemu-img check`) and a fresh VM's guest reads seed 5;
#   - a failed migration (the destination killed during it, the guest's
#     16 MiB of data going at 2 MiB/s) leaves the
#     source running with its lock: its guest writes and reads its disk,
#     and qemu-io is still refused;
#   - a destination whose image some other process only reads (a qemu-io
#     reader of a qcow2 image, which refuses writers) is not opened
#     inactive: refused as before (66), naming the lock.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm migrate_shared

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import json, os, shutil, socket, subprocess, sys, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

MEM, CMDLINE, SIZE = "64M", "shell", 64 << 20
SECCOMP = ("--seccomp", "on")
QEMU_IMG, QEMU_IO = shutil.which("qemu-img"), shutil.which("qemu-io")

def console(log):
    try:
        with open(log, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_path(path, p, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if os.path.exists(path): return True
        if p.poll() is not None: return False
        time.sleep(0.02)
    return False

def wait_console(log, text, secs=60, count=1):
    end = time.time() + secs
    while time.time() < end:
        if console(log).count(text) >= count: return True
        time.sleep(0.05)
    return False

def vm(name, disk, incoming=None, cmdline=CMDLINE):
    sock, log, err = (os.path.join(tmp, name + x) for x in (".sock", ".console", ".err"))
    args = [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", MEM,
            "--console", "file:" + log, "--api-socket", sock, "--timeout", "120",
            "--disk", disk, "-v", *SECCOMP]
    if incoming: args += ["--incoming", incoming]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=open(err, "w"))
    if incoming:
        end = time.time() + 30
        while time.time() < end and "waiting on" not in console(err) and p.poll() is None:
            time.sleep(0.02)
    else:
        wait_path(sock, p)
    return p, sock, log, err

def type_into(sock, text):
    s = socket.socket(socket.AF_UNIX); s.connect(sock)
    f = s.makefile("rwb")
    f.write(b'{"cmd": "console-attach", "force": true}\n'); f.flush()
    assert json.loads(f.readline())["ok"]
    for ch in text.encode():
        s.sendall(bytes([ch])); time.sleep(0.002)
    return s

def ctl(sock, obj):
    c = socket.socket(socket.AF_UNIX); c.connect(sock)
    c.sendall((json.dumps(obj) + "\n").encode())
    line = c.makefile().readline(); c.close()
    return json.loads(line)

def migrate(sock, uri, *extra):
    return subprocess.Popen([shoal, "migrate", "--socket", sock, uri, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def finish(p, secs=60):
    try: p.wait(timeout=secs)
    except subprocess.TimeoutExpired: p.kill(); p.wait()
    return p.returncode

def img(*args):
    return subprocess.run([shoal, "img", *args], capture_output=True, text=True, timeout=120)

def qemu_io_write(path, fmt):
    return subprocess.run([QEMU_IO, "-f", fmt, "-c", "write 0 4k", path],
                          capture_output=True, text=True, timeout=60)

for fmt in ("raw", "qcow2"):
    disk = os.path.join(tmp, "shared." + fmt)
    r = img("create", "-f", fmt, disk, str(SIZE))
    assert r.returncode == 0, r.stderr
    src = vm("s-" + fmt, disk)
    check(f"{fmt}: the source guest is up", wait_console(src[2], "shoal> "), console(src[3])[-300:])
    s = type_into(src[1], "vblk 2048 3\r")
    check(f"{fmt}: the guest wrote its disk before the migration",
          wait_console(src[2], "vblk ok"), console(src[2])[-300:])
    s.close()
    uri = "unix:" + os.path.join(tmp, "in-" + fmt + ".sock")
    dst = vm("d-" + fmt, disk, incoming=uri)
    check(f"{fmt}: the destination opens the source's writable image (inactive) and waits",
          dst[0].poll() is None and "opened inactive" in console(dst[3]), console(dst[3])[-400:])
    s = type_into(src[1], "")           # attached before the migration starts
    m = migrate(src[1], uri, "--bandwidth", "1M", "--output", "json")
    time.sleep(0.3)
    for ch in b"vblk 2048 4; echo written\r":
        s.sendall(bytes([ch])); time.sleep(0.002)
    out, err = m.communicate(timeout=180)
    s.close()
    try: info = json.loads(out)
    except ValueError: info = {}
    check(f"{fmt}: migrated (status 0)", m.returncode == 0 and info.get("state") == "done",
          (m.returncode, out, err))
    print(f"note: {fmt}: downtime {info.get('downtime_ms', 0):.1f} ms, total "
          f"{info.get('total_ms', 0):.0f} ms (a figure)")
    check(f"{fmt}: the guest wrote its disk during the migration, at the source",
          "written" in console(src[2]) and console(src[2]).count("vblk ok") >= 2,
          console(src[2])[-400:])
    rc = finish(src[0])
    check(f"{fmt}: the source exited 0 saying the VM migrated",
          rc == 0 and "migrated" in console(src[3]), (rc, console(src[3])[-300:]))
    ready = wait_path(dst[1], dst[0])
    check(f"{fmt}: the destination took the write lock",
          ready and "is active: the write lock is ours" in console(dst[3]), console(dst[3])[-400:])
    if QEMU_IO:
        r = qemu_io_write(disk, fmt)
        check(f"{fmt}: qemu-io cannot write the image while the destination runs (the lock moved)",
              r.returncode != 0 and "lock" in (r.stdout + r.stderr), (r.returncode, r.stdout, r.stderr))
    else:
        print("note: qemu-io is not installed: its check is skipped")
    s = type_into(dst[1], "vblk-verify 2048 4; vblk 2048 5; vblk-verify 2048 5; exit 5\r") if ready else None
    rc = finish(dst[0])
    if s: s.close()
    check(f"{fmt}: the destination's guest reads back what it wrote at the source, writes and reads again",
          rc == 5 and "vblk-verify ok sectors=2048 seed=4" in console(dst[2]) and
          "vblk-verify ok sectors=2048 seed=5" in console(dst[2]),
          (rc, console(dst[3])[-400:], console(dst[2])[-300:]))
    if fmt == "qcow2":
        r = img("check", disk)
        check("qcow2: the image is consistent (shoal img check)", r.returncode == 0, r.stdout + r.stderr)
        if QEMU_IMG:
            r = subprocess.run([QEMU_IMG, "check", disk], capture_output=True, text=True)
            check("qcow2: qemu-img check finds no errors", r.returncode == 0, r.stdout + r.stderr)
    v = vm("v-" + fmt, disk)
    ready = wait_console(v[2], "shoal> ")
    s = type_into(v[1], "vblk-verify 2048 5; exit 6\r") if ready else None
    rc = finish(v[0])
    if s: s.close()
    check(f"{fmt}: a fresh VM reads what the destination wrote",
          rc == 6 and "vblk-verify ok sectors=2048 seed=5" in console(v[2]), (rc, console(v[2])[-300:]))

# ---- a failed migration: the source keeps its lock and its disk ----
disk = os.path.join(tmp, "fail.qcow2")
assert img("create", "-f", "qcow2", disk, str(SIZE)).returncode == 0
FILL = "fill 0x2000000 16M 7; shell"      # 16 MiB of data: seconds at 2 MiB/s
src = vm("s-fail", disk, cmdline=FILL)
check("fail: the source guest is up", wait_console(src[2], "shoal> "), console(src[3])[-300:])
uri = "unix:" + os.path.join(tmp, "in-fail.sock")
dst = vm("d-fail", disk, incoming=uri, cmdline=FILL)
m = migrate(src[1], uri, "--bandwidth", "2M")
time.sleep(1.0)
dst[0].kill(); dst[0].wait()
out, err = m.communicate(timeout=120)
check("fail: the migration fails when the destination is killed", m.returncode != 0, (m.returncode, out, err))
s = type_into(src[1], "vblk 2048 7; vblk-verify 2048 7\r")
check("fail: the source guest still writes and reads its disk",
      wait_console(src[2], "vblk-verify ok sectors=2048 seed=7"), console(src[2])[-300:])
s.close()
if QEMU_IO:
    r = qemu_io_write(disk, "qcow2")
    check("fail: qemu-io cannot write the image: the source still holds its lock",
          r.returncode != 0 and "lock" in (r.stdout + r.stderr), (r.returncode, r.stdout, r.stderr))
src[0].terminate(); finish(src[0])

# ---- a reader that refuses writers is not a source: refused as before ----
if QEMU_IO:
    disk = os.path.join(tmp, "read.qcow2")  # a qcow2 reader refuses writers (a raw one does not)
    assert img("create", "-f", "qcow2", disk, str(SIZE)).returncode == 0
    rd = subprocess.Popen([QEMU_IO, "-r", "-f", "qcow2", "-c", "sleep 20000", disk],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    dst = vm("d-read", disk, incoming="unix:" + os.path.join(tmp, "in-read.sock"))
    rc = finish(dst[0], 30)
    check("reader: an image another process reads (refusing writers) is refused at --incoming",
          rc == 66 and "lock" in console(dst[3]) and "inactive" not in console(dst[3]),
          (rc, console(dst[3])[-300:]))
    rd.kill(); rd.wait()
sys.exit(0 if ok else 1)
PY
