#!/bin/bash
# bench/clones.sh - many clones of one template (issue 10, docs/snapshots.md
# "Clones"): how fast a clone starts, against a full restore of the same
# snapshot, and how much host memory N running clones take, against N
# private copies of the template's RAM.
#
# The template is the test guest ($BUILD/shoal-guest), 1 vCPU, MEM of RAM,
# booted with "fill 0x2000000 FILL 7; shell": it writes FILL bytes of a
# seeded pattern and waits at its serial shell; `shoal snapshot create`
# saves it (full) and it is stopped.
#
#   start    ROUNDS rounds, each `shoal run --restore T --console none
#            --api-socket S` and the same with --clone, the order swapped
#            every round: from just before the exec until the control
#            socket's status says "running" (polled every 5 ms).  A full
#            restore reads the memory file into the VM's own memory (and
#            checks its checksum); a clone maps it copy-on-write and reads
#            only what its guest touches.  Each VMM is killed once running.
#   memory   N clones, started one after another (`--restore T --clone
#            --console stdio`, stdin a pipe): once a clone runs, the guest is
#            sent "verify 0x2000000 FILL 7" and reads its whole pattern back
#            (so every clone has touched all the template's data), must
#            print "verify ok", and is then paused over its control socket
#            (so N guests do not share the CPU while the others start).
#            With all N paused, for each clone VMM: /proc/PID/smaps_rollup
#            (Rss, Pss) and the smaps entry of its mapping of the template's
#            memory file (Rss, Pss, Private_Clean + Private_Dirty: the pages
#            it copied); and MemAvailable (/proc/meminfo) before the first
#            clone and with all N running, as a cross-check of what the
#            host really gave.  Every clone's start to running is a sample
#            too (later ones start beside more clones).
#
# Prints the samples' medians and the ratios (clone/full restore for the
# start; the sum of the clones' PSS against N x MEM; the share of the
# template's resident pages that no clone copied).  Figures, never checked.
#
#   bench/clones.sh [-n CLONES] [-m MEM] [-f FILL] [-r ROUNDS]
#   (defaults: 100 clones, 256M, 64M, 5 rounds)
#
# Needs /dev/kvm (run it in the KVM box: scripts/kvm-box.sh --
# bench/clones.sh) and python3; exits 77 without them.  The template is
# written under ${TMPDIR:-/tmp} (the KVM box's /tmp is a tmpfs: its pages
# are the page cache the clones map).
set -u
. "$(dirname "$0")/lib.bash"
N=100; MEM=256M; FILL=64M; ROUNDS=5
while getopts "n:m:f:r:" o; do
	case $o in n) N=$OPTARG ;; m) MEM=$OPTARG ;; f) FILL=$OPTARG ;; r) ROUNDS=$OPTARG ;; *) exit 64 ;; esac
done
[ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] ||
	bench_skip "/dev/kvm is not available; run it in the KVM box: scripts/kvm-box.sh -- $0"
command -v python3 >/dev/null || bench_skip "python3 is not installed"
for f in shoal shoal-guest; do
	[ -x "$BUILD/$f" ] || { echo "$(basename "$0"): build $BUILD/$f first (make)" >&2; exit 1; }
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-bench.XXXXXX")
trap 'pkill -KILL -P $$ 2>/dev/null; rm -rf "$TMP"' EXIT
ulimit -n 4096 2>/dev/null

echo "clones of one template, the test guest, $N clones, $MEM with $FILL written, $ROUNDS rounds," \
     "$(date -u '+%F %H:%M UTC'), $(nproc) cpus"
python3 - "$BUILD/shoal" "$BUILD/shoal-guest" "$TMP" "$N" "$MEM" "$FILL" "$ROUNDS" <<'PY'
import json, os, socket, statistics, subprocess, sys, time

shoal, guest, tmp, n, mem, fill, rounds = sys.argv[1:8]
n, rounds = int(n), int(rounds)
ADDR, SEED, POLL, WAIT = "0x2000000", 7, 0.005, 300

def now(): return time.monotonic()
def ms(t): return round(t * 1000, 1)
def mib(kib): return kib / 1024
def size_bytes(s):
    u = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * u[s[-1].upper()] if s[-1].upper() in u else int(s)

def text(path):
    try:
        with open(path, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def tail(path, k=300): return text(path)[-k:].replace("\r", "").replace("\n", "|")

def wait_text(path, want, p, secs=WAIT):
    end = now() + secs
    while now() < end:
        if want in text(path): return True
        if p.poll() is not None: return want in text(path)
        time.sleep(0.02)
    return False

def ctl(path, req):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(30)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        return json.loads(s.makefile("rb").readline())
    finally:
        s.close()

def kill(p):
    if p.poll() is None: p.kill()
    p.wait()

def to_running(p, sock, t0):
    end = t0 + WAIT
    while now() < end and p.poll() is None:
        try:
            if os.path.exists(sock) and ctl(sock, {"cmd": "status"}).get("state") == "running":
                return now() - t0
        except (OSError, ValueError):
            pass
        time.sleep(POLL)
    return None

def meminfo(key):
    for line in open("/proc/meminfo"):
        if line.startswith(key + ":"): return int(line.split()[1])
    return 0

# ---- the template ----
tpl, log, sock = f"{tmp}/template", f"{tmp}/template.log", f"{tmp}/template.sock"
p = subprocess.Popen([shoal, "run", "--kernel", guest, "--cmdline", f"fill {ADDR} {fill} {SEED}; shell",
                      "--memory", mem, "--cpus", "1", "--console", "file:" + log, "--api-socket", sock,
                      "--timeout", str(WAIT * 4)],
                     stdin=subprocess.DEVNULL, stdout=open(log + ".vmm", "wb"), stderr=subprocess.STDOUT)
if not wait_text(log, "shoal> ", p):
    sys.exit(f"the template never reached its prompt: {tail(log)} {tail(log + '.vmm')}")
r = subprocess.run([shoal, "snapshot", "create", "--socket", sock, tpl, "--output", "json"],
                   capture_output=True, text=True, timeout=WAIT)
kill(p)
if r.returncode != 0:
    sys.exit(f"snapshot create: status {r.returncode}: {r.stdout} {r.stderr}")
info = json.loads(r.stdout)
memfile = os.path.realpath(f"{tpl}/memory")
print(f"template: {mem} RAM, {info['memory_data_bytes'] / 2**20:.1f} MiB of data in its memory file, "
      f"snapshot {info['total_ms']} ms")

# ---- start: full restore against clone ----
starts = {"full": [], "clone": []}
for i in range(rounds):
    for kind in (("full", "clone") if i % 2 == 0 else ("clone", "full")):
        s = f"{tmp}/start-{kind}-{i}.sock"
        argv = [shoal, "run", "--restore", tpl, "--console", "none", "--api-socket", s,
                "--timeout", str(WAIT)] + (["--clone"] if kind == "clone" else [])
        t0 = now()
        q = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(f"{tmp}/start-{kind}-{i}.err", "wb"))
        t = to_running(q, s, t0)
        kill(q)
        if t is None:
            print(f"  start {kind} round {i + 1}: never running: {tail(f'{tmp}/start-{kind}-{i}.err')}")
        else:
            starts[kind].append(ms(t))
for kind in ("full", "clone"):
    print(f"  start to running, {kind:5}: {starts[kind]}")

# ---- memory: N clones, each reads its template's data, then pauses ----
avail0 = meminfo("MemAvailable")
clones, clone_starts, failed = [], [], 0
for i in range(n):
    s, lg = f"{tmp}/c{i}.sock", f"{tmp}/c{i}.log"
    t0 = now()
    q = subprocess.Popen([shoal, "run", "--restore", tpl, "--clone", "--console", "stdio",
                          "--api-socket", s, "--timeout", str(WAIT * 20)],
                         stdin=subprocess.PIPE, stdout=open(lg, "wb"), stderr=open(lg + ".vmm", "wb"))
    t = to_running(q, s, t0)
    if t is None:
        print(f"  clone {i}: never running: {tail(lg + '.vmm')}")
        kill(q); failed += 1
        continue
    clone_starts.append(ms(t))
    q.stdin.write(f"verify {ADDR} {fill} {SEED}\r".encode()); q.stdin.flush()
    if not wait_text(lg, "verify ok", q) or "verify bad" in text(lg):
        print(f"  clone {i}: its guest did not read the pattern back: {tail(lg)}")
        kill(q); failed += 1
        continue
    try:
        ctl(s, {"cmd": "pause"})
    except (OSError, ValueError) as ex:
        print(f"  clone {i}: pause: {ex}")
    clones.append(q)
avail1 = meminfo("MemAvailable")

def smaps(pid):
    roll, mp, cur = {}, {"Rss": 0, "Pss": 0, "Private_Clean": 0, "Private_Dirty": 0}, None
    for line in open(f"/proc/{pid}/smaps_rollup"):
        f = line.split()
        if len(f) >= 2 and f[0].endswith(":"): roll[f[0][:-1]] = int(f[1])
    for line in open(f"/proc/{pid}/smaps"):
        f = line.split()
        if not f: continue
        if "-" in f[0] and not f[0].endswith(":"):
            cur = f[-1] if len(f) >= 6 else ""
        elif cur == memfile and f[0][:-1] in mp:
            mp[f[0][:-1]] += int(f[1])
    return roll, mp

rss = pss = m_rss = m_pss = m_priv = 0
privs = []
for q in clones:
    roll, mp = smaps(q.pid)
    rss += roll.get("Rss", 0); pss += roll.get("Pss", 0)
    m_rss += mp["Rss"]; m_pss += mp["Pss"]
    priv = mp["Private_Clean"] + mp["Private_Dirty"]
    m_priv += priv; privs.append(priv)
for q in clones:
    kill(q)

k = len(clones)
ram = size_bytes(mem) / 1024
print(f"  clones running: {k} of {n} ({failed} failed)")
print(f"  clone start to running, median of the {len(clone_starts)} clones: "
      f"{statistics.median(clone_starts) if clone_starts else '-'} ms "
      f"(min {min(clone_starts, default='-')}, max {max(clone_starts, default='-')})")
print()
fm = statistics.median(starts["full"]) if starts["full"] else None
cm = statistics.median(starts["clone"]) if starts["clone"] else None
print(f"{'figure':58} {'value':>12}")
print(f"{'start to running, full restore, median ms':58} {fm if fm is not None else '-':>12}")
print(f"{'start to running, clone, median ms':58} {cm if cm is not None else '-':>12}")
print(f"{'clone / full restore':58} {'-' if not fm or cm is None else f'{cm / fm:.2f}':>12}")
if k:
    print(f"{f'sum of PSS of the {k} clone VMMs, MiB':58} {mib(pss):>12.1f}")
    print(f"{f'{k} x {mem} (private copies of the RAM), MiB':58} {mib(k * ram):>12.1f}")
    print(f"{'sum of PSS / that':58} {pss / (k * ram):>12.3f}")
    print(f"{'sum of RSS of the clone VMMs, MiB (shared pages counted in each)':58} {mib(rss):>12.1f}")
    print(f"{'template mapping: resident in all clones (sum of Rss), MiB':58} {mib(m_rss):>12.1f}")
    print(f"{'template mapping: sum of PSS, MiB':58} {mib(m_pss):>12.1f}")
    print(f"{'template mapping: pages the clones copied, MiB':58} {mib(m_priv):>12.1f}")
    print(f"{'template mapping: copied per clone, median KiB':58} {statistics.median(privs):>12.0f}")
    print(f"{'share of the resident template pages still shared, %':58} "
          f"{(100 * (m_rss - m_priv) / m_rss if m_rss else 0):>12.2f}")
    print(f"{'VMM per clone (PSS outside the template), mean KiB':58} "
          f"{(pss - m_pss) / k:>12.0f}")
    print(f"{'host MemAvailable fell by, MiB (all clones running)':58} {mib(avail0 - avail1):>12.1f}")
PY
