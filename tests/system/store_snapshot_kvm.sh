#!/bin/bash
# store_snapshot_kvm.sh - a snapshot that went through the image store runs
# (issue 14 item 6, docs/store.md "Snapshots in the store"): the test guest
# fills 16 MiB of memory and writes a sector pattern to its raw disk; a
# snapshot is taken and the original goes on and exits; the snapshot is
# imported into a store (import-snapshot) and exported to a new directory
# (export-snapshot); memory and state are byte-equal to the snapshot's,
# the disk equal to the parent's; an empty store pulls it from `shoal
# store serve` (pull-snapshot, granted) and exports it again; then the
# original snapshot and its disk are moved away, and `shoal run
# --restore` of the pulled export
# finds the memory pattern and the disk pattern of the snapshot instant
# (verify ok, vblk-verify ok) and exits with the code typed.  The
# host-only half (dedup, ls/rm/gc/verify, serve and pull) is
# store_snapshot.sh.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm "store_snapshot_kvm"

PYTHONPATH="$ROOT/tests/system" python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import filecmp, json, os, subprocess, sys, time
from vmtest import Test, finish, text as console, type_into, wait_text as wait_console
T = Test(*sys.argv[1:4])
shoal, guest, tmp, check = T.shoal, T.guest, T.tmp, T.check

A = "0x2000000"
def start(name, cmdline, extra=(), restore=None):
    sock = os.path.join(tmp, name + ".sock")
    log = os.path.join(tmp, name + ".console")
    if restore:
        args = [shoal, "run", "--restore", restore, *extra]
    else:
        args = [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", "64M", *extra]
    p = subprocess.Popen(args + ["--console", "file:" + log, "--api-socket", sock,
                                 "--timeout", "60"],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    return p, sock, log

def run_in(sock, p, text):
    """Type text into the VM; its exit status and stderr once it ends."""
    s = type_into(sock, text)
    rc = finish(p)
    s.close()
    return rc, p.stderr.read().decode(errors="replace")

def sh(*args):
    return subprocess.run([shoal, *args], capture_output=True, text=True, timeout=120)

disk = os.path.join(tmp, "disk.raw")
with open(disk, "wb") as f: f.truncate(4 << 20)
snap = os.path.join(tmp, "snap")
p, sock, log = start("orig", f"fill {A} 16M 7; vblk 64 7; shell", ("--disk", disk))
check("guest filled memory and wrote its disk pattern (seed 7)", wait_console(log, "shoal> "),
      console(log)[-300:])
r = sh("snapshot", "create", "--socket", sock, snap)
check("snapshot create", r.returncode == 0, r.stdout + r.stderr)
rc, err = run_in(sock, p, f"fill {A} 16M 9; vblk 64 9; exit 4\r")
check("the original went on (seed 9 over memory and disk) and exited 4", rc == 4, err[-400:])

st, out = os.path.join(tmp, "st"), os.path.join(tmp, "out")
r = sh("store", "init", st)
r2 = sh("store", "import-snapshot", st, snap, "--name", "vm1", "--output", "json")
info = json.loads(r2.stdout) if r2.returncode == 0 else {}
check("import-snapshot: the snapshot's files and its disk", r.returncode == 0 and
      info.get("files", 0) >= 3 and info.get("disks") == 1, r.stderr + r2.stdout + r2.stderr)
r = sh("store", "export-snapshot", st, "vm1", out)
check("export-snapshot", r.returncode == 0, r.stderr)
same = all(filecmp.cmp(os.path.join(snap, n), os.path.join(out, n), shallow=False)
           for n in ("memory", "state")) if r.returncode == 0 else False
check("exported memory and state are byte-equal to the snapshot's", same)
parent = json.load(open(os.path.join(snap, "manifest.json")))["disks"][0]["path"]
check("the exported disk is the parent's bytes (the snapshot instant)",
      r.returncode == 0 and filecmp.cmp(parent, os.path.join(out, "disk-0.raw"), shallow=False))

# The access host: pull it from `shoal store serve` (a grant for vm1) into
# an empty store and export that; this is the directory that runs.
def osl(cmd):
    return subprocess.run(cmd, shell=True, cwd=tmp, capture_output=True, executable="/bin/bash").returncode == 0
made = osl("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
           "-out ca.pem -days 2 -subj /CN=ca") and all(osl(
    f"openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {n}.key -out {n}.csr -subj /CN={n} && "
    f"openssl x509 -req -in {n}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {n}.pem -days 2 -extfile <(echo '{x}')")
    for n, x in (("server", "subjectAltName=IP:127.0.0.1"), ("host", "extendedKeyUsage=clientAuth")))
pulled = os.path.join(tmp, "pulled")
if made:
    sh("store", "grant", st, os.path.join(tmp, "host.pem"), "vm1")
    srv = subprocess.Popen([shoal, "store", "serve", st, "--listen", "127.0.0.1:0", "--cert",
                            os.path.join(tmp, "server.pem"), "--key", os.path.join(tmp, "server.key"),
                            "--client-ca", os.path.join(tmp, "ca.pem")], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    port = srv.stdout.readline().split("https://127.0.0.1:")[-1].split()[0].rstrip("/")
    st2 = os.path.join(tmp, "st2")
    sh("store", "init", st2)
    r = sh("store", "pull-snapshot", st2, "vm1", "--from", f"https://127.0.0.1:{port}",
           "--cert", os.path.join(tmp, "host.pem"), "--key", os.path.join(tmp, "host.key"),
           "--ca", os.path.join(tmp, "ca.pem"))
    srv.terminate(); srv.wait()
    r2 = sh("store", "export-snapshot", st2, "vm1", pulled)
    check("pull-snapshot from the served store (granted) and export it", r.returncode == 0 and r2.returncode == 0,
          r.stdout + r.stderr + r2.stderr)
    check("the pulled export's memory and state are the snapshot's", r2.returncode == 0 and
          all(filecmp.cmp(os.path.join(snap, n), os.path.join(pulled, n), shallow=False) for n in ("memory", "state")))
else:
    print("SKIP: pull: openssl could not make the certificates")
    pulled = out

# Only the exported directory is left to run from.
away = os.path.join(tmp, "away")
os.mkdir(away)
for n in os.listdir(tmp):
    if n.startswith("disk") or n == "snap":
        os.rename(os.path.join(tmp, n), os.path.join(away, n))
p, sock, log = start("restored", None, restore=pulled)
rc, err = run_in(sock, p, f"verify {A} 16M 7; vblk-verify 64 7; exit 6\r")
c = console(log)
check("shoal run --restore of the pulled, exported snapshot: the memory and disk of the snapshot instant "
      "(verify ok, vblk-verify ok), exit 6",
      rc == 6 and "verify ok" in c and "vblk-verify ok sectors=64 seed=7" in c and "verify bad" not in c,
      (rc, err[-600:], c[-400:]))
T.exit()
PY
T_FAILED=$?
finish
