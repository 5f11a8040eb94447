#!/bin/bash
# bench/migrate.sh - live migration of a running VM: Shoal against QEMU,
# side by side in one run, on the same guest and the same transport
# (issue 12, docs/migration.md).
#
# The guest is the test guest ($BUILD/shoal-guest), 1 vCPU, with the
# command line "fill 0x2000000 FILL SEED; shell" (idle: it fills FILL
# bytes of its RAM with a seeded pattern and waits at its serial shell) or,
# with -d, "fill ...; echo dirtying; dirty RATE SECS 0x2000000 FILL; shell"
# (it rewrites one word in each 4 KiB page of its filled range, in order,
# at RATE MiB/s of pages, while it migrates).  Each sample is a fresh
# source and a fresh destination on this host, the stream over a Unix
# socket (no network in the figure):
#
#   Shoal  source `shoal run --kernel G --cmdline C --memory M --cpus 1
#            --console file:LOG --api-socket S`; destination the same
#            options with `--console stdio --incoming unix:MIG`; at the
#            source's prompt `shoal migrate --socket S unix:MIG
#            --output json` (defaults: downtime limit 300 ms, no bandwidth
#            cap) is timed (wall: the CLI's whole run); its JSON gives
#            downtime_ms (from the source's vCPUs paused to the
#            destination's acknowledgement, measured by the source),
#            total_ms, round and bytes.
#   QEMU   `qemu-system-x86_64 -accel kvm -M microvm,memory-backend=mem
#            -object memory-backend-memfd,... -smp 1 -kernel G -append C
#            -qmp unix:Q` (bench/boot.c's command line), the destination
#            the same with `-serial stdio -incoming unix:MIG`; over QMP:
#            migrate-set-parameters max-bandwidth 1 TiB/s (QEMU's default
#            cap of 128 MiB/s would otherwise be the figure; Shoal has
#            none) and downtime-limit 300 (its default, said explicitly),
#            then `migrate` to "unix:MIG", polled with query-migrate every
#            5 ms until "completed" (wall), with QEMU's own total-time,
#            downtime, passes (dirty-sync-count) and bytes transferred.
#
# Idle samples are checked: round 1 types "verify 0x2000000 FILL SEED;
# exit 5" into the destination, which must print "verify ok" and exit
# with the guest's status (QEMU: isa-debug-exit's (5 << 1) | 1).  Other
# rounds type "exit 3".  A sample whose destination does not finish that
# way is printed and left out.  With -d, QEMU's migration gets -c CAP
# seconds; past it it is cancelled and reported as not converged, with its
# passes, data sent and expected downtime.  Shoal gets the same cap (its
# migration is cancelled with `shoal migrate --cancel`).
#
# With -z zstd[:LEVEL] Shoal runs a second time per sample, "Shoal+zstd":
# `shoal migrate --compress zstd[:LEVEL]` on the same guest (its JSON's
# ram_raw_bytes, the data pages' own size, is printed as "pages MiB"), and
# the table adds the ratio Shoal+zstd/Shoal.  The fill pattern is
# incompressible (a hash of each address); -p sparse instead starts the
# guest with "dirty 0 1 0x2000000 FILL; shell" (one word written in each
# 4 KiB page of the range for a second, the rest of the page zero: pages
# that compress well, as much of a real guest's memory does), whose
# destination is not verified (no pattern) but must exit as typed.
#
# The downtime as the guest sees it (-T US, default 1000; -T 0 turns it
# off and runs the guest as before).  Each VMM's downtime is its own
# figure, taken at different points, and the guest's TSC cannot referee:
# QEMU restores the TSC at its saved value (its guest misses most of the
# pause), Shoal advances it by the realtime elapsed.  So the clock is the
# host's: the guest writes a tick, one byte (0x80 | a 7-bit sequence
# number), on its serial port every US microseconds of its TSC (idle:
# "fill ...; echo ticking; tick US SECS; shell", sleeping in HLT between
# ticks and stopping once a byte is typed; dirtying: `dirty ... tick=US`,
# from its busy loop), both VMMs' consoles go to their stdout (Shoal
# `--console stdio`, QEMU `-serial stdio`; the source's was a file), and
# bench/tickstamp ($BUILD/bench/tickstamp, `make tests` builds it) reads
# each pipe and stamps every tick with CLOCK_MONOTONIC as it arrives.  Per
# sample (idle samples tick for 1 s before the migration starts, and
# every sample runs 1 s at the destination before its typed line or its
# end):
#   guest-seen downtime  the longest gap between two ticks in a row, the
#                        source's and then the destination's, from 0.5 s
#                        before the source's last tick to 0.5 s after the
#                        destination's first (the headline figure)
#   switch gap           the source's last tick to the destination's first
#   ticks lost           sequence numbers missing at the switch (0: the
#                        destination's first tick is the one after)
#   pre-copy max gap     the longest gap between the source's ticks from
#                        the migration's start to 0.5 s before its last
#   tick interval, max   the median and the longest gap in the second
#                        before the migration: the figure's noise floor
#   guest's own TSC gap  (idle) the longest gap between two ticks by the
#                        guest's TSC, from its report at the destination
#                        ("tick ... max_gap_us=G cost_ns=C")
#   a tick's exits       (idle) the guest's TSC time inside one tick's
#                        port write (its VM exit), on average
# Shoal runs with SHOAL_MIGRATE_TRACE=1 (vmm/mtrace.h, docs/migration.md
# "Tracing the switch"): its VMMs write the points of the switch to their
# stderr on the same clock as the stamps, and each sample gets the switch
# gap piece by piece (ms; a piece is "-" where a point is missing):
#   last src tick->pause     the source's last tick stamped to its vCPUs
#                            asked to park (the VMM's downtime begins)
#   pause->ack (VMM's)       to the acknowledgement read: the VMM's figure
#   ack->go-ahead at dst     to the go-ahead read at the destination
#   go-ahead->1st KVM_RUN    to the destination's first KVM_RUN
#   1st KVM_RUN->1st tick    to the destination's first tick stamped
# (the five add up to the switch gap), and inside them: the sync's round
# trip, the source's vCPUs parked, the destination's read and answer,
# its door thread joined, migrate_incoming's return, cli/run.c's work to
# vm_run, the event loop and the vCPU threads started, the first KVM_RUN's
# return, the first console write and its stamp; and when the source,
# counted from its go-ahead, stops and tears its VM down (on one host it
# shares the CPU with the destination's start).
# A typed line that the ticking destination shows no sign of (nothing but
# ticks on its console 15 s later) is typed again, and the sample says so:
# QEMU's destination once ticked on for 300 s, the line never seen.
#
# Prints every sample, then per case a table of medians for Shoal and QEMU
# and the ratio Shoal/QEMU (below 1: Shoal took less).  Timings are
# figures, never checked.
#
#   bench/migrate.sh [-n ROUNDS] [-s SIZES] [-d SIZES] [-r RATE] [-c CAP] [-o VMMS] [-t MS]
#                    [-z zstd[:LEVEL]] [-p fill|sparse] [-D DISKSIZE] [-T US]
#   (defaults: 3 rounds, -s 1G:512M, no -d, -r 100, -c 30, -o shoal,qemu,
#   -t 300: the downtime limit both VMMs are given, Shoal's --downtime-ms
#   and QEMU's downtime-limit, -T 1000)
#   SIZES: MEMORY:FILL[:ROUNDS], comma- or space-separated; -s "" runs only
#   the -d sizes.
#
# -D DISKSIZE (say 256M) gives both VMMs a raw disk that is not shared and
# mirrors it with the memory: the source's image is DISKSIZE of random
# bytes (made once, copied for each sample), the destination's an empty
# file of that size.  Shoal: `--disk IMG` at both ends and `shoal migrate
# --with-disks`; QEMU: `-drive file=IMG,format=raw,if=none,id=d0 -device
# virtio-blk-device,drive=d0` at both ends and `migrate` with "blk": true
# (QEMU 7.2's block migration: the bulk copy and the dirty blocks with the
# RAM).  The guest does not use the disk.  A sample counts only if the
# destination's image is then byte-equal to the source's (cmp).
#
# Needs /dev/kvm (in the KVM box: scripts/kvm-box.sh -- bench/migrate.sh),
# QEMU and python3; exits 77 without them.
set -u
. "$(dirname "$0")/lib.bash"
N=3; SIZES="1G:512M"; DIRTY=; RATE=100; CAP=30; ONLY=shoal,qemu; LIMIT=300; ZSTD=; PATTERN=fill; DISK=
TICK=1000
while getopts "n:s:d:r:c:o:t:z:p:D:T:" o; do
	case $o in n) N=$OPTARG ;; s) SIZES=$OPTARG ;; d) DIRTY=$OPTARG ;; r) RATE=$OPTARG ;;
	c) CAP=$OPTARG ;; o) ONLY=$OPTARG ;; t) LIMIT=$OPTARG ;; z) ZSTD=$OPTARG ;;
	p) PATTERN=$OPTARG ;; D) DISK=$OPTARG ;; T) TICK=$OPTARG ;; *) exit 64 ;; esac
done
case $TICK in ''|*[!0-9]*) echo "$(basename "$0"): -T $TICK: microseconds between ticks, 0 for none" >&2; exit 64 ;; esac
case $PATTERN in fill|sparse) ;; *) echo "$(basename "$0"): -p $PATTERN: fill or sparse" >&2; exit 64 ;; esac
[ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] ||
	bench_skip "/dev/kvm is not available; run it in the KVM box: scripts/kvm-box.sh -- $0"
for t in python3 $(case ,$ONLY, in *,qemu,*) echo qemu-system-x86_64 ;; esac); do
	command -v $t >/dev/null || bench_skip "$t is not installed"
done
for f in shoal shoal-guest; do
	[ -x "$BUILD/$f" ] || { echo "$(basename "$0"): build $BUILD/$f first (make)" >&2; exit 1; }
done
[ "$TICK" = 0 ] || [ -x "$BUILD/bench/tickstamp" ] || {
	echo "$(basename "$0"): build $BUILD/bench/tickstamp first (make tests), or -T 0" >&2; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
if [ -n "$DISK" ]; then
	case $DISK in *[0-9]M) mib=${DISK%M} ;; *[0-9]G) mib=$((${DISK%G} * 1024)) ;;
	*) echo "$(basename "$0"): -D $DISK: a size in M or G" >&2; exit 64 ;; esac
	head -c $((mib << 20)) /dev/urandom >"$TMP/disk.src" || exit 1
fi

echo "live migration, the test guest, -n $N, $(date -u '+%F %H:%M UTC'), $(nproc) cpus," \
     "$(qemu-system-x86_64 --version 2>/dev/null | head -1)${ZSTD:+, -z $ZSTD}, -p $PATTERN${DISK:+, -D $DISK (disk mirrored)}," \
     "$([ "$TICK" = 0 ] && echo "no ticks" || echo "a tick every $TICK us")"
python3 - "$BUILD/shoal" "$BUILD/shoal-guest" "$TMP" "$N" "$SIZES" "$DIRTY" "$RATE" "$CAP" "$ONLY" "$LIMIT" "$ZSTD" "$PATTERN" "$DISK" "$TICK" "$BUILD/bench/tickstamp" <<'PY'
import json, os, re, socket, statistics, subprocess, sys, time

shoal, guest, tmp, rounds, sizes, dirty_sizes, rate, cap, only, limit, zspec, pattern, disk, tick, tickstamp = sys.argv[1:16]
rounds, rate, cap, limit, tick = int(rounds), int(rate), float(cap), int(limit), int(tick)
vmms = [v for v in ("shoal", "qemu") if v in only.split(",")]
NAME = {"shoal": "Shoal", "qemu": "QEMU", "shoalz": "Shoal+zstd"}
if zspec and "shoal" in vmms:
    vmms.insert(1, "shoalz")
ADDR, SEED = "0x2000000", 7
POLL = 0.005
WAIT = 300

def now(): return time.monotonic()
def ms(t): return round(t * 1000, 1)

def text(path):
    try:
        with open(path, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def raw(path):
    try:
        with open(path, "rb") as f: return f.read()
    except OSError: return b""

def tail(path, n=300): return text(path)[-n:].replace("\r", "").replace("\n", "|")

def wait_text(path, want, p, secs=WAIT):
    end = now() + secs
    while now() < end:
        if want in text(path): return True
        if p.poll() is not None: return want in text(path)
        time.sleep(0.05)
    return False

def kill(p):
    if p.poll() is None: p.kill()
    p.wait()

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
        json.loads(self.f.readline())
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

def qemu_argv(mem, cmdline, log, qmp):
    return ["qemu-system-x86_64", "-accel", "kvm", "-M", "microvm,memory-backend=mem", "-m", mem,
            "-object", f"memory-backend-memfd,id=mem,size={mem},share=on", "-smp", "1",
            "-display", "none", "-nodefaults", "-no-user-config",
            "-serial", "stdio" if log is None else "file:" + log,
            "-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-kernel", guest, "-append", cmdline,
            "-qmp", f"unix:{qmp},server=on,wait=off"]

def shoal_argv(mem, cmdline, console, sock):
    return [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", mem, "--cpus", "1",
            "--console", console, "--api-socket", sock, "--timeout", str(WAIT * 2)]

# A VMM whose console (its stdout) goes through tickstamp into log, its
# ticks' times into stamps; its own messages into err.
def start(argv, stdin, log, stamps, err, readers, env=None):
    p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=open(err, "wb"), env=env)
    readers.append(subprocess.Popen([tickstamp, log, stamps], stdin=p.stdout))
    p.stdout.close()
    return p

# The ticks a tickstamp wrote: (sequence number, monotonic seconds).
def stamps_of(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) == 2: out.append((int(p[0]), int(p[1]) / 1e9))
    except OSError: pass
    return out

def max_gap(ts): return max((b - a for a, b in zip(ts, ts[1:])), default=None)

# The points of a Shoal VMM's migrate-trace (SHOAL_MIGRATE_TRACE=1,
# vmm/mtrace.h) in its stderr: {point: monotonic seconds}, the first of each.
def trace_of(path):
    out = {}
    for m in re.finditer(r"^shoal: migrate-trace: (\S+) (\d+)$", text(path), re.M):
        out.setdefault(m[1], int(m[2]) / 1e6)
    return out

# The switch piece by piece, on the host's clock (ms): the source's last
# tick stamped, the pause asked, the acknowledgement read at the source,
# the go-ahead read at the destination, its first KVM_RUN, its first tick
# stamped; and inside them what the trace also says.
BREAK = [("bd_tick_pause", "last src tick", "src.pause"), ("bd_pause_ack", "src.pause", "src.ack"),
         ("bd_ack_go", "src.ack", "dst.go_ahead"), ("bd_go_run", "dst.go_ahead", "dst.kvm_run"),
         ("bd_run_tick", "dst.kvm_run", "first dst tick"),
         ("bd_sync", "src.converged", "src.pause"), ("bd_tick_paused", "last src tick", "src.paused"),
         ("bd_state_end", "dst.state_loaded", "dst.end"), ("bd_end_ack", "dst.end", "dst.ack_sent"),
         ("bd_go_door", "dst.go_ahead", "dst.door_closed"), ("bd_go_done", "dst.go_ahead", "dst.incoming_done"), ("bd_done_vmrun", "dst.incoming_done", "dst.vm_run"),
         ("bd_loop", "dst.vm_run", "dst.loop_started"), ("bd_threads", "dst.loop_started", "dst.vcpu_threads"),
         ("bd_vcpu_run", "dst.vcpu_threads", "dst.kvm_run"),
         ("bd_vstart_run", "dst.vcpu_start", "dst.kvm_run"),
         ("bd_src_stop", "src.go_ahead_sent", "src.stop"), ("bd_src_destroy", "src.go_ahead_sent", "src.destroy"),
         ("bd_src_destroyed", "src.go_ahead_sent", "src.destroyed"),
         ("bd_run_exit", "dst.kvm_run", "dst.first_exit"), ("bd_exit_console", "dst.first_exit", "dst.console"),
         ("bd_console_tick", "dst.console", "first dst tick")]

def breakdown(res, tag, slast, dfirst):
    t = {k: v for k, v in trace_of(f"{tmp}/{tag}.src.vmm").items() if k.startswith("src.")}
    t.update({k: v for k, v in trace_of(f"{tmp}/{tag}.dst.vmm").items() if k.startswith("dst.")})
    if not t: return
    t["last src tick"], t["first dst tick"] = slast, dfirst
    for k, a, b in BREAK:
        if a in t and b in t: res[k] = (t[b] - t[a]) * 1000

# The figures of the ticks (bench header: "The downtime as the guest sees
# it") into res; t_start is when the migration began.
def tick_figures(res, tag, t_start):
    src = stamps_of(f"{tmp}/{tag}.src.ticks")
    dst = stamps_of(f"{tmp}/{tag}.dst.ticks")
    base = [t for _, t in src if t_start - 1.0 <= t < t_start]
    if len(base) > 1:
        gaps = [b - a for a, b in zip(base, base[1:])]
        res["tick_ms"], res["tick_max"] = statistics.median(gaps) * 1000, max(gaps) * 1000
    m = re.findall(r"tick us=\d+ seconds=\d+ stopped=\w+ ticks=\d+ max_gap_us=(\d+) cost_ns=(\d+)",
                   text(f"{tmp}/{tag}.dst.log"))
    if m:
        res["tsc_gap"], res["tick_cost_us"] = int(m[-1][0]) / 1000, int(m[-1][1]) / 1000
    m = re.search(r"info .*tsc_khz=(\d+) .*tsc_source=(\S+)", text(f"{tmp}/{tag}.src.log"))
    if m:
        res["tick_note"] = f"the guest's TSC: {int(m[1]) / 1000:.1f} MHz from {m[2]}"
    if not src or not dst:
        res["tick_note"] = "; ".join(filter(None, [res.get("tick_note"),
                                     f"no ticks from the {'source' if not src else 'destination'}"]))
        return
    (sseq, slast), (dseq, dfirst) = src[-1], dst[0]
    res["switch_gap"] = (dfirst - slast) * 1000
    res["tick_when"] = (f"the source's last tick at {(slast - t_start) * 1000:.1f} ms, the destination's "
                        f"first at {(dfirst - t_start) * 1000:.1f} ms from the migration's start")
    res["lost"] = (dseq - sseq - 1) % 128
    near = sorted(t for _, t in src + dst if slast - 0.5 <= t <= dfirst + 0.5)
    res["guest_down"] = max_gap(near) * 1000
    breakdown(res, tag, slast, dfirst)
    pre = [t for _, t in src if t_start <= t < slast - 0.5]
    if len(pre) > 1: res["precopy_gap"] = max_gap(pre) * 1000

# One sample: source at its prompt, destination waiting, the migration,
# then (idle) a typed line into the destination and its exit status.
def sample(vmm, tag, mem, fill, dirty, typed, want):
    readers = []
    res, why = sample_run(vmm, tag, mem, fill, dirty, typed, want, readers)
    for r in readers:
        try: r.wait(timeout=10)
        except subprocess.TimeoutExpired: kill(r)
    t_start = res.pop("t_start", None) if res else None
    if t_start is not None and tick:
        tick_figures(res, tag, t_start)
    return res, why

def sample_run(vmm, tag, mem, fill, dirty, typed, want, readers):
    cmdline = f"dirty 0 1 {ADDR} {fill}; " if pattern == "sparse" else f"fill {ADDR} {fill} {SEED}; "
    if tick: cmdline = "info; " + cmdline      # the guest's TSC rate, for its own figures
    if dirty: cmdline += f"echo dirtying; dirty {rate} {int(cap) + 60} {ADDR} {fill}{f' tick={tick}' if tick else ''}; "
    elif tick: cmdline += f"echo ticking; tick {tick} {WAIT * 4}; "
    cmdline += "shell"
    mark = "shoal-guest: dirtying" if dirty else "shoal-guest: ticking" if tick else "shoal> "
    slog, serr, ssock = f"{tmp}/{tag}.src.log", f"{tmp}/{tag}.src.vmm", f"{tmp}/{tag}.src.sock"
    dlog, derr, dsock = f"{tmp}/{tag}.dst.log", f"{tmp}/{tag}.dst.vmm", f"{tmp}/{tag}.dst.sock"
    mig = f"{tmp}/{tag}.mig"
    simg, dimg = f"{tmp}/{tag}.src.img", f"{tmp}/{tag}.dst.img"
    if disk:
        subprocess.run(["cp", f"{tmp}/disk.src", simg], check=True)
        with open(dimg, "wb") as f: f.truncate(os.path.getsize(simg))
    if vmm.startswith("shoal"):
        sargv = shoal_argv(mem, cmdline, "stdio" if tick else "file:" + slog, ssock) + \
            (["--disk", simg] if disk else [])
        dargv = shoal_argv(mem, cmdline, "stdio", dsock) + ["--incoming", "unix:" + mig] + \
            (["--disk", dimg] if disk else [])
    else:
        qd = lambda img: ["-drive", f"file={img},format=raw,if=none,id=d0",
                          "-device", "virtio-blk-device,drive=d0"] if disk else []
        sargv = qemu_argv(mem, cmdline, None if tick else slog, ssock) + qd(simg)
        dargv = qemu_argv(mem, cmdline, None, dsock) + ["-incoming", "unix:" + mig] + qd(dimg)
    # Shoal's trace of the switch, for the breakdown (vmm/mtrace.h)
    tenv = dict(os.environ, SHOAL_MIGRATE_TRACE="1") if vmm.startswith("shoal") else None
    t0 = now()
    if tick:
        src = start(sargv, subprocess.PIPE, slog, f"{tmp}/{tag}.src.ticks", serr, readers, tenv)
    else:
        src = subprocess.Popen(sargv, stdin=subprocess.DEVNULL, stdout=open(serr, "wb"), stderr=subprocess.STDOUT)
    dst = None
    try:
        if not wait_text(slog, mark, src):
            return None, f"source: no prompt (status {src.poll()}); console: {tail(slog)}; VMM: {tail(serr)}"
        prompt = ms(now() - t0)
        if tick:
            dst = start(dargv, subprocess.PIPE, dlog, f"{tmp}/{tag}.dst.ticks", derr, readers, tenv)
        else:
            dst = subprocess.Popen(dargv, stdin=subprocess.PIPE, stdout=open(dlog, "wb"), stderr=open(derr, "wb"))
        end = now() + 30
        while not os.path.exists(mig) and now() < end and dst.poll() is None:
            time.sleep(POLL)
        if not os.path.exists(mig):
            return None, f"destination: not listening (status {dst.poll()}); VMM: {tail(derr)}"
        if dirty or tick: time.sleep(1)          # ticks: the second before is the baseline
        if vmm.startswith("shoal"):
            t0 = now()
            mp = subprocess.Popen([shoal, "migrate", "--socket", ssock, "unix:" + mig, "--output", "json",
                                   "--downtime-ms", str(limit)] +
                                  (["--compress", zspec] if vmm == "shoalz" else []) +
                                  (["--with-disks"] if disk else []),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                out, err = mp.communicate(timeout=cap if dirty else WAIT)
            except subprocess.TimeoutExpired:
                subprocess.run([shoal, "migrate", "--socket", ssock, "--cancel"], capture_output=True, timeout=60)
                out, err = mp.communicate(timeout=60)
                try:
                    i = json.loads(out)
                    why = (f"{i.get('round')} rounds, {i.get('bytes', 0) / 2**20:.1f} MiB sent,"
                           f" {i.get('dirty_pages')} pages dirty at the cancel; shoal migrate said:"
                           f" {err.strip()[-300:]!r}; source VMM: {tail(serr)!r}")
                except ValueError:
                    why = (f"{(out + err).strip()[-200:]}; source VMM (status {src.poll()}): "
                           f"{tail(serr)!r}; destination (status {dst.poll()}): {tail(derr)!r}")
                return {"converged": False, "wall": ms(now() - t0), "prompt": prompt, "why": why}, None
            wall = now() - t0
            try: info = json.loads(out)
            except ValueError: info = {}
            if mp.returncode != 0 or "downtime_ms" not in info:
                if dirty and mp.returncode == 70:
                    return {"converged": False, "wall": ms(wall), "prompt": prompt,
                            "why": f"{(out + err).strip()[-200:]}; source VMM (status {src.poll()}): "
                                   f"{tail(serr)!r}"}, None
                return None, f"shoal migrate: status {mp.returncode}: {out.strip()} {err.strip()}"
            res = {"wall": ms(wall), "total": info["total_ms"], "down": info["downtime_ms"],
                   "passes": info.get("round"), "data": info.get("bytes", 0) / 2**20,
                   "raw": info.get("ram_raw_bytes", 0) / 2**20,
                   "phases": info.get("downtime_phases_ms") or {}}
        else:
            q = QMP(ssock, now() + 30)
            q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40, "downtime-limit": limit})
            t0 = now()
            q.cmd("migrate", uri="unix:" + mig, **({"blk": True} if disk else {}))
            end = t0 + (cap if dirty else WAIT)
            dsk = 0                  # "disk" is in query-migrate only while it runs
            while True:
                st = q.cmd("query-migrate")
                dsk = max(dsk, st.get("disk", {}).get("transferred", 0))
                if st.get("status") in ("completed", "failed", "cancelled") or now() > end: break
                time.sleep(POLL)
            wall = now() - t0
            if st.get("status") not in ("completed", "failed", "cancelled"):
                q.cmd("migrate_cancel")
                q.close()
                ram = st.get("ram", {})
                return {"converged": False, "wall": ms(wall), "prompt": prompt,
                        "why": f"{ram.get('dirty-sync-count')} passes, "
                               f"{ram.get('transferred', 0) / 2**20:.1f} MiB sent, dirty rate "
                               f"{ram.get('dirty-pages-rate')} pages/s, expected downtime "
                               f"{st.get('expected-downtime')} ms"}, None
            if st.get("status") != "completed":
                return None, f"migrate: {st}"
            while not st.get("total-time") and now() < end:
                time.sleep(POLL)
                st = q.cmd("query-migrate")
            q.close()
            res = {"wall": ms(wall), "total": st["total-time"], "down": st["downtime"],
                   "passes": st["ram"].get("dirty-sync-count"),
                   "data": (st["ram"]["transferred"] + max(dsk, st.get("disk", {}).get("transferred", 0))) / 2**20}
        res["converged"] = True
        res["prompt"] = prompt
        res["t_start"] = t0
        if tick: time.sleep(1)                   # the destination's ticks after the switch
        if disk and subprocess.run(["cmp", "-s", simg, dimg]).returncode != 0:
            return None, "the destination's image differs from the source's after the migration"
        if typed:
            # With ticks, a destination whose console shows nothing but
            # ticks 15 s after the line is typed again: QEMU's once went on
            # ticking for 300 s, the line never seen (left out, not found why)
            end = now() + WAIT
            while dst.poll() is None and now() < end:
                seen = len(raw(dlog))
                dst.stdin.write(typed.encode()); dst.stdin.flush()
                try: dst.wait(timeout=15 if tick else WAIT)
                except subprocess.TimeoutExpired: pass
                if not tick or any(b < 0x80 for b in raw(dlog)[seen:]):
                    try: dst.wait(timeout=max(1, end - now()))
                    except subprocess.TimeoutExpired: pass
                    break
                res["retyped"] = res.get("retyped", 0) + 1
            if dst.returncode != want:
                return None, (f"destination: status {dst.returncode}, not {want}; console: {tail(dlog)};"
                              f" VMM: {tail(derr)}")
            if "verify" in typed and ("verify ok" not in text(dlog) or "verify bad" in text(dlog)):
                return None, f"destination: the pattern did not verify: {tail(dlog)}"
        return res, None
    finally:
        kill(src)
        if dst: kill(dst)

FIGS = [("migrate: wall ms", "wall"), ("total ms (VMM's own)", "total"),
        ("downtime ms", "down"), ("rounds / passes", "passes"), ("data sent MiB", "data"),
        ("pages MiB (uncompressed)", "raw")]
if tick:
    FIGS[3:3] = [("guest-seen downtime ms", "guest_down"), ("  switch gap ms", "switch_gap"),
                 ("  ticks lost at the switch", "lost"), ("pre-copy max tick gap ms", "precopy_gap"),
                 ("guest's own TSC gap ms", "tsc_gap"), ("tick interval ms (before)", "tick_ms"),
                 ("max tick gap ms (before)", "tick_max"), ("a tick's exits, us", "tick_cost_us")]
    if "shoal" in vmms or "shoalz" in vmms:
        FIGS[5:5] = [("  last src tick->pause", "bd_tick_pause"), ("  pause->ack (VMM's)", "bd_pause_ack"),
                     ("  ack->go-ahead at dst", "bd_ack_go"), ("  go-ahead->1st KVM_RUN", "bd_go_run"),
                     ("  1st KVM_RUN->1st tick", "bd_run_tick"),
                     ("    sync->pause asked", "bd_sync"), ("    last src tick->paused", "bd_tick_paused"),
                     ("    dst state->end read", "bd_state_end"), ("    dst end->ack sent", "bd_end_ack"),
                     ("    go-ahead->door closed", "bd_go_door"), ("    go-ahead->incoming done", "bd_go_done"), ("    ->vm_run (cli/run.c)", "bd_done_vmrun"),
                     ("    vm_run->loop started", "bd_loop"), ("    ->vCPU threads made", "bd_threads"),
                     ("    ->1st KVM_RUN", "bd_vcpu_run"),
                     ("    vCPU start->KVM_RUN", "bd_vstart_run"),
                     ("    KVM_RUN->1st exit", "bd_run_exit"), ("    1st exit->console", "bd_exit_console"),
                     ("    console->stamped", "bd_console_tick"),
                     ("  src go-ahead->VM stop", "bd_src_stop"), ("  src go-ahead->destroy", "bd_src_destroy"),
                     ("  src go-ahead->destroyed", "bd_src_destroyed")]
FINE = {"tick_ms", "tick_max", "tick_cost_us"} | {k for k, _, _ in BREAK}    # printed to 2 places

def f1(x, k=None): return "-" if x is None else f"{x:.2f}" if k in FINE else f"{x:.1f}"

def table(samples):
    med = {}
    for _, k in FIGS:
        for v in vmms:
            xs = [s[k] for s in samples[v] if s["converged"] and s.get(k) is not None]
            med[v, k] = statistics.median(xs) if xs else None
    both = "shoal" in vmms and "qemu" in vmms
    zs = "shoalz" in vmms
    print(f"{'figure':28} " + " ".join(f"{NAME[v]:>10}" for v in vmms) + (f" {'shoal/qemu':>11}" if both else "")
          + (f" {'zstd/shoal':>11}" if zs else ""))
    for name, k in FIGS:
        line = f"{name:28} " + " ".join(f"{f1(med[v, k], k):>10}" for v in vmms)
        if both:
            a, b = med["shoal", k], med["qemu", k]
            line += f" {(f'{a / b:.3f}' if a is not None and b else '-'):>11}"
        if zs:
            a, b = med["shoalz", k], med["shoal", k]
            line += f" {(f'{a / b:.3f}' if a is not None and b else '-'):>11}"
        print(line)

def sizes_of(spec):
    for size in spec.replace(",", " ").split():
        mem, fill, n = (size.split(":") + [rounds])[:3]
        yield mem, fill, int(n)

failed = 0
cases = [(m, f, n, False) for m, f, n in sizes_of(sizes)] + [(m, f, n, True) for m, f, n in sizes_of(dirty_sizes)]
for mem, fill, n, dirty in cases:
    started = now()
    what = f"dirtying {rate} MiB/s over its {fill}, cap {cap:.0f} s" if dirty else f"idle after filling {fill}"
    if disk: what += f", a {disk} disk mirrored"
    print(f"\n== {mem} guest, {what}, 1 vCPU, {n} rounds, downtime limit {limit} ms")
    samples = {v: [] for v in vmms}
    for i in range(1, n + 1):
        k = (i - 1) % len(vmms)
        for vmm in vmms[k:] + vmms[:k]:
            tag = f"{'d' if dirty else 'i'}-{vmm}-{mem}-{fill}-{i}"   # two cases' files apart
            if dirty: typed, want = None, None
            # a blank line first: QEMU's destination can drop the first byte
            # typed on its stdio (a lost "v" made "erify" once)
            elif i == 1 and pattern == "fill":
                typed, want = f"\rverify {ADDR} {fill} {SEED}; exit 5\r", 11 if vmm == "qemu" else 5
            else: typed, want = "\rexit 3\r", 7 if vmm == "qemu" else 3
            res, why = sample(vmm, tag, mem, fill, dirty, typed, want)
            if not res:
                failed += 1
                print(f"{NAME[vmm]:6} round {i}: FAILED, left out: {why}", flush=True)
                continue
            samples[vmm].append(res)
            if res["converged"]:
                print(f"{NAME[vmm]:6} round {i}: " + ", ".join(f"{k} {f1(res[k], k)}" for _, k in FIGS
                                                          if res.get(k) is not None) +
                      (f" ({res['tick_note']})" if res.get("tick_note") else "") +
                      (f" ({res['tick_when']})" if res.get("tick_when") else "") +
                      (f" (its line typed {res['retyped'] + 1} times)" if res.get("retyped") else "") +
                      f" (source boot and fill {res['prompt']:.0f} ms)" +
                      (", pattern verified at the destination" if typed and "verify" in typed else "") +
                      ("; downtime's pieces (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                               res["phases"].items()) if res.get("phases") else ""),
                      flush=True)
            else:
                print(f"{NAME[vmm]:6} round {i}: NOT CONVERGED in {cap:.0f} s, cancelled: {res['why']}",
                      flush=True)
    print(f"\n{mem} guest, {what}: medians of the samples that completed, {now() - started:.0f} s in all"
          " (shoal/qemu below 1: Shoal took less)")
    table(samples)
    ph = [s["phases"] for s in samples["shoal"] if s.get("converged") and s.get("phases")] \
        if "shoal" in samples else []
    if ph:
        print("shoal's downtime piece by piece, medians (ms): " +
              ", ".join(f"{k} {statistics.median(p[k] for p in ph):.2f}" for k in ph[0]))
    print("completed: " + ", ".join(f"{NAME[v]} {sum(1 for s in samples[v] if s['converged'])}/{n}"
                                    for v in vmms))
sys.exit(1 if failed else 0)
PY
