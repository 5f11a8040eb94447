#!/bin/bash
# migrate_disks.sh - live migration with the disks mirrored (`shoal migrate
# --with-disks`, docs/migration.md "Disks"), seccomp on at both ends, the
# test guest on a 64 MiB disk whose first 16 MiB the host filled with
# random bytes (the rest a hole):
#   - raw and qcow2 (the destination's image made empty, of the same size,
#     by `shoal img create`): the migration is slowed by --bandwidth, and
#     once the bulk copy is past the guest's first MiB the guest rewrites
#     it twice (`vblk 2048 SEED`: a sector pattern, then write-zeroes and a
#     discard after it) while the copy goes on; the migration reports disk
#     figures (the disk's bytes, the zero range sent as a flag, blocks
#     sent again because the guest wrote them); on the destination the
#     guest reads its last pattern back (`vblk-verify`), and after both
#     ends are gone the destination's image equals the source's (`shoal
#     img compare`, and qemu-img compare/check when installed);
#   - a qcow2 overlay over a base whose copy (the same chain identity) the
#     destination's overlay sits on: only the top layer goes (what the
#     guest wrote before), the destination's guest reads it back and the
#     images compare equal through their chains; over a base of another
#     identity (other content too) the whole disk goes, and they compare
#     equal all the same;
#   - a destination killed during the bulk copy: the migration fails, the
#     source VM runs on and its guest still writes and reads its disk;
#   - a destination whose disk is smaller refuses the stream naming both
#     sizes, exits 84, and the source VM runs on;
#   - a destination whose image lies on a full file system (a 4 MiB tmpfs;
#     SKIP where it cannot be mounted) fails with ENOSPC named, never runs
#     the guest, and the source VM runs on, its disk intact;
#   - a disk section corrupted on the way (a proxy flips a byte of its
#     data) is refused, 84, and the source VM runs on.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm migrate_disks

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import json, os, shutil, socket, struct, subprocess, sys, threading, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

MEM, CMDLINE, SIZE = "64M", "shell", 64 << 20
SECCOMP = ("--seccomp", "on")
QEMU_IMG = shutil.which("qemu-img")

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

def wait_console(log, text, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if text in console(log): return True
        time.sleep(0.05)
    return False

def vm(name, disk, incoming=None):
    sock, log, err = (os.path.join(tmp, name + x) for x in (".sock", ".console", ".err"))
    args = [shoal, "run", "--kernel", guest, "--cmdline", CMDLINE, "--memory", MEM,
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
    return subprocess.Popen([shoal, "migrate", "--socket", sock, uri, "--with-disks", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def finish(p, secs=60):
    try: p.wait(timeout=secs)
    except subprocess.TimeoutExpired: p.kill(); p.wait()
    return p.returncode

def img(*args):
    return subprocess.run([shoal, "img", *args], capture_output=True, text=True, timeout=120)

def make_disk(path, fmt):
    raw = path if fmt == "raw" else path + ".raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(16 << 20))
        f.truncate(SIZE)
    if fmt == "qcow2":
        r = img("convert", "-f", "raw", "-O", "qcow2", raw, path)
        assert r.returncode == 0, r.stderr
        os.unlink(raw)

def empty_disk(path, fmt, size=SIZE):
    r = img("create", "-f", fmt, path, str(size))
    assert r.returncode == 0, r.stderr

def overlay(path, base):
    r = img("create", "-f", "qcow2", "-b", base, "-F", "qcow2", path)
    assert r.returncode == 0, r.stderr

# ---- a guest writing its disk while it migrates, raw and qcow2 ----
for fmt in ("raw", "qcow2"):
    sdisk, ddisk = os.path.join(tmp, "src." + fmt), os.path.join(tmp, "dst." + fmt)
    make_disk(sdisk, fmt)
    empty_disk(ddisk, fmt)
    src = vm("s-" + fmt, sdisk)
    check(f"{fmt}: the source guest is up", wait_console(src[2], "shoal> "), console(src[3])[-300:])
    uri = "unix:" + os.path.join(tmp, "in-" + fmt + ".sock")
    dst = vm("d-" + fmt, ddisk, incoming=uri)
    m = migrate(src[1], uri, "--bandwidth", "4M", "--output", "json")
    st = {}
    for _ in range(3000):            # the bulk copy past the first 2 MiB of the disk
        st = ctl(src[1], {"cmd": "migrate-status"})
        if st.get("state") not in ("none", "active") or st.get("disk_bytes", 0) >= 2 << 20: break
        time.sleep(0.01)
    check(f"{fmt}: migrate-status shows the disk being copied",
          st.get("with_disks") and st.get("disks") == 1 and st.get("disk_size") == SIZE and
          st.get("disk_bytes", 0) >= 2 << 20, st)
    s = type_into(src[1], "vblk 2048 3; vblk 2048 4; echo written\r")
    out, err = m.communicate(timeout=180)
    s.close()
    try: info = json.loads(out)
    except ValueError: info = {}
    check(f"{fmt}: migrated (status 0) with disk figures: 16 MiB of data, the hole as zeroes, "
          f"blocks the guest wrote sent again",
          m.returncode == 0 and info.get("state") == "done" and
          info.get("disk_bytes", 0) >= 16 << 20 and info.get("disk_zero_bytes", 0) >= 40 << 20 and
          info.get("disk_resent_blocks", 0) >= 16 and info.get("disk_dirty_blocks") == 0,
          (m.returncode, out, err))
    print(f"note: {fmt}: downtime {info.get('downtime_ms', 0):.1f} ms, total "
          f"{info.get('total_ms', 0):.0f} ms, {info.get('round', 0) + 1} rounds, "
          f"{info.get('bytes', 0) >> 20} MiB sent, disk {info.get('disk_bytes', 0) >> 20} MiB "
          f"data + {info.get('disk_zero_bytes', 0) >> 20} MiB zeroes, "
          f"{info.get('disk_resent_blocks', 0)} blocks again (a figure)")
    check(f"{fmt}: the guest wrote its disk during the copy, at the source",
          "written" in console(src[2]) and "vblk ok" in console(src[2]), console(src[2])[-400:])
    rc = finish(src[0])
    check(f"{fmt}: the source exited 0 saying the VM migrated",
          rc == 0 and "migrated" in console(src[3]), (rc, console(src[3])[-300:]))
    ready = wait_path(dst[1], dst[0])
    s = type_into(dst[1], "vblk-verify 2048 4; exit 5\r") if ready else None
    rc = finish(dst[0])
    if s: s.close()
    check(f"{fmt}: the destination's guest reads back what it wrote at the source",
          rc == 5 and "vblk-verify ok sectors=2048 seed=4" in console(dst[2]),
          (rc, console(dst[3])[-400:], console(dst[2])[-300:]))
    r = img("compare", sdisk, ddisk)
    check(f"{fmt}: the destination's image equals the source's (shoal img compare)",
          r.returncode == 0, (r.stdout, r.stderr))
    if fmt == "raw":
        r = subprocess.run(["cmp", sdisk, ddisk], capture_output=True, text=True)
        check("raw: cmp finds the files equal", r.returncode == 0, r.stdout + r.stderr)
    else:
        r = img("check", ddisk)
        check("qcow2: the destination's image is consistent (shoal img check)",
              r.returncode == 0, r.stdout + r.stderr)
    if QEMU_IMG:
        r = subprocess.run([QEMU_IMG, "compare", sdisk, ddisk], capture_output=True, text=True)
        check(f"{fmt}: qemu-img compare finds them identical", r.returncode == 0,
              r.stdout + r.stderr)
        if fmt == "qcow2":
            r = subprocess.run([QEMU_IMG, "check", ddisk], capture_output=True, text=True)
            check("qcow2: qemu-img check finds no errors", r.returncode == 0, r.stdout + r.stderr)
    else:
        print("note: qemu-img is not installed: its comparison is skipped")

# ---- qcow2 overlays: the destination has the base, or another ----
for case in ("same-base", "other-base"):
    base, dbase = (os.path.join(tmp, x + case + ".qcow2") for x in ("base-", "dbase-"))
    sdisk, ddisk = (os.path.join(tmp, x + case + ".qcow2") for x in ("src-", "dst-"))
    make_disk(base, "qcow2")
    if case == "same-base":
        shutil.copyfile(base, dbase)           # a copy: the same id and generation
    else:
        make_disk(dbase, "qcow2")              # another image, other bytes
    overlay(sdisk, base)
    overlay(ddisk, dbase)
    src = vm("s-" + case, sdisk)
    check(f"{case}: the guest wrote its disk", wait_console(src[2], "shoal> ") and
          (type_into(src[1], "vblk 2048 6\r").close() or wait_console(src[2], "vblk ok")),
          console(src[2])[-300:])
    uri = "unix:" + os.path.join(tmp, "in-" + case + ".sock")
    dst = vm("d-" + case, ddisk, incoming=uri)
    m = migrate(src[1], uri, "--output", "json")
    out, err = m.communicate(timeout=180)
    try: info = json.loads(out)
    except ValueError: info = {}
    if case == "same-base":
        check("same-base: migrated sending only the top layer (the guest's writes), the base's "
              "64 MiB less that left to the destination's copy",
              m.returncode == 0 and info.get("disks_top_only") == 1 and
              0 < info.get("disk_bytes", 0) < 4 << 20 and
              info.get("disk_base_bytes", 0) >= 60 << 20, (m.returncode, out, err))
    else:
        check("other-base: migrated sending the whole disk as the guest sees it",
              m.returncode == 0 and info.get("disks_top_only") == 0 and
              info.get("disk_bytes", 0) >= 16 << 20 and info.get("disk_base_bytes") == 0,
              (m.returncode, out, err))
    print(f"note: {case}: disk {info.get('disk_bytes', 0) >> 10} KiB data, "
          f"{info.get('disk_zero_bytes', 0) >> 20} MiB zeroes, "
          f"{info.get('disk_base_bytes', 0) >> 20} MiB left to the base (a figure)")
    finish(src[0])
    ready = wait_path(dst[1], dst[0])
    s = type_into(dst[1], "vblk-verify 2048 6; exit 5\r") if ready else None
    rc = finish(dst[0])
    if s: s.close()
    check(f"{case}: the destination's guest reads back what it wrote at the source",
          rc == 5 and "vblk-verify ok sectors=2048 seed=6" in console(dst[2]),
          (rc, console(dst[3])[-400:], console(dst[2])[-300:]))
    r = img("compare", sdisk, ddisk)
    check(f"{case}: the images read the same through their chains (shoal img compare)",
          r.returncode == 0, (r.stdout, r.stderr))
    r = img("check", ddisk)
    check(f"{case}: the destination's overlay is consistent", r.returncode == 0,
          r.stdout + r.stderr)
    if QEMU_IMG:
        r = subprocess.run([QEMU_IMG, "compare", sdisk, ddisk], capture_output=True, text=True)
        check(f"{case}: qemu-img compare finds them identical", r.returncode == 0,
              r.stdout + r.stderr)

# ---- refusals: the source runs on ----
sdisk = os.path.join(tmp, "src-bad.raw")
make_disk(sdisk, "raw")
src = vm("s-bad", sdisk)
check("bad cases: the source guest is up", wait_console(src[2], "shoal> "))

kdisk = os.path.join(tmp, "dst-kill.raw")
empty_disk(kdisk, "raw")
uri = "unix:" + os.path.join(tmp, "in-kill.sock")
dst = vm("d-kill", kdisk, incoming=uri)
m = migrate(src[1], uri, "--bandwidth", "2M")
st = {}
for _ in range(3000):                 # the bulk copy under way
    st = ctl(src[1], {"cmd": "migrate-status"})
    if st.get("state") not in ("none", "active") or st.get("disk_bytes", 0) >= 1 << 20: break
    time.sleep(0.01)
dst[0].kill(); dst[0].wait()
out, err = m.communicate(timeout=120)
check("a destination killed during the bulk copy: the migration fails saying so",
      st.get("disk_bytes", 0) >= 1 << 20 and m.returncode != 0 and "destination" in err,
      (st, m.returncode, err))
s = type_into(src[1], "vblk 64 9\r")
check("... the source VM goes on, its guest writing and reading its disk",
      src[0].poll() is None and wait_console(src[2], "vblk ok", 60) and
      ctl(src[1], {"cmd": "status"}).get("state") == "running", console(src[2])[-300:])
s.close()

small = os.path.join(tmp, "small.raw")
empty_disk(small, "raw", 32 << 20)
uri = "unix:" + os.path.join(tmp, "in-small.sock")
dst = vm("d-small", small, incoming=uri)
m = migrate(src[1], uri)
out, err = m.communicate(timeout=120)
check("a destination disk too small: refused, naming both sizes",
      m.returncode != 0 and "refused" in err and "67108864 bytes" in err and
      "33554432 bytes" in err, (m.returncode, err))
rc = finish(dst[0])
check("... the destination exits 84 and never runs the guest",
      rc == 84 and "67108864 bytes" in console(dst[3]), (rc, console(dst[3])[-300:]))
check("... and the source VM goes on", src[0].poll() is None and
      ctl(src[1], {"cmd": "status"}).get("state") == "running")

# The destination's image on a 4 MiB file system: the 16 MiB of data do
# not fit, its writes fail with ENOSPC part-way through the bulk copy.
fulldir = os.path.join(tmp, "full")
os.mkdir(fulldir)
r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "shoal-full", fulldir],
                   capture_output=True, text=True)
if r.returncode != 0:
    print(f"SKIP: a full disk at the destination: cannot mount a 4 MiB tmpfs: {r.stderr.strip()}")
else:
    try:
        fdisk = os.path.join(fulldir, "dst.raw")
        empty_disk(fdisk, "raw")
        uri = "unix:" + os.path.join(tmp, "in-full.sock")
        dst = vm("d-full", fdisk, incoming=uri)
        m = migrate(src[1], uri)
        out, err = m.communicate(timeout=120)
        rc = finish(dst[0])
        check("a full disk at the destination: the migration fails, the destination naming "
              "the disk and ENOSPC", m.returncode != 0 and rc not in (0, None) and
              "No space left on device" in console(dst[3]) + err,
              (m.returncode, err[-300:], rc, console(dst[3])[-400:]))
        check("... the destination never ran the guest", "shoal> " not in console(dst[2]),
              console(dst[2])[-200:])
        n = console(src[2]).count("vblk ok")      # the kill case's is there already
        s = type_into(src[1], "vblk 64 11\r")
        end = time.time() + 60
        while console(src[2]).count("vblk ok") <= n and time.time() < end and src[0].poll() is None:
            time.sleep(0.05)
        check("... the source VM goes on, its guest writing and reading its disk",
              src[0].poll() is None and console(src[2]).count("vblk ok") > n and
              ctl(src[1], {"cmd": "status"}).get("state") == "running", console(src[2])[-300:])
        s.close()
    finally:
        subprocess.run(["umount", "-l", fulldir])

# A proxy between the source and the destination flips one byte of the
# data of the first "disk" section.
def proxy(listen_path, target_path):
    ls = socket.socket(socket.AF_UNIX); ls.bind(listen_path); ls.listen(1)
    def run():
        a, _ = ls.accept(); ls.close()
        b = socket.socket(socket.AF_UNIX); b.connect(target_path)
        def back():
            try:
                while True:
                    d = b.recv(65536)
                    if not d: break
                    a.sendall(d)
            except OSError: pass
            try: a.shutdown(socket.SHUT_WR)
            except OSError: pass
        threading.Thread(target=back, daemon=True).start()
        f = a.makefile("rb")
        def read(n):
            d = f.read(n)
            if len(d) < n: raise EOFError
            return d
        try:
            b.sendall(read(8))
            flipped = False
            while True:
                h = read(5)
                nlen = h[4]
                name = read(nlen)
                vl = read(6)
                plen = struct.unpack("<I", vl[2:])[0]
                body = bytearray(read(plen + 8))
                if name == b"disk" and not flipped and plen > 64:
                    body[plen // 2] ^= 0x40
                    flipped = True
                b.sendall(h + name + vl + bytes(body))
        except (EOFError, OSError): pass
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
    t = threading.Thread(target=run, daemon=True); t.start()
    return t

ddisk = os.path.join(tmp, "dst-bad.raw")
empty_disk(ddisk, "raw")
real = os.path.join(tmp, "in-real.sock")
dst = vm("d-corrupt", ddisk, incoming="unix:" + real)
via = os.path.join(tmp, "in-proxy.sock")
proxy(via, real)
m = migrate(src[1], "unix:" + via)
out, err = m.communicate(timeout=120)
rc = finish(dst[0])
check("a corrupted disk section: the destination refuses it (84, fails its checksum)",
      rc == 84 and "(\"disk\") at byte" in console(dst[3]) and "fails its checksum" in console(dst[3]),
      (rc, console(dst[3])[-400:]))
check("... the migration fails saying so", m.returncode != 0 and "refused" in err,
      (m.returncode, err))
check("... and the source VM goes on", src[0].poll() is None and
      ctl(src[1], {"cmd": "status"}).get("state") == "running")
src[0].terminate(); finish(src[0])
sys.exit(0 if ok else 1)
PY
T_FAILED=$?
finish
