#!/bin/bash
# snapshot.sh - `shoal snapshot create` and `shoal run --restore` with the
# test guest (docs/snapshots.md):
#   - the guest fills 64 MiB with a seeded pattern and waits at its shell; a
#     snapshot is taken; the original goes on and overwrites the pattern;
#     restored twice from the one snapshot, the guest verifies the pattern
#     exactly as it was at the snapshot and exits with the code typed;
#   - a live snapshot (--live) while the guest overwrites its pattern:
#     the guest's writes wait for their memory to be saved, and the restore
#     sees the pattern of the pause instant;
#   - three clones (--clone) run from the snapshot at once: one overwrites
#     its memory, the others still see the snapshot's pattern, pages only
#     read are shared (PSS well under RSS), the snapshot is unchanged;
#   - a snapshot of a VM with two vCPUs busy on every CPU restores and runs;
#   - --compress: memory.zst (zstd) instead of memory, its size in the
#     manifest; it restores with the pattern intact; --clone of it and
#     --live --compress are refused (64); a damaged or truncated memory.zst
#     is refused (84);
#   - bad input: an existing directory, flags --restore
#     refuses, a truncated memory file, a damaged state file, an unknown
#     version, a missing file, a changed disk: each refused with its own
#     message and status 84 (or 64), and nothing in the snapshot changed;
#     a guest that saw a CPU feature this host lacks: refused (67), named;
#     too little memory (a cgroup's memory.max below the snapshot's data):
#     refused (67), naming both sizes;
#   - crash safety: the VMM killed with SIGKILL at random moments of
#     `snapshot create` leaves a complete snapshot that restores, or none.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import hashlib, json, os, random, re, shutil, signal, socket, subprocess, sys, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

A = "0x2000000"
def start(name, cmdline, extra=(), restore=None, memory="256M"):
    sock = os.path.join(tmp, name + ".sock")
    log = os.path.join(tmp, name + ".console")
    if restore:
        args = [shoal, "run", "--restore", restore]
    else:
        args = [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", memory, *extra]
    p = subprocess.Popen(args + ["--console", "file:" + log, "--api-socket", sock,
                                 "--timeout", "180"],
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
    for ch in text.encode():          # the guest's UART takes a byte at a time
        s.sendall(bytes([ch])); time.sleep(0.002)
    return s

def ctl(sock, obj):
    c = socket.socket(socket.AF_UNIX); c.connect(sock)
    c.sendall((json.dumps(obj) + "\n").encode())
    line = c.makefile().readline(); c.close()
    return json.loads(line)

def snapshot(sock, d, *extra):
    return subprocess.run([shoal, "snapshot", "create", "--socket", sock, d, *extra],
                          capture_output=True, text=True, timeout=300)

def finish(p, secs=120):
    try:
        p.wait(timeout=secs)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    return p.returncode, p.stderr.read().decode(errors="replace")

# A directory's names, sizes and bytes, hashed; a sparse file's holes are
# skipped (SEEK_DATA) and its data hashed with their offsets, so a 256 MiB
# memory file with 64 MiB of data costs 64 MiB of reading, not 256 (the
# box's software CPU makes every byte count).
def tree_hash(d):
    h = hashlib.sha256()
    for n in sorted(os.listdir(d)):
        with open(os.path.join(d, n), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h.update(n.encode() + b"\0" + str(size).encode())
            off = 0
            while off < size:
                try: off = os.lseek(f.fileno(), off, os.SEEK_DATA)
                except OSError: break                 # ENXIO: only a hole is left
                end = os.lseek(f.fileno(), off, os.SEEK_HOLE)
                f.seek(off)
                h.update(str(off).encode())
                while off < end:
                    b = f.read(min(end - off, 4 << 20))
                    if not b: break
                    h.update(b); off += len(b)
    return h.hexdigest()

# ---- a pattern, a snapshot, two restores ----
snap = os.path.join(tmp, "snap1")
p, sock, log = start("orig", f"fill {A} 64M 7; echo filled; shell")
check("guest filled its pattern and waits at the shell", wait_console(log, "shoal> "), console(log)[-300:])
r = snapshot(sock, snap, "--output", "json")
try:
    info = json.loads(r.stdout)
except ValueError:
    info = {}
check("snapshot create: status 0 and a JSON summary", r.returncode == 0 and info.get("dir") == snap,
      r.stdout + r.stderr)
print(f"note: 256 MiB guest, {info.get('memory_data_bytes', 0) >> 20} MiB not zero: paused "
      f"{info.get('pause_ms', 0):.0f} ms, {info.get('total_ms', 0):.0f} ms in all (a figure, not a check)")
check("snapshot: memory 256 MiB, only pages that are not zero written",
      info.get("memory_bytes") == 256 << 20 and 64 << 20 <= info.get("memory_data_bytes", 0) < 128 << 20, info)
check("snapshot directory: manifest, state, memory and nothing else",
      sorted(os.listdir(snap)) == ["manifest.json", "memory", "state"] if os.path.isdir(snap) else False,
      os.listdir(tmp))
st = os.stat(os.path.join(snap, "memory"))
check("the memory file is sparse (zero pages are holes)", st.st_blocks * 512 < 160 << 20, st.st_blocks)
man = json.load(open(os.path.join(snap, "manifest.json")))
check("manifest: format, version, vCPUs, memory, checksums",
      man["format"] == "shoal-snapshot" and man["version"] == 1 and man["vcpus"] == 1 and
      man["memory_bytes"] == 256 << 20 and len(man["files"]["state"]["xxh3"]) == 16, man)
rss = ctl(sock, {"cmd": "metrics"}).get("guest_rss_bytes", 0)
check("the snapshot did not make the VM's untouched memory resident (holes are not read)",
      0 < rss < 128 << 20, rss)
# the original goes on: it overwrites the pattern, so memory saved later would show it
s = type_into(sock, f"fill {A} 64M 9; verify {A} 64M 9; exit 4\r")
rc, err = finish(p)
s.close()
check("the original went on after the snapshot and exited 4", rc == 4, (rc, err, console(log)[-500:]))
before = tree_hash(snap)
for i, code in ((1, 5), (2, 6)):
    p, sock, log = start(f"restored{i}", None, restore=snap)
    time.sleep(0.3)
    rss = ctl(sock, {"cmd": "metrics"}).get("guest_rss_bytes", 0)
    check(f"restore {i}: only the snapshot's data is resident, not its holes", 0 < rss < 128 << 20, rss)
    s = type_into(sock, f"verify {A} 64M 7; exit {code}\r")
    rc, err = finish(p)
    s.close()
    out = console(log)
    check(f"restore {i}: the pattern is as it was at the snapshot (verify ok) and exit {code}",
          rc == code and "verify ok" in out and "verify bad" not in out, (rc, err, out[-600:]))
check("restoring left the snapshot unchanged", tree_hash(snap) == before)

# ---- a live checkpoint: the guest writes memory while it is written ----
B = "0xc000000"    # 192 MiB: the writer, which goes in address order, gets there late
C = "0xe000000"    # 224 MiB: later still
snapl = os.path.join(tmp, "snap-live")
p, sock, log = start("live", f"fill {B} 32M 7; shell")
check("live: guest filled its pattern", wait_console(log, "shoal> "), console(log)[-300:])
# The guest is already writing when the snapshot begins: it dirties C, which
# the writer reaches last, for 15 s, so its writes meet pages not yet saved.
# (Before, it began an overwrite typed once the snapshot had begun, which
# once lost the race to the writer: writes_waited 0.)
s = type_into(sock, f"dirty 16 15 {C} 8M; echo dirtied\r")
wait_console(log, "shoal> dirty", 10)
c = subprocess.Popen([shoal, "snapshot", "create", "--live", "--socket", sock, snapl, "--output", "json"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
out, err = c.communicate(timeout=300)
try:
    info = json.loads(out)
except ValueError:
    info = {}
check("live snapshot: done, with a JSON summary", c.returncode == 0 and info.get("live") is True,
      (c.returncode, out, err))
print(f"note: live snapshot: paused {info.get('pause_ms', 0):.1f} ms, written in "
      f"{info.get('total_ms', 0):.0f} ms, {info.get('writes_waited')} guest writes waited (a figure)")
check("live snapshot: the guest's writes during it waited for their memory to be saved first",
      info.get("writes_waited", 0) > 0, info)
check("live: the original went on to the end of its dirtying",
      wait_console(log, "shoal-guest: dirtied", 120), console(log)[-300:])
s.close()
s = type_into(sock, f"fill {B} 32M 9; echo overwritten\r")
check("live: the original overwrote its pattern after the snapshot",
      wait_console(log, "shoal-guest: overwritten", 120), console(log)[-300:])
s.sendall(b"exit 0\r"); finish(p); s.close()
st = os.stat(os.path.join(snapl, "memory"))
check("live snapshot: the memory file is sparse too", st.st_blocks * 512 < 160 << 20, st.st_blocks)
check("live snapshot: manifest says live", json.load(open(os.path.join(snapl, "manifest.json"))).get("live") is True)
p, sock, log = start("live-restored", None, restore=snapl)
# restored at the pause instant, mid-dirtying: it finishes that first
restored_dirtied = wait_console(log, "shoal-guest: dirtied", 120)
check("live snapshot restores mid-command: the guest finishes the dirtying it was in",
      restored_dirtied, console(log)[-300:])
s = type_into(sock, f"verify {B} 32M 7; exit 8\r")
rc, err = finish(p); s.close()
out = console(log)
check("live snapshot restores to the pause instant: the pattern from before the overwrite",
      rc == 8 and "verify ok" in out and "verify bad" not in out, (rc, err, out[-500:]))

# ---- clones: memory copy-on-write from the snapshot's file ----
def pss_rss(pid):
    v = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("Pss", "Rss"): v[k] = int(rest.split()[0]) << 10
    return v["Pss"], v["Rss"]

clones = []
for i in range(3):
    sock = os.path.join(tmp, f"clone{i}.sock"); log = os.path.join(tmp, f"clone{i}.console")
    p = subprocess.Popen([shoal, "run", "--restore", snap, "--clone", "--console", "file:" + log,
                          "--api-socket", sock, "--timeout", "180"],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    clones.append((p, sock, log))
# clone 0 overwrites the pattern; clones 1 and 2 must still see the snapshot's
conns = [type_into(clones[0][1], f"fill {A} 64M 9; verify {A} 64M 9; echo c0done\r")]
check("clone 0 overwrote its copy of the pattern", wait_console(clones[0][2], "shoal-guest: c0done", 120),
      console(clones[0][2])[-300:])
for i in (1, 2):
    conns.append(type_into(clones[i][1], f"verify {A} 64M 7; echo c{i}done\r"))
for i in (1, 2):
    out = (wait_console(clones[i][2], f"shoal-guest: c{i}done", 120), console(clones[i][2]))
    check(f"clone {i} sees the snapshot's pattern, not clone 0's writes",
          out[0] and "verify ok" in out[1] and "verify bad" not in out[1], out[1][-400:])
pss = [pss_rss(c[0].pid) for c in clones]
print("note: clones' (PSS, RSS) in MiB: " + ", ".join(f"({a >> 20}, {b >> 20})" for a, b in pss))
check("clones 1 and 2 share the pages they only read (each one's PSS well under its RSS)",
      all(pss[i][0] < 0.75 * pss[i][1] for i in (1, 2)), pss)
for i, (p, sock, log) in enumerate(clones):
    conns[i].sendall(f"exit {20 + i}\r".encode())
for i, (p, sock, log) in enumerate(clones):
    rc, err = finish(p)
    check(f"clone {i} ended with its own status {20 + i}", rc == 20 + i, (rc, err[-300:]))
for c in conns: c.close()
check("clones left the snapshot unchanged", tree_hash(snap) == before)
r = subprocess.run([shoal, "run", "--clone"], capture_output=True, text=True)
check("--clone without --restore is refused", r.returncode == 64 and "--restore" in r.stderr, r.stderr)

# ---- two vCPUs, both busy, snapshot mid-work ----
snap2 = os.path.join(tmp, "snap2")
p, sock, log = start("smp", f"allcpus fill 0x4000000 8M 3; echo go; allcpus spin 3000; allcpus verify 0x4000000 8M 3; exit 7", ("--cpus", "2"))
check("two-vCPU guest is working", wait_console(log, "go"), console(log)[-300:])
r = snapshot(sock, snap2)
check("snapshot of two busy vCPUs", r.returncode == 0 and "paused" in r.stdout, r.stdout + r.stderr)
rc, err = finish(p)
check("the original two-vCPU guest ended with 7", rc == 7, (rc, err))
p, sock, log = start("smp-restored", None, restore=snap2)
rc, err = finish(p)
out = console(log)
check("restored two-vCPU guest finished its work on both vCPUs and ended with 7",
      rc == 7 and "allcpus ok n=2 sum" in out and "bad" not in out, (rc, err, out[-400:]))

# ---- a compressed snapshot (--compress: memory.zst) ----
zs = os.path.join(tmp, "snap-zstd")
p, sock, log = start("zorig", f"fill {A} 16M 5; echo filled; shell")
check("zstd: the guest filled its pattern", wait_console(log, "shoal> "), console(log)[-300:])
r = snapshot(sock, zs, "--compress", "--output", "json")
try: zi = json.loads(r.stdout)
except ValueError: zi = {}
files = sorted(os.listdir(zs)) if os.path.isdir(zs) else []
check("snapshot create --compress: memory.zst instead of memory", r.returncode == 0 and
      files == ["manifest.json", "memory.zst", "state"], (r.returncode, r.stderr, files))
zm = json.load(open(os.path.join(zs, "manifest.json"))) if files else {}
mem = zm.get("files", {}).get("memory", {})
zsize = os.path.getsize(os.path.join(zs, "memory.zst")) if files else -1
check("... the manifest says zstd, and the file's size", mem.get("compression") == "zstd" and
      mem.get("file_bytes") == zsize == zi.get("memory_file_bytes"), (mem, zsize, zi))
print(f"note: --compress: {mem.get('data_bytes', 0) >> 20} MiB of data in a {zsize >> 10} KiB file "
      f"(the pattern is pseudo-random; a figure)")
r = subprocess.run([shoal, "snapshot", "create", "--socket", sock, zs + "-x", "--live", "--compress"],
                   capture_output=True, text=True)
check("--live --compress is refused (64), saying why", r.returncode == 64 and "--live" in r.stderr,
      (r.returncode, r.stderr))
s = type_into(sock, "exit 0\r"); finish(p); s.close()
zh = tree_hash(zs)
p, sock, log = start("zrest", None, restore=zs)
s = type_into(sock, f"verify {A} 16M 5; exit 7\r") if os.path.exists(sock) else None
rc, err = finish(p)
if s: s.close()
check("a compressed snapshot restores and the guest finds its pattern (exit 7)",
      rc == 7 and "verify ok" in console(log), (rc, err[-300:], console(log)[-300:]))
r = subprocess.run([shoal, "run", "--restore", zs, "--clone", "--console", "none", "--timeout", "30"],
                   capture_output=True, text=True, timeout=120)
check("... a --clone of it is refused (64), naming --compress",
      r.returncode == 64 and "--compress" in r.stderr, (r.returncode, r.stderr))
check("... and the snapshot is unchanged", tree_hash(zs) == zh)
def zcopy(name, mutate):
    d = zs + "-" + name
    shutil.copytree(zs, d)
    mutate(os.path.join(d, "memory.zst"))
    r = subprocess.run([shoal, "run", "--restore", d, "--console", "none", "--timeout", "30"],
                       capture_output=True, text=True, timeout=120)
    shutil.rmtree(d)
    return r
def zflip(f):
    with open(f, "r+b") as fh:
        fh.seek(os.path.getsize(f) // 2); b = fh.read(1); fh.seek(os.path.getsize(f) // 2)
        fh.write(bytes([b[0] ^ 0x10]))
def zcut(f):
    with open(f, "r+b") as fh: fh.truncate(os.path.getsize(f) - 100)
for name, mutate in (("damaged", zflip), ("truncated", zcut)):
    r = zcopy(name, mutate)
    check(f"a {name} memory.zst is refused (84), naming the file",
          r.returncode == 84 and "memory" in r.stderr and r.stderr.count("\n") <= 2,
          (r.returncode, r.stderr))

# ---- bad input ----
p, sock, log = start("bad", "shell")
wait_console(log, "shoal> ")
r = snapshot(sock, snap)
check("snapshot into an existing directory is refused", r.returncode != 0 and "already exists" in r.stderr,
      r.stderr)
check("... and the existing snapshot is unchanged", tree_hash(snap) == before)
r = snapshot(sock, os.path.join(tmp, "no", "such", "dir"))
check("snapshot under a missing parent is refused, naming it", r.returncode != 0 and "no/such/dir" in r.stderr,
      r.stderr)
finish_s = type_into(sock, "exit 0\r"); finish(p); finish_s.close()

# (a VM with a writable disk: tests/system/snapshot_disk.sh)

r = subprocess.run([shoal, "run", "--restore", snap, "--memory", "512M"], capture_output=True, text=True)
check("--restore with --memory is refused (status 64), naming the flag",
      r.returncode == 64 and "--memory" in r.stderr, (r.returncode, r.stderr))

# The refusals below work on copies of a small snapshot (64 MiB guest, 8 MiB
# of pattern): each copy, hash and refused restore then costs a few
# seconds in the box rather than half a minute.
small = os.path.join(tmp, "snap-small")
p, sock, log = start("small", f"fill {A} 8M 7; shell", memory="64M")
wait_console(log, "shoal> ")
r = snapshot(sock, small, "--output", "json")
check("a small snapshot for the refusals below", r.returncode == 0, r.stderr)
try:
    small_ms = json.loads(r.stdout).get("total_ms", 500)
except ValueError:
    small_ms = 500
finish_s = type_into(sock, "exit 0\r"); finish(p); finish_s.close()

def bad_copy(name, mutate):
    d = os.path.join(tmp, "bad-" + name)
    shutil.copytree(small, d)
    mutate(d)
    h = tree_hash(d)
    r = subprocess.run([shoal, "run", "--restore", d, "--console", "none", "--timeout", "30"],
                       capture_output=True, text=True, timeout=120)
    same = tree_hash(d) == h
    shutil.rmtree(d)      # the box's /tmp is memory: keep it small
    return r, same

def truncate_memory(d):
    with open(os.path.join(d, "memory"), "r+b") as f: f.truncate(36 << 20)
def flip_state(d):
    with open(os.path.join(d, "state"), "r+b") as f:
        f.seek(100); b = f.read(1); f.seek(100); f.write(bytes([b[0] ^ 0x40]))
def flip_memory(d):
    with open(os.path.join(d, "memory"), "r+b") as f:
        f.seek((32 << 20) + 4096 * 3 + 17); b = f.read(1); f.seek((32 << 20) + 4096 * 3 + 17)
        f.write(bytes([b[0] ^ 1]))
def version_2(d):
    m = json.load(open(os.path.join(d, "manifest.json"))); m["version"] = 2
    json.dump(m, open(os.path.join(d, "manifest.json"), "w"))
def no_memory(d): os.unlink(os.path.join(d, "memory"))
def truncate_state(d):
    with open(os.path.join(d, "state"), "r+b") as f: f.truncate(50)
def not_json(d):
    with open(os.path.join(d, "manifest.json"), "w") as f: f.write("{\"format\": ")

for name, mutate, want in (("truncated memory file", truncate_memory, "memory"),
                           ("damaged state file", flip_state, "checksum"),
                           ("damaged memory file", flip_memory, "checksum"),
                           ("unknown version", version_2, "version 2"),
                           ("missing memory file", no_memory, "memory"),
                           ("truncated state file", truncate_state, "state"),
                           ("manifest not JSON", not_json, "manifest.json")):
    r, same = bad_copy(name.replace(" ", "-"), mutate)
    check(f"restore refuses a {name} (status 84, says why)",
          r.returncode == 84 and want in r.stderr and r.stderr.count("\n") <= 2, (r.returncode, r.stderr))
    check(f"... and changes nothing in it ({name})", same)

# restore on a CPU without a feature the guest saw (the manifest's "cpu")
def extra_cpu_bit(d):
    m = json.load(open(os.path.join(d, "manifest.json")))
    m["cpu"]["1.edx"] |= 1 << 10          # reserved on every x86 CPU: no host has it
    json.dump(m, open(os.path.join(d, "manifest.json"), "w"))
r, same = bad_copy("cpu", extra_cpu_bit)
check("restore refuses a CPU that lacks a feature the guest saw (status 67), naming it",
      r.returncode == 67 and "leaf 1.edx bit 10" in r.stderr, (r.returncode, r.stderr))
def no_cpu(d):
    m = json.load(open(os.path.join(d, "manifest.json"))); del m["cpu"]
    json.dump(m, open(os.path.join(d, "manifest.json"), "w"))
r, same = bad_copy("nocpu", no_cpu)
check("restore refuses a manifest without its CPU record (status 84)",
      r.returncode == 84 and '"cpu"' in r.stderr, (r.returncode, r.stderr))

# too little memory for the snapshot's 64 MiB of data: the restore runs in
# a cgroup whose memory.max is 48 MiB (root, cgroup v2)
cg = "/sys/fs/cgroup/shoal-test-room-%d" % os.getpid()
try:
    ctl_file = "/sys/fs/cgroup/cgroup.subtree_control"
    if "memory" not in open(ctl_file).read().split():
        open(ctl_file, "w").write("+memory")
    os.mkdir(cg)
    open(os.path.join(cg, "memory.max"), "w").write(str(48 << 20))
except OSError as err:
    cg = None
    print(f"SKIP: restore with too little memory: no cgroup v2 to limit it ({err})")
if cg:
    h = tree_hash(snap)
    r = subprocess.run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg,
                        shoal, "run", "--restore", snap, "--console", "none", "--timeout", "30"],
                       capture_output=True, text=True, timeout=120)
    check("restore with less memory than the snapshot's data is refused (status 67), naming both",
          r.returncode == 67 and re.search(r"needs 6\d MiB .* has \d+ MiB available", r.stderr),
          (r.returncode, r.stderr))
    check("... and changes nothing in it (too little memory)", tree_hash(snap) == h)
    time.sleep(0.2)
    os.rmdir(cg)

# a read-only disk that changed after the snapshot
ro = os.path.join(tmp, "ro.raw")
with open(ro, "wb") as f: f.write(b"\x01" * (1 << 20))
p, sock, log = start("rodisk", "shell", ("--disk", ro + ",readonly"))
wait_console(log, "shoal> ")
snap3 = os.path.join(tmp, "snap-ro")
r = snapshot(sock, snap3)
check("snapshot of a VM with a read-only disk", r.returncode == 0, r.stderr)
s = type_into(sock, "exit 0\r"); finish(p); s.close()
time.sleep(0.02)
with open(ro, "r+b") as f: f.write(b"\x02")
r = subprocess.run([shoal, "run", "--restore", snap3, "--console", "none"], capture_output=True, text=True)
check("restore refuses a disk changed since the snapshot, naming it",
      r.returncode == 84 and "ro.raw" in r.stderr and "changed" in r.stderr, (r.returncode, r.stderr))

# ---- crash safety: SIGKILL during snapshot create ----
kills = int(os.environ.get("SHOAL_SNAPSHOT_KILLS", "20"))
# the small snapshot's guest (64 MiB, 8 MiB of pattern): kill anywhere from
# before the command reaches the VMM to after it is done
span = 0.1 + 1.5 * small_ms / 1000
complete = absent = 0
bad = []
for i in range(kills):
    p, sock, log = start(f"kill{i}", f"fill {A} 8M 11; shell", memory="64M")
    wait_console(log, "shoal> ")
    d = os.path.join(tmp, f"killed{i}")
    c = subprocess.Popen([shoal, "snapshot", "create", "--socket", sock, d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.uniform(0, span))
    p.send_signal(signal.SIGKILL); p.wait(); c.wait()
    if not os.path.exists(d):
        absent += 1
        continue
    p, sock, log = start(f"kill{i}-r", None, restore=d)
    time.sleep(0.3)
    try:
        s = type_into(sock, f"verify {A} 8M 11; exit 9\r")
    except OSError as ex:                 # the restore ended before it ran
        s = None
    rc, err = finish(p, 60)
    if s: s.close()
    if rc == 9 and "verify ok" in console(log): complete += 1
    else: bad.append((i, rc, err[-300:], sorted(os.listdir(d))))
    for n in os.listdir(tmp):             # the box's /tmp is memory: keep it small
        if n.startswith(f"killed{i}"): shutil.rmtree(os.path.join(tmp, n))
check(f"SIGKILL during snapshot create, {kills} times: each left a complete snapshot "
      f"({complete}) or none ({absent})", not bad and complete + absent == kills, bad)
sys.exit(0 if ok else 1)
PY
