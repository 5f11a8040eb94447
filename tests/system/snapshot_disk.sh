#!/bin/bash
# snapshot_disk.sh - the disk half of a snapshot (docs/snapshots.md,
# "Disks"): a writable disk is switched to a copy-on-write overlay during
# the pause, the image it wrote until then is kept frozen as the
# snapshot's parent, and each restore writes an overlay of its own on it.
#   - full snapshot, raw disk: the test guest fills memory and writes a
#     sector pattern to its disk; after the snapshot it overwrites both; the
#     parent still holds the snapshot's pattern, the guest's later writes
#     are in the overlay (qemu-img check clean); two restores each see the
#     snapshot's memory and disk together, write overlays of their own
#     (one in --disk-overlay-dir, one next to the parent), and leave the
#     parent and the snapshot unchanged;
#   - live snapshot (--live), qcow2 disk with a chain identity: the same,
#     the manifest records the identity; `shoal img commit` merges the
#     VM's overlay into the parent afterwards, and a restore then refuses
#     the changed parent (status 84, naming it) and leaves no overlay;
#   - a raw parent changed by one byte: refused (84), named;
#   - an overlay name already taken: the snapshot is refused, naming it,
#     and the VM goes on writing its own disk.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm "snapshot_disk"
command -v qemu-img >/dev/null || { skip "snapshot_disk" "qemu-img is needed to judge the images"; finish; }

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import glob, hashlib, json, os, socket, subprocess, sys, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

A = "0x2000000"
def start(name, cmdline, extra=(), restore=None):
    sock = os.path.join(tmp, name + ".sock")
    log = os.path.join(tmp, name + ".console")
    if restore:
        args = [shoal, "run", "--restore", restore, *extra]
    else:
        args = [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", "128M", *extra]
    p = subprocess.Popen(args + ["--console", "file:" + log, "--api-socket", sock,
                                 "--timeout", "120", "-v"],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    return p, sock, log

def console(log):
    try:
        with open(log, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_console(log, text, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if text in console(log): return True
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

def snapshot(sock, d, *extra, vmm=None):
    try:
        r = subprocess.run([shoal, "snapshot", "create", "--socket", sock, d, *extra],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        r = subprocess.CompletedProcess([], 124, "", "snapshot create: no answer in 60 s")
    if r.returncode != 0 and vmm and vmm.poll() is not None:   # the VMM died: say why
        r.stderr += " / the VMM: " + vmm.stderr.read().decode(errors="replace")[-1500:]
    return r

def finish(p, secs=120):
    try:
        p.wait(timeout=secs)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    return p.returncode, p.stderr.read().decode(errors="replace")

def run_in(sock, p, text):
    s = type_into(sock, text)
    rc, err = finish(p)
    s.close()
    return rc, err

def sha(path):
    with open(path, "rb") as f: return hashlib.sha256(f.read()).hexdigest()

def tree_hash(d):
    h = hashlib.sha256()
    for n in sorted(os.listdir(d)):
        h.update(n.encode() + sha(os.path.join(d, n)).encode())
    return h.hexdigest()

def disk_bytes(img):
    """The guest's view of an image (its whole chain), as raw bytes."""
    out = img + ".as-raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", img, out], check=True)
    with open(out, "rb") as f: data = f.read()
    os.unlink(out)
    return data

def pattern_ok(data, sectors, seed):
    for s in range(sectors):
        want = (f"shoal vblk seed={seed} sector={s}".ljust(511, ".") + "\n").encode()
        if data[s * 512:(s + 1) * 512] != want:
            return f"sector {s}: {data[s * 512:s * 512 + 40]!r}"
    return ""

def qemu_check(img):
    r = subprocess.run(["qemu-img", "check", "-U", img], capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr

def backing_of(img):
    r = subprocess.run(["qemu-img", "info", "-U", "--output", "json", img], capture_output=True, text=True)
    return json.loads(r.stdout).get("backing-filename") if r.returncode == 0 else None

# ---- full snapshot, raw disk; two restores ----
disk = os.path.join(tmp, "disk.raw")
with open(disk, "wb") as f: f.truncate(8 << 20)
snap = os.path.join(tmp, "s1")
p, sock, log = start("orig", f"fill {A} 16M 7; vblk 64 7; shell", ("--disk", disk))
check("guest filled memory and wrote its disk pattern (seed 7)",
      wait_console(log, "shoal> ") and "vblk ok" in console(log), console(log)[-300:])
r = snapshot(sock, snap, "--output", "json", vmm=p)
check("snapshot of a VM with a writable disk: status 0", r.returncode == 0, r.stdout + r.stderr)
ov = os.path.join(tmp, "disk-s1.qcow2")
man = json.load(open(os.path.join(snap, "manifest.json"))) if r.returncode == 0 else {"disks": [{}]}
d0 = man["disks"][0]
check("manifest: the disk is recorded as the writable parent, raw, with the overlay the VM writes",
      d0.get("writable") is True and d0.get("path") == os.path.realpath(disk) and
      d0.get("format") == "raw" and d0.get("virtual_size") == 8 << 20 and d0.get("overlay") == ov and
      "chain_id" not in d0, d0)
check("the overlay exists next to the disk, backed by it", os.path.exists(ov) and
      backing_of(ov) == os.path.realpath(disk), backing_of(ov) if os.path.exists(ov) else "missing")
parent_sum = sha(disk)
rc, err = run_in(sock, p, f"fill {A} 16M 9; vblk 64 9; verify {A} 16M 9; exit 4\r")
check("the original went on: overwrote memory and disk (seed 9), exit 4",
      rc == 4 and console(log).count("vblk ok") == 2, (rc, err[-400:], console(log)[-400:]))
check("the original's disk switch is logged", "now writes to " + ov in err, err[-600:])
why = pattern_ok(open(disk, "rb").read(), 64, 7)
check("the parent still holds the snapshot instant's disk (seed 7)", not why, why)
check("the parent was not written after the snapshot", sha(disk) == parent_sum)
why = pattern_ok(disk_bytes(ov), 64, 9)
check("the VM's later writes are in the overlay (seed 9 through the chain)", not why, why)
good, out = qemu_check(ov)
check("qemu-img check: the overlay is clean", good, out)
r = subprocess.run(["qemu-img", "compare", "-U", disk, ov], capture_output=True, text=True)
check("qemu-img compare: parent and overlay differ", r.returncode == 1, r.stdout + r.stderr)

before = tree_hash(snap)
ovd = os.path.join(tmp, "ovd")
os.mkdir(ovd)
overlays = []
for i, (extra, where) in enumerate(((("--disk-overlay-dir", ovd), ovd), ((), tmp)), 1):
    have = set(glob.glob(os.path.join(where, "disk-s1-r*.qcow2")))
    p, sock, log = start(f"restored{i}", None, extra, restore=snap)
    rc, err = run_in(sock, p, f"verify {A} 16M 7; vblk-verify 64 7; vblk 64 {20 + i}; exit {5 + i}\r")
    out = console(log)
    check(f"restore {i}: memory and disk are the snapshot's, together (verify ok, vblk-verify ok)",
          rc == 5 + i and "verify ok" in out and "vblk-verify ok sectors=64 seed=7" in out and
          "verify bad" not in out, (rc, err[-400:], out[-500:]))
    new = sorted(set(glob.glob(os.path.join(where, "disk-s1-r*.qcow2"))) - have)
    check(f"restore {i}: wrote a new overlay of its own in {where}", len(new) == 1, new)
    if new:
        overlays.append(new[0])
        check(f"restore {i}: its overlay is backed by the snapshot's parent",
              backing_of(new[0]) == os.path.realpath(disk), backing_of(new[0]))
for i, o in enumerate(overlays, 1):
    why = pattern_ok(disk_bytes(o), 64, 20 + i)
    check(f"restore {i}'s writes are in its own overlay only (seed {20 + i})", not why, why)
    good, out = qemu_check(o)
    check(f"qemu-img check: restore {i}'s overlay is clean", good, out)
check("the restores left the parent unchanged", sha(disk) == parent_sum)
check("the restores left the snapshot unchanged", tree_hash(snap) == before)
for o in overlays + [ov]:
    os.unlink(o)

# a raw parent changed by one byte
with open(disk, "r+b") as f: f.seek(100); f.write(b"X")
p, sock, log = start("changed-raw", None, restore=snap)
rc, err = finish(p, 60)
check("restore refuses a raw parent changed since the snapshot (84), naming it",
      rc == 84 and "disk.raw" in err and "changed" in err, (rc, err))
check("... and leaves no overlay behind", not glob.glob(os.path.join(tmp, "disk-s1-r*.qcow2")))

# ---- live snapshot, qcow2 disk with a chain identity; commit ----
q = os.path.join(tmp, "q.qcow2")
subprocess.run([shoal, "img", "create", "-f", "qcow2", q, "8M"], check=True, capture_output=True)
snapl = os.path.join(tmp, "s2")
p, sock, log = start("live", f"fill {A} 16M 7; vblk 64 7; shell", ("--disk", q))
check("live: guest filled memory and wrote its disk",
      wait_console(log, "shoal> ") and "vblk ok" in console(log), console(log)[-300:])
r = snapshot(sock, snapl, "--live", "--output", "json", vmm=p)
check("live snapshot of a VM with a writable qcow2 disk: status 0", r.returncode == 0, r.stdout + r.stderr)
ovq = os.path.join(tmp, "q-s2.qcow2")
man = json.load(open(os.path.join(snapl, "manifest.json"))) if r.returncode == 0 else {"disks": [{}]}
d0 = man["disks"][0]
check("live manifest: the parent with its chain identity (id, generation) and the overlay",
      man.get("live") is True and d0.get("format") == "qcow2" and d0.get("overlay") == ovq and
      len(d0.get("chain_id", {}).get("id", "")) == 36 and d0["chain_id"].get("generation", 0) >= 1, d0)
rc, err = run_in(sock, p, f"fill {A} 16M 9; vblk 64 9; exit 4\r")
check("live: the original went on and overwrote memory and disk", rc == 4, (rc, err[-400:]))
why = pattern_ok(disk_bytes(q), 64, 7)
check("live: the parent holds the snapshot instant's disk (seed 7)", not why, why)
why = pattern_ok(disk_bytes(ovq), 64, 9)
check("live: the VM's later writes are in the overlay (seed 9)", not why, why)
for img in (q, ovq):
    good, out = qemu_check(img)
    check(f"qemu-img check: {os.path.basename(img)} is clean", good, out)
p, sock, log = start("live-restored", None, restore=snapl)
rc, err = run_in(sock, p, f"verify {A} 16M 7; vblk-verify 64 7; exit 7\r")
out = console(log)
check("live restore: memory and disk of the pause instant, together",
      rc == 7 and "verify ok" in out and "vblk-verify ok sectors=64 seed=7" in out, (rc, err[-400:], out[-400:]))
for o in glob.glob(os.path.join(tmp, "q-s2-r*.qcow2")):
    os.unlink(o)
# the overlay committed into its parent: the parent is the VM's disk again, changed
r = subprocess.run([shoal, "img", "commit", ovq], capture_output=True, text=True)
check("shoal img commit merges the VM's overlay into the parent", r.returncode == 0, r.stdout + r.stderr)
why = pattern_ok(disk_bytes(q), 64, 9)
check("after commit the parent holds the VM's later writes (seed 9)", not why, why)
good, out = qemu_check(q)
check("qemu-img check: the committed parent is clean", good, out)
p, sock, log = start("changed-q", None, restore=snapl)
rc, err = finish(p, 60)
check("restore refuses the parent changed by the commit (84), naming it and the generation",
      rc == 84 and "q.qcow2" in err and "generation" in err, (rc, err))
check("... and leaves no overlay behind", not glob.glob(os.path.join(tmp, "q-s2-r*.qcow2")))

# ---- an overlay name already taken ----
d3 = os.path.join(tmp, "d3.raw")
with open(d3, "wb") as f: f.truncate(4 << 20)
open(os.path.join(tmp, "d3-taken.qcow2"), "w").close()
p, sock, log = start("taken", "shell", ("--disk", d3))
wait_console(log, "shoal> ")
r = snapshot(sock, os.path.join(tmp, "taken"))
check("a snapshot whose overlay name is taken is refused, naming the file",
      r.returncode != 0 and "d3-taken.qcow2" in r.stderr and not os.path.exists(os.path.join(tmp, "taken")),
      r.stderr)
rc, err = run_in(sock, p, "vblk 16 3; exit 0\r")
why = pattern_ok(open(d3, "rb").read(), 16, 3)
check("... and the VM went on writing its own disk", rc == 0 and not why, (rc, why))
sys.exit(0 if ok else 1)
PY
