#!/bin/bash
# bench/store_snapshot.sh - snapshots of one template in the image store
# (issue 14 item 6, docs/store.md "Snapshots in the store"): how many bytes
# N clones' snapshots take in a store against their raw size, and what a
# pull of the second costs once the first is there.
#
# The test guest (128 MiB) fills 48 MiB with a pattern and is snapshotted
# (the template); N clones are restored from it (--clone), each writes
# 4 MiB of its own (another seed) and is snapshotted.  The N clone
# snapshots go into one store (import-snapshot); then, over `shoal store
# serve` on loopback with mutual TLS, an empty store pulls clone 1, then
# clone 2 (pull-snapshot), timed.  Prints figures, checks nothing.  Needs
# KVM (run it in the box) and openssl.
#
#   scripts/kvm-box.sh -q --cpus 1 -- env BUILD=$PWD/build bash bench/store_snapshot.sh [N]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
N=${1:-5}
TMP=$(mktemp -d /tmp/shoal-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
PYTHONPATH="$ROOT/tests/system" python3 - "$BUILD/shoal" "$BUILD/shoal-guest" "$TMP" "$N" <<'PY'
import json, os, subprocess, sys, time
import vmtest
from vmtest import text as console, type_into
shoal, guest, tmp, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
A, B = "0x2000000", "0x5800000"

def start(name, cmdline=None, restore=None):
    sock, log = os.path.join(tmp, name + ".sock"), os.path.join(tmp, name + ".console")
    args = ([shoal, "run", "--restore", restore, "--clone"] if restore else
            [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", "128M"])
    p = subprocess.Popen(args + ["--console", "file:" + log, "--api-socket", sock, "--timeout", "120"],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    return p, sock, log

def wait_for(log, text, count=1, secs=60):
    if not vmtest.wait_for(lambda: console(log).count(text) >= count, secs):
        sys.exit(f"no '{text}' on {log}: {console(log)[-300:]}")
    return True

def run(*args):
    r = subprocess.run([shoal, *args], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"shoal {' '.join(args)}: {r.stderr}")
    return r.stdout

def snap(sock, d):
    run("snapshot", "create", "--socket", sock, d)

def stop(p, sock):
    s = type_into(sock, "exit 0\r")
    p.wait(timeout=60); s.close()

def sizes(d):
    app = alloc = 0
    for f in os.listdir(d):
        st = os.stat(os.path.join(d, f))
        app += st.st_size; alloc += st.st_blocks * 512
    return app, alloc

p, sock, log = start("tmpl", f"fill {A} 48M 7; shell")
wait_for(log, "shoal> ")
snap(sock, os.path.join(tmp, "tmpl")); stop(p, sock)
for i in range(1, n + 1):
    p, sock, log = start(f"c{i}", restore=os.path.join(tmp, "tmpl"))
    time.sleep(0.2)
    s = type_into(sock, f"fill {B} 4M {10 + i}; echo wrote{i}\r")
    wait_for(log, f"wrote{i}", 2)
    s.close()
    snap(sock, os.path.join(tmp, f"c{i}")); stop(p, sock)

st = os.path.join(tmp, "st")
run("store", "init", st)
app = alloc = 0
rows = []
t0 = time.time()
for i in range(1, n + 1):
    a, b = sizes(os.path.join(tmp, f"c{i}"))
    app += a; alloc += b
    t = time.time()
    j = json.loads(run("store", "import-snapshot", st, os.path.join(tmp, f"c{i}"), "--name", f"c{i}", "--output", "json"))
    rows.append((f"c{i}", a, b, j["new_bytes"], j["stored_bytes"], time.time() - t))
total_import = time.time() - t0
du = json.loads(run("store", "du", st, "--output", "json"))
print(f"{n} clone snapshots of one 128 MiB template (48 MiB filled, 4 MiB each of their own)")
print("| snapshot | apparent bytes | allocated bytes | new bytes | stored (zstd) | import s |")
print("|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.2f} |")
print(f"all {n}: apparent {app}, allocated {alloc}, store segments {du['segment_bytes']} "
      f"({alloc / du['segment_bytes']:.1f}x less than allocated), imports {total_import:.1f} s")

# ---- pull over the image server ----
os.chdir(tmp)
def sh(cmd): subprocess.run(cmd, shell=True, check=True, capture_output=True, executable="/bin/bash")
sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ca")
for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("c1", "extendedKeyUsage=clientAuth")):
    sh(f"openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}")
    sh(f"openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile <(echo '{ext}')")
for i in (1, 2):
    run("store", "grant", st, "c1.pem", f"c{i}")
srv = subprocess.Popen([shoal, "store", "serve", st, "--listen", "127.0.0.1:0", "--cert", "server.pem",
                        "--key", "server.key", "--client-ca", "ca.pem"], stdout=subprocess.PIPE, text=True)
line = srv.stdout.readline()
port = line.split("https://127.0.0.1:")[1].split()[0].rstrip("/")
st2 = os.path.join(tmp, "st2")
run("store", "init", st2)
print("| pull into an empty store | s | chunks fetched | bytes fetched | of bytes |")
print("|---|---|---|---|---|")
for i in (1, 2):
    t = time.time()
    j = json.loads(run("store", "pull-snapshot", st2, f"c{i}", "--from", f"https://127.0.0.1:{port}",
                       "--cert", "c1.pem", "--key", "c1.key", "--ca", "ca.pem", "--output", "json"))
    print(f"| c{i}{' (c1 there)' if i == 2 else ''} | {time.time() - t:.2f} | {j['fetched']} | "
          f"{j['fetched_bytes']} | {j['size']} |")
srv.terminate(); srv.wait()
PY
