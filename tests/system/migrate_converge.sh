#!/bin/bash
# migrate_converge.sh - auto-converge (`shoal migrate --auto-converge`,
# docs/migration.md): a guest that dirties memory as fast as its vCPU runs
# migrates under a --bandwidth a twentieth of that rate, seccomp on.  The
# workload is the test guest's `fill` over one 32 MiB range, again and
# again (lines of 20 fills typed one after another while it migrates): its
# rate is bound by the CPU, so a throttled vCPU dirties less (the `dirty`
# command would not do: it sweeps its range thousands of times a second,
# or paces itself by the clock and catches up after a sleep).  The rate is
# measured first, from the time 20 fills take.
#   - without auto-converge the vCPUs are never throttled (its rounds and
#     downtime are printed as figures; with the default 300 ms limit it
#     ran all 30 rounds, 90 s in a box, and paused for 3 s, so this case
#     gets a limit that the 32 MiB working set fits at the bandwidth);
#   - with it, migrate-status shows the vCPUs throttled while it runs (20 %
#     first) and it converges before the 30-round cap; the downtime is a
#     figure, not checked (no timing thresholds in tests); the destination
#     runs, unthrottled.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm migrate_converge

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import json, os, re, socket, subprocess, sys, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

B, MEM, LIMIT_MS = "0x4000000", "128M", 300
SECCOMP = ("--seccomp", "on")

def console(log):
    try:
        with open(log, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_console(log, text, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if text in console(log): return True
        time.sleep(0.05)
    return False

def vm(name, incoming=None):
    sock, log, err = (os.path.join(tmp, name + x) for x in (".sock", ".console", ".err"))
    args = [shoal, "run", "--kernel", guest, "--cmdline", "shell", "--memory", MEM,
            "--console", "file:" + log, "--api-socket", sock, "--timeout", "300", "-v", *SECCOMP]
    if incoming: args += ["--incoming", incoming]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=open(err, "w"))
    end = time.time() + 30
    while time.time() < end and p.poll() is None and not (
            "waiting on" in console(err) if incoming else os.path.exists(sock)):
        time.sleep(0.02)
    return p, sock, log, err

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

def finish(p, secs=60):
    try: p.wait(timeout=secs)
    except subprocess.TimeoutExpired: p.kill(); p.wait()
    return p.returncode

import threading

def line(k):
    return "; ".join(f"fill {B} 32M {k * 20 + i + 1}" for i in range(20)) + "\r"

def feeder(s, log, stop):                 # a new line of fills as each ends
    k = 0
    while not stop.is_set():
        n = console(log).count("shoal> ")
        try: s.sendall(line(k).encode())
        except OSError: return
        k += 1
        while not stop.is_set() and console(log).count("shoal> ") <= n:
            time.sleep(0.02)

bw = None
for case in ("off", "on"):
    src = vm("s-" + case)
    check(f"{case}: the source guest is up", wait_console(src[2], "shoal> "), console(src[3])[-300:])
    s = type_into(src[1], "")
    if bw is None:                       # the guest's own fill rate, unthrottled
        n = console(src[2]).count("shoal> ")
        t = time.time()
        s.sendall(line(100).encode())
        while console(src[2]).count("shoal> ") <= n and time.time() - t < 120:
            time.sleep(0.005)
        rate = int(20 * (32 << 20) / (time.time() - t))
        bw = max(1 << 20, rate // 20)
        print(f"note: the guest fills {rate >> 20} MiB/s unthrottled; --bandwidth {bw >> 20} MiB/s")
        check("the guest measured its fill rate", rate > 0, console(src[2])[-300:])
    stop = threading.Event()
    th = threading.Thread(target=feeder, args=(s, src[2], stop), daemon=True)
    th.start()
    time.sleep(0.5)
    uri = "unix:" + os.path.join(tmp, "in-" + case + ".sock")
    dst = vm("d-" + case, incoming=uri)
    # Without auto-converge the rounds never get under the default 300 ms
    # limit: they would run to the cap of 30 (90 s in a box) and stop with
    # a pause of seconds.  A limit that fits the guest's 32 MiB working set
    # at the bandwidth ends it in a few rounds; what "off" checks (no
    # throttle, ever) does not depend on how long it runs.
    extra = ["--auto-converge"] if case == "on" else ["--downtime-ms", str(max(300, (40 << 20) * 1000 // bw))]
    m = subprocess.Popen([shoal, "migrate", "--socket", src[1], uri, "--bandwidth", str(bw),
                          "--output", "json", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, rates = set(), []
    while m.poll() is None:
        try: st = ctl(src[1], {"cmd": "migrate-status"})
        except OSError: break
        if st.get("throttle_pct"): seen.add(st["throttle_pct"])
        if st.get("state") in ("active", "completing") and st.get("round", 0) > 0:
            rates.append(st.get("dirty_rate", 0))   # round 0's rate on from round 1
        time.sleep(0.05)
    out, err = m.communicate(timeout=300)
    stop.set(); th.join(5)
    s.close()
    try: info = json.loads(out)
    except ValueError: info = {}
    rounds, down = info.get("round", 0) + 1, info.get("downtime_ms", 0)
    print(f"note: auto-converge {case}: {rounds} rounds, downtime {down:.1f} ms, total "
          f"{info.get('total_ms', 0):.0f} ms, {info.get('bytes', 0) >> 20} MiB sent, throttle up "
          f"to {info.get('throttle_max_pct', 0)} % (seen in migrate-status: {sorted(seen)})")
    check(f"{case}: migrated (status 0)", m.returncode == 0 and info.get("state") == "done",
          (m.returncode, out, err))
    # the guest rewrites its 32 MiB range the whole time: each round's rate
    # is above 0 (the rate of distinct pages dirtied, not of the writes)
    # (the last round's, in the result too: "off" may end before a poll sees
    # round 1, since the event loop that answers is held in the stop phase)
    rates.append(info.get("dirty_rate", 0))
    check(f"{case}: migrate-status reports the rate the guest dirties memory at",
          min(rates) > 0, rates[-5:])
    print(f"note: {case}: dirty_rate in migrate-status, at most {max(rates) >> 20} MiB/s")
    if case == "off":
        # how many rounds it ran and the downtime are figures (the note above),
        # not checked: they depend on the machine's speed
        check("off: without auto-converge the vCPUs are never throttled",
              not seen and info.get("throttle_max_pct") == 0 and info.get("auto_converge") is not True,
              info)
    else:
        check("on: migrate-status showed the vCPUs throttled, 20 % first",
              20 in seen and info.get("auto_converge") is True, (seen, info))
        check("on: it converged before the round cap (fewer than 30 rounds; the downtime is "
              "a figure, above)", rounds < 30, info)
    rc = finish(src[0])
    check(f"{case}: the source exited 0", rc == 0, (rc, console(src[3])[-300:]))
    ready = False
    end = time.time() + 30
    while time.time() < end and not ready and dst[0].poll() is None:
        ready = os.path.exists(dst[1]); time.sleep(0.05)
    st = ctl(dst[1], {"cmd": "migrate-status"}) if ready else {}
    check(f"{case}: the destination runs, unthrottled", ready and st.get("throttle_pct") == 0,
          (st, console(dst[3])[-300:]))
    dst[0].terminate(); finish(dst[0])
sys.exit(0 if ok else 1)
PY
