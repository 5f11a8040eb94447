#!/bin/bash
# bench/migrate_tls.sh - live migration over TCP with the key, in clear
# against TLS 1.3 (docs/migration.md, "Encryption"; state/migrate_tls.c),
# side by side in one run on the same guest.
#
# The guest is the test guest ($BUILD/shoal-guest), 1 vCPU, MEM of RAM
# (default 256M), command line "fill 0x2000000 FILL 7; shell" (FILL
# default 192M): FILL bytes of a seeded pattern, which the stream carries
# as data pages (zero pages would go as a flag and measure nothing).  The
# VM is booted once and then moves from VMM to VMM on 127.0.0.1: each
# sample starts a fresh destination (`shoal run ... --incoming
# tcp:127.0.0.1:PORT,key-file=KEY[,tls=on]`) and runs `shoal migrate
# --socket S tcp:127.0.0.1:PORT --key-file KEY [--tls] --output json`;
# total_ms and downtime_ms are the source VMM's own figures.  ROUNDS
# rounds (default 5), each variant once per round, the order alternated.
# At the end the guest verifies its pattern at its last VMM.
#
# Prints one line a sample, then the medians and the ratios TLS / plain.
# Inside the nested KVM box only the ratios mean anything.
#
#   BUILD=build-x bash bench/migrate_tls.sh [ROUNDS]
#   scripts/kvm-box.sh -q --cpus 1 -- env BUILD=$PWD/build-x bash bench/migrate_tls.sh
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.bash"
BUILD=${BUILD:-$ROOT/build}
ROUNDS=${1:-5}
[ -e /dev/kvm ] || bench_skip "no /dev/kvm"
[ -x "$BUILD/shoal" ] && [ -f "$BUILD/shoal-guest" ] || bench_skip "build Shoal first (make BUILD=$BUILD tests)"
TMP=$(mktemp -d /tmp/shoal-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

python3 - "$BUILD/shoal" "$BUILD/shoal-guest" "$TMP" "$ROUNDS" "${MEM:-256M}" "${FILL:-192M}" <<'PY'
import json, os, socket, statistics, subprocess, sys, time
shoal, guest, tmp, rounds, mem, fill = sys.argv[1:7]
rounds = int(rounds)
A = "0x2000000"
CMDLINE = f"fill {A} {fill} 7; shell"
KEY = os.path.join(tmp, "key")
with open(KEY, "wb") as f: f.write(os.urandom(32))
os.chmod(KEY, 0o600)
n = 0

def console(p):
    try:
        with open(p, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_for(pred, secs=120):
    end = time.time() + secs
    while time.time() < end:
        if pred(): return True
        time.sleep(0.02)
    return False

def vm(extra=()):
    global n
    n += 1
    sock, log, err = (os.path.join(tmp, f"vm{n}{x}") for x in (".sock", ".console", ".err"))
    p = subprocess.Popen([shoal, "run", "--kernel", guest, "--cmdline", CMDLINE, "--memory", mem,
                          "--console", "file:" + log, "--api-socket", sock, "--timeout", "900",
                          *extra], stdin=subprocess.DEVNULL, stderr=open(err, "w"))
    return p, sock, log, err

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    return port

src = vm()
if not wait_for(lambda: "shoal> " in console(src[2])):
    sys.exit("the guest did not fill its memory: " + console(src[3])[-300:])
res = {"plain": [], "tls": []}
for r in range(rounds):
    for variant in (("plain", "tls") if r % 2 == 0 else ("tls", "plain")):
        port = free_port()
        opt = ",tls=on" if variant == "tls" else ""
        dst = vm(("--incoming", f"tcp:127.0.0.1:{port},key-file={KEY}{opt}"))
        wait_for(lambda: "waiting on" in console(dst[3]) or dst[0].poll() is not None, 60)
        cmd = [shoal, "migrate", "--socket", src[1], f"tcp:127.0.0.1:{port}", "--key-file", KEY,
               "--output", "json"] + (["--tls"] if variant == "tls" else [])
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        try: info = json.loads(p.stdout)
        except ValueError: info = {}
        if p.returncode or info.get("state") != "done":
            sys.exit(f"{variant}: migration failed: {p.stderr} {console(dst[3])[-500:]}")
        src[0].wait(60)
        wait_for(lambda: os.path.exists(dst[1]), 60)
        mib = info["bytes"] / 1048576
        res[variant].append((info["total_ms"], info["downtime_ms"], mib))
        print(f"round {r} {variant:5s}: total {info['total_ms']:8.1f} ms, downtime "
              f"{info['downtime_ms']:6.1f} ms, {mib:.0f} MiB, "
              f"{mib / (info['total_ms'] / 1000):.0f} MiB/s", flush=True)
        src = dst

s = socket.socket(socket.AF_UNIX); s.connect(src[1]); f = s.makefile("rwb")
f.write(b'{"cmd": "console-attach", "force": true}\n'); f.flush(); f.readline()
for ch in f"verify {A} {fill} 7; exit 5\r".encode():
    s.sendall(bytes([ch])); time.sleep(0.002)
try: src[0].wait(120)
except subprocess.TimeoutExpired: src[0].kill(); src[0].wait()
s.close()
verified = src[0].returncode == 5 and "verify ok" in console(src[2])

med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v),
           statistics.median(x[2] for x in v)) for k, v in res.items()}
print(f"guest: {mem} RAM, {fill} filled; {rounds} rounds; memory verified at the end: "
      f"{'yes' if verified else 'NO'}")
for k in ("plain", "tls"):
    t, d, m = med[k]
    print(f"median {k:5s}: total {t:8.1f} ms, downtime {d:6.1f} ms, {m:.0f} MiB sent, "
          f"{m / (t / 1000):.0f} MiB/s")
print(f"ratio tls/plain: total {med['tls'][0] / med['plain'][0]:.2f}, downtime "
      f"{med['tls'][1] / med['plain'][1]:.2f}")
sys.exit(0 if verified else 1)
PY
