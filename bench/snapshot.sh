#!/bin/bash
# bench/snapshot.sh - a running VM saved and started again: Shoal's
# snapshot against QEMU's migration to a file, side by side in one run, on
# the same guest (issue 10, docs/snapshots.md).
#
# The guest is the test guest ($BUILD/shoal-guest), 1 vCPU, with the
# command line "fill 0x2000000 FILL SEED; shell": it fills FILL bytes of
# its RAM with a seeded pattern and waits at its serial shell ("shoal> ").
# Three variants: Shoal's snapshot (the guest paused for all of it), Shoal's
# live snapshot (--live: paused only to save the vCPU and device state and to
# write-protect memory, then memory written while the guest runs) and QEMU.
# For each size, ROUNDS rounds, each variant once per round (the order
# rotated every round), each sample a fresh source VM:
#
#   create   Shoal: `shoal run --kernel G --cmdline ... --memory M --cpus 1
#              --console file:LOG --api-socket S`; at the prompt,
#              `shoal snapshot create --socket S DIR --output json` is timed
#              (wall: the CLI's whole run), with the VMM's own total_ms and
#              pause_ms (the guest is paused for the whole snapshot).
#            Shoal --live: the same with `--live`; the CLI polls the
#              control socket's snapshot-status every 100 ms until the
#              memory is written (wall); total_ms is the VMM's, pause_ms the
#              guest-visible pause, writes_waited the guest writes that
#              waited for their chunk to be saved first.
#            QEMU: `qemu-system-x86_64 -accel kvm -M MACHINE,memory-backend=mem
#              -m M -object memory-backend-memfd,... -smp 1 -serial file:LOG
#              -device isa-debug-exit,iobase=0xf4,iosize=1 -kernel G -append ...
#              -qmp unix:Q` (bench/boot.c's QEMU command line); at the prompt,
#              over QMP: migrate-set-parameters max-bandwidth 1 TiB/s (not
#              timed: QEMU's default rate limit would otherwise be the
#              figure; libvirt lifts it the same way to save to a file), then
#              `migrate` to "exec:cat > FILE", polled with query-migrate
#              every 5 ms until "completed" (wall: migrate sent to completed
#              seen), with QEMU's own total-time and downtime.  The migration
#              is live (pre-copy): the guest runs while its RAM is sent and
#              is paused only for the last pass (downtime).  Then `cont`:
#              after a migration QEMU leaves the source paused.
#            Both: the snapshot's size on disk (allocated blocks, du) and the
#              memory data each wrote (Shoal memory_data_bytes, pages not all
#              zero; QEMU's ram "transferred", zero pages are a flag).
#   restore  Shoal (either snapshot): `shoal run --restore DIR --console stdio
#              --api-socket S2`;
#            QEMU: the same command line as its source with `-serial stdio`
#              and `-incoming "exec:cat FILE"` (autostart).
#            Both with stdin a pipe: polled every 5 ms (Shoal: the control
#            socket's `status`, the socket appears once the VM is restored;
#            QEMU: QMP query-status) until the state is "running" (that is
#            "to running", from just before the VMM's exec); then "exit 3\r"
#            is typed, the guest's shell reads it and exits, and "to exit" is
#            the VMM's exit.  A sample counts only if the VMM exits with
#            the guest's status (Shoal 3; QEMU 7, isa-debug-exit's
#            (3 << 1) | 1); a failed one is printed and left out.
#
# Round 1 also restores each VMM's snapshot once more, untimed, typing
# "verify 0x2000000 FILL SEED; exit 5": the pattern must read back exactly
# (the guest prints "verify ok"), or the VMM's figures are flagged.
#
# Prints every sample, then per size a table: median of each figure for
# Shoal, Shoal --live and QEMU and the ratios Shoal/QEMU and live/QEMU
# (below 1: Shoal took less).  Timings are figures, never checked.
#
# With -d SIZES, also a guest that dirties memory during the snapshot
# (create only): "fill 0x2000000 FILL SEED; echo dirtying; dirty RATE SECS
# 0x2000000 FILL; shell" - it rewrites one word in each 4 KiB page of its
# filled range, in order, at RATE MiB/s of pages (-r, default 50) for SECS
# (the cap plus 30 s); the snapshot starts 1 s after "dirtying" is printed.
# QEMU's migration is given -c CAP seconds (default 20) to complete; if it
# has not (a pre-copy that does not converge: each pass finds too much
# dirtied again for QEMU's 300 ms downtime limit), it is cancelled with
# migrate_cancel and reported as not converged, with its passes
# (dirty-sync-count), data sent and expected downtime at the cap.  No
# restore there (the restored guest would go on dirtying).
#
#   bench/snapshot.sh [-n ROUNDS] [-s SIZES] [-d SIZES] [-r RATE] [-c CAP]
#                     [-M MACHINE] [-o VMMS] [-k DIR]
#   (defaults: 3 rounds, -s 256M:64M, no -d, -M microvm, -o shoal,live,qemu).
#   SIZES: space- or comma-separated MEMORY:FILL[:ROUNDS], e.g.
#   "256M:64M,1G:512M:2" (ROUNDS, when given, overrides -n for that size);
#   -s "" runs only the -d sizes.
#   -M pc works too (SeaBIOS first: slower source boots, same figures).
#   -o picks the variants (shoal, live, qemu).  -k DIR keeps the consoles and
#   VMM messages there.  Snapshots are written under ${TMPDIR:-/tmp} (the
#   KVM box's /tmp is a tmpfs: fsync is free there, and Shoal fsyncs every
#   file while `cat > FILE` does not).
#
# Needs /dev/kvm (run it in the KVM box: scripts/kvm-box.sh --
# bench/snapshot.sh), QEMU and python3; exits 77 without them.
set -u
. "$(dirname "$0")/lib.bash"
N=3; SIZES="256M:64M"; DIRTY=; RATE=50; CAP=20; MACHINE=microvm; ONLY=shoal,live,qemu; KEEP=
while getopts "n:s:d:r:c:M:o:k:" o; do
	case $o in n) N=$OPTARG ;; s) SIZES=$OPTARG ;; d) DIRTY=$OPTARG ;; r) RATE=$OPTARG ;;
	c) CAP=$OPTARG ;; M) MACHINE=$OPTARG ;; o) ONLY=$OPTARG ;; k) KEEP=$OPTARG ;; *) exit 64 ;; esac
done
[ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] ||
	bench_skip "/dev/kvm is not available; run it in the KVM box: scripts/kvm-box.sh -- $0"
for t in qemu-system-x86_64 python3; do
	command -v $t >/dev/null || bench_skip "$t is not installed"
done
for f in shoal shoal-guest; do
	[ -x "$BUILD/$f" ] || { echo "$(basename "$0"): build $BUILD/$f first (make)" >&2; exit 1; }
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "snapshot and restore, the test guest, -n $N, $(date -u '+%F %H:%M UTC'), $(nproc) cpus," \
     "$(qemu-system-x86_64 --version | head -1)"
python3 - "$BUILD/shoal" "$BUILD/shoal-guest" "$TMP" "$N" "$SIZES" "$MACHINE" "$ONLY" "$KEEP" \
	"$DIRTY" "$RATE" "$CAP" <<'PY'
import json, os, shutil, signal, socket, statistics, subprocess, sys, time

shoal, guest, tmp, rounds, sizes, machine, only, keep, dirty_sizes, rate, cap = sys.argv[1:12]
rounds, rate, cap = int(rounds), int(rate), float(cap)
vmms = [v for v in ("shoal", "live", "qemu") if v in only.split(",")]
NAME = {"shoal": "Shoal", "live": "Shoal --live", "qemu": "QEMU"}
ADDR, SEED = "0x2000000", 7
POLL = 0.005
WAIT = 300          # bound on every wait, seconds
EXPECT = {"shoal": 3, "live": 3, "qemu": (3 << 1) | 1}
DIRTY_SECS = int(cap) + 30

def now(): return time.monotonic()
def ms(t): return round(t * 1000, 1)

def text(path):
    try:
        with open(path, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_text(path, want, p, secs=WAIT):
    end = now() + secs
    while now() < end:
        if want in text(path): return True
        if p.poll() is not None: return want in text(path)
        time.sleep(0.05)
    return False

def tail(path, n=300): return text(path)[-n:].replace("\r", "").replace("\n", "|")

def kill(p):
    if p.poll() is None:
        p.kill()
    p.wait()

def disk_bytes(path):
    if os.path.isdir(path):
        return sum(os.stat(os.path.join(path, f)).st_blocks * 512 for f in os.listdir(path))
    return os.stat(path).st_blocks * 512

class QMP:
    def __init__(self, path, deadline):
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if now() > deadline: raise
                time.sleep(POLL)
        self.f = self.s.makefile("rwb")
        json.loads(self.f.readline())           # the greeting
        self.cmd("qmp_capabilities")
    def cmd(self, name, **args):
        m = {"execute": name}
        if args: m["arguments"] = args
        self.f.write(json.dumps(m).encode() + b"\n"); self.f.flush()
        while True:
            line = self.f.readline()
            if not line: raise EOFError("QMP closed")
            r = json.loads(line)
            if "return" in r: return r["return"]
            if "error" in r: raise RuntimeError(f"{name}: {r['error']}")
    def close(self): self.s.close()

def shoal_status(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        s.sendall(b'{"cmd": "status"}\n')
        return json.loads(s.makefile("rb").readline()).get("state")
    finally:
        s.close()

def qemu_argv(mem, cmdline, log, qmp):
    return ["qemu-system-x86_64", "-accel", "kvm", "-M", machine + ",memory-backend=mem", "-m", mem,
            "-object", f"memory-backend-memfd,id=mem,size={mem},share=on", "-smp", "1",
            "-display", "none", "-nodefaults", "-no-user-config",
            "-serial", "stdio" if log is None else "file:" + log,
            "-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-kernel", guest, "-append", cmdline,
            "-qmp", f"unix:{qmp},server=on,wait=off"]

# ---- create: a fresh source VM at its prompt, then the snapshot ----
# dirty: the guest rewrites its filled range at `rate` MiB/s meanwhile, and
# QEMU's migration is cancelled after `cap` s (res["converged"] False).
def create(vmm, tag, mem, fill, snap, dirty=False):
    cmdline = f"fill {ADDR} {fill} {SEED}; "
    if dirty: cmdline += f"echo dirtying; dirty {rate} {DIRTY_SECS} {ADDR} {fill}; "
    cmdline += "shell"
    mark = "shoal-guest: dirtying" if dirty else "shoal> "
    log, err = f"{tmp}/{tag}.src.log", f"{tmp}/{tag}.src.log.vmm"
    sock = f"{tmp}/{tag}.src.sock"
    if vmm != "qemu":
        argv = [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", mem, "--cpus", "1",
                "--console", "file:" + log, "--api-socket", sock, "--timeout", str(WAIT * 2)]
    else:
        argv = qemu_argv(mem, cmdline, log, sock)
    t0 = now()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(err, "wb"), stderr=subprocess.STDOUT)
    try:
        if not wait_text(log, mark, p):
            return None, f"no prompt (status {p.poll()}); console: {tail(log)}; VMM: {tail(err)}"
        prompt = ms(now() - t0)
        if dirty: time.sleep(1)             # dirtying for a second already
        if vmm != "qemu":
            t0 = now()
            r = subprocess.run([shoal, "snapshot", "create"] + (["--live"] if vmm == "live" else []) +
                               ["--socket", sock, snap, "--output", "json"],
                               capture_output=True, text=True, timeout=WAIT)
            wall = now() - t0
            try: info = json.loads(r.stdout)
            except ValueError: info = {}
            if r.returncode != 0 or info.get("dir") != snap:
                return None, f"snapshot create: status {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}"
            if vmm == "live" and info.get("live") is not True:
                return None, f"snapshot create --live: not live: {r.stdout.strip()}"
            res = {"wall": ms(wall), "total": info["total_ms"], "pause": info["pause_ms"],
                   "data": info["memory_data_bytes"] / 2**20}
            if vmm == "live": res["waited"] = info.get("writes_waited", 0)
        else:
            q = QMP(sock, now() + 30)
            q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            t0 = now()
            q.cmd("migrate", uri=f"exec:cat > {snap}")
            end = t0 + (cap if dirty else WAIT)
            while True:
                st = q.cmd("query-migrate")
                if st.get("status") in ("completed", "failed", "cancelled") or now() > end: break
                time.sleep(POLL)
            wall = now() - t0
            if dirty and st.get("status") not in ("completed", "failed", "cancelled"):
                q.cmd("migrate_cancel")
                q.close()
                ram = st.get("ram", {})
                return {"converged": False, "wall": ms(wall), "status": st.get("status"),
                        "passes": ram.get("dirty-sync-count"), "data": ram.get("transferred", 0) / 2**20,
                        "dirty_rate": ram.get("dirty-pages-rate"),
                        "expected": st.get("expected-downtime"), "prompt": prompt}, None
            if st.get("status") != "completed":
                return None, f"migrate: {st}"
            # QEMU 7.2 says "completed" a moment before it has worked out
            # total-time and downtime (0 until then): ask again.
            while not st.get("total-time") and now() < end:
                time.sleep(POLL)
                st = q.cmd("query-migrate")
            q.cmd("cont")
            q.close()
            res = {"wall": ms(wall), "total": st["total-time"], "pause": st["downtime"],
                   "data": st["ram"]["transferred"] / 2**20, "passes": st["ram"].get("dirty-sync-count")}
        res["converged"] = True
        res["disk"] = disk_bytes(snap) / 2**20
        res["prompt"] = prompt
        return res, None
    finally:
        kill(p)

# ---- restore: to running, then typed "exit"; the status must be the guest's ----
def restore(vmm, tag, mem, snap, typed, want):
    log, err = f"{tmp}/{tag}.log", f"{tmp}/{tag}.log.vmm"
    sock = f"{tmp}/{tag}.sock"
    if vmm != "qemu":
        argv = [shoal, "run", "--restore", snap, "--console", "stdio", "--api-socket", sock,
                "--timeout", str(WAIT)]
    else:
        argv = qemu_argv(mem, "", None, sock) + ["-incoming", f"exec:cat {snap}"]
    t0 = now()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=open(log, "wb"), stderr=open(err, "wb"))
    end = t0 + WAIT
    running = None
    q = None
    try:
        while running is None and now() < end and p.poll() is None:
            try:
                if vmm != "qemu":
                    if os.path.exists(sock) and shoal_status(sock) == "running": running = now()
                else:
                    if q is None: q = QMP(sock, end)
                    if q.cmd("query-status").get("status") == "running": running = now()
            except (OSError, ValueError, EOFError, RuntimeError):
                pass
            if running is None: time.sleep(POLL)
        if q: q.close()
        if running is None:
            kill(p)
            return None, f"never running (status {p.returncode}); VMM: {tail(err)}"
        p.stdin.write(typed.encode()); p.stdin.flush()
        try: p.wait(timeout=max(1, end - now()))
        except subprocess.TimeoutExpired: kill(p)
        done = now()
        p.stdin.close()
        if p.returncode != want:
            return None, f"status {p.returncode}, not {want}; console: {tail(log)}; VMM: {tail(err)}"
        return {"running": ms(running - t0), "exit": ms(done - t0)}, None
    finally:
        kill(p)

FIGS = [("create: wall ms", "wall"),
        ("create: VMM's total ms", "total"),
        ("create: guest paused ms", "pause"),
        ("create: guest writes waited", "waited"),
        ("snapshot on disk MiB", "disk"),
        ("memory data written MiB", "data"),
        ("restore: to running ms", "running"),
        ("restore: to exit ms", "exit")]
DFIGS = FIGS[:6] + [("QEMU: migration passes", "passes")]

def f1(x): return "-" if x is None else f"{x:.1f}"

def table(samples, figs):
    med = {}
    for _, k in figs:
        for v in vmms:
            xs = [s[k] for s in samples[v] if s.get("converged", True) and s.get(k) is not None]
            med[v, k] = statistics.median(xs) if xs else None
    cols = [NAME[v] for v in vmms]
    rs = [v for v in ("shoal", "live") if v in vmms and "qemu" in vmms]
    print(f"{'figure':28} " + " ".join(f"{c:>12}" for c in cols) +
          "".join(f" {NAME[v].replace('Shoal --live', 'live').lower() + '/qemu':>11}" for v in rs))
    for name, k in figs:
        line = f"{name:28} " + " ".join(f"{f1(med[v, k]):>12}" for v in vmms)
        for v in rs:
            a, b = med[v, k], med["qemu", k]
            line += f" {(f'{a / b:.2f}' if a is not None and b else '-'):>11}"
        print(line)

def drop(snap):
    if os.path.isdir(snap): shutil.rmtree(snap)
    elif os.path.exists(snap): os.unlink(snap)

def sample_line(vmm, i, res, figs):
    return (f"{NAME[vmm]:12} round {i}: " +
            ", ".join(f"{k} {res[k]:.1f}" for _, k in figs if res.get(k) is not None) +
            f" (source boot and fill to prompt {res['prompt']:.0f} ms)")

def sizes_of(spec):
    for size in spec.replace(",", " ").split():
        mem, fill, n = (size.split(":") + [rounds])[:3]
        yield mem, fill, int(n)

failed = 0
for mem, fill, n in sizes_of(sizes):
    started = now()
    print(f"\n== {mem} guest, fill {fill}, 1 vCPU, QEMU -M {machine}, {n} rounds")
    samples = {v: [] for v in vmms}
    verified = {}
    for i in range(1, n + 1):
        k = (i - 1) % len(vmms)
        order = vmms[k:] + vmms[:k]
        for vmm in order:
            tag = f"{vmm}-{mem}-{i}"
            snap = f"{tmp}/{tag}.snap"
            res, why = create(vmm, tag, mem, fill, snap)
            if res:
                r2, why = restore(vmm, tag + ".restore", mem, snap, "exit 3\r", EXPECT[vmm])
                if r2:
                    res.update(r2)
                    samples[vmm].append(res)
                    print(sample_line(vmm, i, res, FIGS), flush=True)
                if i == 1:
                    r3, why3 = restore(vmm, tag + ".verify", mem, snap,
                                       f"verify {ADDR} {fill} {SEED}; exit 5\r", 11 if vmm == "qemu" else 5)
                    out = text(f"{tmp}/{tag}.verify.log")
                    verified[vmm] = bool(r3) and "verify ok" in out and "verify bad" not in out
                    if not verified[vmm]:
                        print(f"{NAME[vmm]:12} round {i}: FAILED the check restore: {why3 or tail(f'{tmp}/{tag}.verify.log')}")
            if why:
                failed += 1
                print(f"{NAME[vmm]:12} round {i}: FAILED, left out: {why}", flush=True)
            drop(snap)
    print(f"\n{mem} guest, fill {fill}: medians of the samples that ran, {now() - started:.0f} s in all"
          " (x/qemu below 1: Shoal took less)")
    table(samples, FIGS)
    print("samples: " + ", ".join(f"{NAME[v]} {len(samples[v])}/{n}" for v in vmms) +
          "; pattern read back after restore: " +
          ", ".join(f"{NAME[v]} {'ok' if verified.get(v) else 'NOT OK'}" for v in vmms))

for mem, fill, n in sizes_of(dirty_sizes):
    started = now()
    print(f"\n== dirtying: {mem} guest, fill {fill}, then dirty {rate} MiB/s over it; QEMU capped at"
          f" {cap:.0f} s; 1 vCPU, QEMU -M {machine}, {n} rounds")
    samples = {v: [] for v in vmms}
    for i in range(1, n + 1):
        k = (i - 1) % len(vmms)
        order = vmms[k:] + vmms[:k]
        for vmm in order:
            tag = f"dirty-{vmm}-{mem}-{i}"
            snap = f"{tmp}/{tag}.snap"
            res, why = create(vmm, tag, mem, fill, snap, dirty=True)
            if res:
                samples[vmm].append(res)
                if res["converged"]:
                    print(sample_line(vmm, i, res, DFIGS), flush=True)
                else:
                    print(f"{NAME[vmm]:12} round {i}: NOT CONVERGED in {cap:.0f} s, cancelled: {res['status']}"
                          f" after {res['passes']} passes, {res['data']:.1f} MiB sent, dirty rate"
                          f" {res['dirty_rate']} pages/s, expected downtime {res['expected']} ms"
                          f" (source boot and fill to prompt {res['prompt']:.0f} ms)", flush=True)
            else:
                failed += 1
                print(f"{NAME[vmm]:12} round {i}: FAILED, left out: {why}", flush=True)
            drop(snap)
    print(f"\ndirtying {mem} guest, fill {fill}: medians of the samples that completed,"
          f" {now() - started:.0f} s in all")
    table(samples, DFIGS)
    print("completed: " + ", ".join(f"{NAME[v]} {sum(1 for s in samples[v] if s['converged'])}/{n}"
                                    for v in vmms) +
          (f" (QEMU within {cap:.0f} s)" if "qemu" in vmms else ""))
if keep:
    os.makedirs(keep, exist_ok=True)
    for f in os.listdir(tmp):
        if ".log" in f: shutil.copy(os.path.join(tmp, f), keep)
sys.exit(1 if failed else 0)
PY
