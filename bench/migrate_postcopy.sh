#!/bin/bash
# bench/migrate_postcopy.sh - the downtime of a guest that outruns the
# stream: pre-copy (which cannot converge and pauses for whatever is left
# after its 30 rounds) against post-copy (`--postcopy-after 1`: it pauses
# only for the state, the missing pages follow), side by side in one run
# on the same workload (docs/migration.md "Post-copy").
#
# The guest is the test guest ($BUILD/shoal-guest), 1 vCPU, 128 MiB,
# command line "fill 0x2000000 16M 7; shell".  Each sample boots a fresh
# source and destination on this host (Unix socket), starts `shoal migrate
# --bandwidth 8M --downtime-ms 50 --output json [--postcopy-after 1]`,
# and once round 0 runs types "fill 0x4000000 16M 9; dirty 0 40
# 0x5000000 4M" into the guest: it rewrites 16 MiB once, then dirties
# 4 MiB as fast as its vCPU runs, far above 8 MiB/s, for 40 s.  downtime_ms
# and total_ms are the source VMM's own figures (pause to the
# destination's acknowledgement; for post-copy, total runs to the last
# page).  ROUNDS rounds (default 3), each variant once per round.
#
# Prints one line a sample, then the medians and the ratio post / pre.
# Inside the nested KVM box only the ratios mean anything.
#
#   scripts/kvm-box.sh -q --cpus 1 --timeout 900 -- env BUILD=$PWD/build-x bash bench/migrate_postcopy.sh 3
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.bash"
BUILD=${BUILD:-$ROOT/build}
ROUNDS=${1:-3}
[ -e /dev/kvm ] || bench_skip "no /dev/kvm"
[ -x "$BUILD/shoal" ] && [ -f "$BUILD/shoal-guest" ] || bench_skip "build Shoal first (make BUILD=$BUILD tests)"
TMP=$(mktemp -d /tmp/shoal-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

python3 - "$BUILD/shoal" "$BUILD/shoal-guest" "$TMP" "$ROUNDS" <<'PY'
import json, os, socket, statistics, subprocess, sys, time
shoal, guest, tmp, rounds = sys.argv[1:5]
A, B, C = "0x2000000", "0x4000000", "0x5000000"
CMDLINE = f"fill {A} 16M 7; shell"

def console(log):
    try:
        with open(log, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def vm(name, incoming=None):
    sock, log, err = (os.path.join(tmp, name + x) for x in (".sock", ".console", ".err"))
    args = [shoal, "run", "--kernel", guest, "--cmdline", CMDLINE, "--memory", "128M",
            "--console", "file:" + log, "--api-socket", sock, "--timeout", "120", "-v"]
    if incoming: args += ["--incoming", incoming]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=open(err, "w"))
    end = time.time() + 30
    while time.time() < end and p.poll() is None and not (
            "waiting on" in console(err) if incoming else "shoal> " in console(log)):
        time.sleep(0.02)
    return p, sock, log, err

def ctl(sock, obj):
    c = socket.socket(socket.AF_UNIX); c.settimeout(10); c.connect(sock)
    c.sendall((json.dumps(obj) + "\n").encode())
    line = c.makefile().readline(); c.close()
    return json.loads(line)

def sample(k, post):
    src = vm(f"s{k}")
    uri = "unix:" + os.path.join(tmp, f"in{k}.sock")
    dst = vm(f"d{k}", incoming=uri)
    m = subprocess.Popen([shoal, "migrate", "--socket", src[1], uri, "--bandwidth", "8M",
                          "--downtime-ms", "50", "--output", "json",
                          *(["--postcopy-after", "1"] if post else [])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 30
    while time.time() < end and m.poll() is None:
        try: st = ctl(src[1], {"cmd": "migrate-status"})
        except OSError: st = {}
        if st.get("state") == "active" and st.get("pages_sent", 0) > 0: break
        time.sleep(0.05)
    s = socket.socket(socket.AF_UNIX); s.connect(src[1])
    f = s.makefile("rwb")
    f.write(b'{"cmd": "console-attach", "force": true}\n'); f.flush(); f.readline()
    for ch in f"fill {B} 16M 9; dirty 0 40 {C} 4M\r".encode():
        s.sendall(bytes([ch])); time.sleep(0.002)
    out, err = m.communicate(timeout=300)
    s.close()
    for p in (src[0], dst[0]):
        p.kill(); p.wait()
    try: info = json.loads(out)
    except ValueError: info = {}
    if m.returncode != 0 or info.get("state") != "done":
        print(f"sample {k} ({'post' if post else 'pre'}): failed: {err.strip()[-300:]}")
        return None
    print(f"sample {k}: {'post-copy' if post else 'pre-copy '} downtime {info['downtime_ms']:.1f} ms, "
          f"total {info['total_ms']:.0f} ms, {info['round'] + 1} rounds, {info['bytes'] >> 20} MiB"
          + (f", {info['postcopy_pages']} pages after the switch ({info['postcopy_demand_pages']} "
             f"on demand)" if post else ""), flush=True)
    return info

res = {False: [], True: []}
k = 0
for r in range(int(rounds)):
    for post in ((False, True) if r % 2 == 0 else (True, False)):
        k += 1
        i = sample(k, post)
        if i: res[post].append(i)
def med(post, key):
    v = [i[key] for i in res[post]]
    return statistics.median(v) if v else 0
for key in ("downtime_ms", "total_ms"):
    a, b = med(False, key), med(True, key)
    print(f"{key}: pre-copy {a:.1f}, post-copy {b:.1f} (medians of {len(res[False])} and "
          f"{len(res[True])}); post / pre {b / a if a else 0:.3f}")
PY
