#!/bin/bash
# clone_identity.sh - a clone's new identity (docs/snapshots.md, "A clone's
# identity"): the test guest runs `vnet` (which reads its card's MAC from
# virtio-net config space and pings the TAP's address) on a TAP in a
# network namespace, with a vsock device, and waits at its shell; it is
# snapshotted; then, one after the other (one TAP):
#   - a plain --restore keeps the snapshot's MAC (the guest's vnet says it
#     again) and CID;
#   - two clones (--clone) each get a new locally administered unicast MAC
#     and a new vsock CID, all distinct (the control socket's config says
#     which), and each guest reads its new MAC from config space and pings
#     with it;
#   - --clone --mac M --cid N gives exactly those (the guest reads M);
#   - two clones at once: while clone A runs on the snapshot's TAP and vsock
#     socket, a second clone is refused (64) naming the TAP and --tap, then
#     (with --tap) naming the vsock socket and --vsock-socket; with --tap
#     ctap1 --vsock-socket V2 it runs beside A, each listening on its own
#     socket, and A still has its socket after B stops;
#   - refused with status 64: --mac, --cid or --tap without --restore, a
#     bad MAC, CID 2, more --mac or --tap than the snapshot's VM has cards.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm clone_identity
[ "$(id -u)" = 0 ] || { skip "clone identity" "needs root to make a network namespace and a TAP"; finish; }
command -v ip >/dev/null && [ -c /dev/net/tun ] || { skip "clone identity" "needs iproute2 and /dev/net/tun"; finish; }
NS=shoal-clid-$$
ip netns add "$NS" 2>"$TMP/ns.err" || { skip "clone identity" "cannot make a network namespace: $(cat "$TMP/ns.err")"; finish; }
trap 'ip netns del "$NS" 2>/dev/null; rm -rf "$TMP"' EXIT
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up
in_ns ip tuntap add dev ctap0 mode tap
in_ns ip addr add 10.0.2.2/24 dev ctap0
in_ns ip link set ctap0 up
in_ns ip tuntap add dev ctap1 mode tap     # a second clone's own TAP
in_ns ip link set ctap1 up

in_ns python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import json, os, re, socket, subprocess, sys, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

VS = os.path.join(tmp, "v.sock")
def start(name, args):
    sock = os.path.join(tmp, name + ".sock"); log = os.path.join(tmp, name + ".console")
    p = subprocess.Popen([shoal, "run", *args, "--console", "file:" + log, "--api-socket", sock,
                          "--timeout", "120"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    return p, sock, log

def console(log):
    try:
        with open(log, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_console(log, pattern, secs=60):
    end = time.time() + secs
    while time.time() < end:
        m = re.findall(pattern, console(log))
        if m: return m
        time.sleep(0.1)
    return []

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

def finish(p, secs=90):
    try: p.wait(timeout=secs)
    except subprocess.TimeoutExpired: p.kill(); p.wait()
    return p.returncode, p.stderr.read().decode(errors="replace")

VNET = r"vnet ok mode=\S+ mac=([0-9a-f:]{17}) gw_mac=\S+ arp=1 ping=1"

# ---- the original and its snapshot ----
p, sock, log = start("orig", ["--kernel", guest, "--memory", "64M", "--cmdline", "vnet; shell",
                              "--net", "tap=ctap0", "--vsock", f"cid=7,socket={VS}"])
macs = wait_console(log, VNET)
check("the original pinged through its TAP", macs, console(log)[-300:])
orig_mac = macs[0] if macs else "?"
wait_console(log, r"shoal> ")
snap = os.path.join(tmp, "snap")
r = subprocess.run([shoal, "snapshot", "create", "--socket", sock, snap], capture_output=True, text=True)
check("snapshot create", r.returncode == 0, r.stdout + r.stderr)
type_into(sock, "exit 0\r")
finish(p)

def restored(name, extra, code):
    """Run a restore, read its config, have its guest run vnet and exit."""
    p, sock, log = start(name, ["--restore", snap, *extra])
    st = ctl(sock, {"cmd": "status"}) if os.path.exists(sock) else {}
    cfg = st.get("config", {})
    type_into(sock, f"vnet; exit {code}\r") if os.path.exists(sock) else None
    rc, err = finish(p)
    got = re.findall(VNET, console(log))
    mac = (cfg.get("nets") or [{}])[0].get("mac")
    cid = (cfg.get("vsock") or {}).get("cid")
    return rc, err, mac, cid, got

rc, err, mac, cid, got = restored("plain", [], 3)
check("a plain restore ran and exited 3", rc == 3, (rc, err[-300:]))
check("a plain restore keeps the snapshot's MAC (the guest reads it) and CID 7",
      got == [orig_mac] and mac in (None, orig_mac) and cid == 7, (got, orig_mac, mac, cid))

clones = []
for i in range(2):
    rc, err, mac, cid, got = restored(f"clone{i}", ["--clone"], 4 + i)
    clones.append((mac, cid))
    check(f"clone {i} ran and exited {4 + i}", rc == 4 + i, (rc, err[-300:]))
    check(f"clone {i}: a new MAC, unicast and locally administered, not the snapshot's",
          mac and mac != orig_mac and int(mac[:2], 16) & 3 == 2, (mac, orig_mac))
    check(f"clone {i}: its guest reads that MAC from config space and pings with it",
          got == [mac], (got, mac))
    check(f"clone {i}: a new vsock CID (3 or more), not the snapshot's 7",
          isinstance(cid, int) and cid >= 3 and cid != 7, cid)
check("the two clones' MACs and CIDs differ", clones[0][0] != clones[1][0] and clones[0][1] != clones[1][1],
      clones)

rc, err, mac, cid, got = restored("given", ["--clone", "--mac", "52:54:00:aa:bb:01", "--cid", "42"], 6)
check("--clone --mac M --cid N: exactly those, and the guest reads M",
      rc == 6 and mac == "52:54:00:aa:bb:01" and cid == 42 and got == ["52:54:00:aa:bb:01"],
      (rc, mac, cid, got, err[-300:]))

# ---- two clones at once: each its own TAP and vsock socket ----
def listened(path):
    c = socket.socket(socket.AF_UNIX)
    try: c.connect(path); return True
    except OSError: return False
    finally: c.close()

pa, socka, loga = start("clone-a", ["--restore", snap, "--clone"])
check("clone A runs on the snapshot's TAP and vsock socket", pa.poll() is None and listened(VS),
      pa.poll())
def second(args):
    r = subprocess.run([shoal, "run", "--restore", snap, "--clone", *args, "--console", "none",
                        "--timeout", "60"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stderr.strip()
rc, err = second([])
check("a second clone on the same TAP is refused (64), naming it and --tap",
      rc == 64 and f"{snap}: the snapshot's TAP ctap0 (card 0) is in use by another VM; "
      "give this clone its own with --tap NAME" in err, (rc, err[-300:]))
rc, err = second(["--tap", "ctap1"])
check("... with its own TAP, the same vsock socket is refused (64), naming it and --vsock-socket",
      rc == 64 and f"{snap}: the snapshot's vsock socket {VS} is in use by another VM; "
      "give this clone its own with --vsock-socket PATH" in err, (rc, err[-300:]))
rc, err = second(["--tap", "ctap1", "--vsock-socket", VS])
check("... and --vsock-socket naming the path in use is refused too", rc == 64 and
      f"--vsock-socket {VS} is in use by another VM" in err, (rc, err[-300:]))
VS2 = os.path.join(tmp, "v2.sock")
pb, sockb, logb = start("clone-b", ["--restore", snap, "--clone", "--tap", "ctap1",
                                    "--vsock-socket", VS2])
check("clone B with --tap ctap1 --vsock-socket: both run at once, each listening on its own socket",
      pa.poll() is None and pb.poll() is None and listened(VS) and listened(VS2),
      (pa.poll(), pb.poll()))
stb = ctl(sockb, {"cmd": "status"}) if os.path.exists(sockb) else {}
cfgb = stb.get("config", {})
check("clone B's config names its own TAP and socket",
      (cfgb.get("nets") or [{}])[0].get("tap") == "ctap1" and
      (cfgb.get("vsock") or {}).get("socket") == VS2, cfgb)
type_into(sockb, "exit 8\r")
rc, err = finish(pb)
check("clone B exited 8", rc == 8, (rc, err[-300:]))
check("clone A still listens on the snapshot's vsock socket after B stopped", listened(VS) and
      pa.poll() is None, pa.poll())
type_into(socka, "exit 9\r")
rc, err = finish(pa)
check("clone A exited 9", rc == 9, (rc, err[-300:]))

def refused(name, args, msg):
    r = subprocess.run([shoal, "run", *args], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    check(name, r.returncode == 64 and msg in r.stderr, (r.returncode, r.stderr[-300:]))
refused("--mac without --restore is refused", ["--kernel", guest, "--mac", "52:54:00:aa:bb:02"],
        "--mac goes with --restore DIR")
refused("--cid without --restore is refused", ["--kernel", guest, "--cid", "9"],
        "--cid goes with --restore DIR")
refused("a multicast MAC is refused", ["--restore", snap, "--mac", "01:00:5e:00:00:01"],
        "'01:00:5e:00:00:01' is not a unicast MAC address")
refused("CID 2 (the host's) is refused", ["--restore", snap, "--cid", "2"], "--cid: 2 is reserved")
refused("more --mac than the VM has cards is refused",
        ["--restore", snap, "--mac", "52:54:00:aa:bb:03", "--mac", "52:54:00:aa:bb:04"],
        "--mac: 2 given, but the snapshot's VM has 1 network card")
refused("--tap without --restore is refused", ["--kernel", guest, "--tap", "ctap1"],
        "--tap goes with --restore DIR")
refused("more --tap than the VM has cards is refused",
        ["--restore", snap, "--tap", "ctap1", "--tap", "ctap2"],
        "--tap: 2 given, but the snapshot's VM has 1 network card")
sys.exit(0 if ok else 1)
PY
[ $? -eq 0 ] || T_FAILED=1
finish
