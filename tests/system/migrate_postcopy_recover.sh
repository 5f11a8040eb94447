#!/bin/bash
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
# migrate_postcopy_recover.sh - recovery of a post-copy whose connection
# dropped (docs/migration.md "Post-copy", QEMU's postcopy-recover), seccomp
# on at both ends, with the test guest and a key (the recovery's new
# connection goes through the same key handshake as the first).  The
# stream goes through a relay process between source and destination;
# killing it cuts the connection.
#   - `shoal migrate --resume` with no post-copy paused is refused, saying
#     so (70), and the VM runs on;
#   - a guest that fills a 16 MiB pattern during round 0 and then dirties
#     8 MiB migrates with --postcopy-after 1 under a --bandwidth it
#     outruns; once in post-copy the relay is killed: `shoal migrate`
#     fails (70) saying the VM waits and to resume, the source's
#     migrate-status says postcopy-paused with its VM paused, and the
#     destination runs on, saying it waits for the source;
#   - a resume through a fresh relay that is itself killed once pages flow
#     again: both ends go back to waiting (the resume fails, 70; the
#     status is postcopy-paused again; the destination still runs);
#   - a resume through a third relay completes: `shoal migrate --resume`
#     exits 0 with state done, the source exits 0, the destination says
#     the source reconnected and every missing page arrived, and its guest
#     verifies both patterns (nothing lost) and, told to once the
#     migration is done, exits 5;
#   - every page arrives but a drop loses the destination's last word
#     (SHOALFIN; the relay cuts there): `shoal migrate` fails (70) saying
#     every page was sent, the source waits in postcopy-paused, the
#     destination runs on and keeps listening; a resume through a fresh
#     relay hears it (0, done), the source exits 0, the guest verifies
#     both patterns at the destination;
#   - the source's go-ahead after the switch (SHOALRUN) lost: `shoal
#     migrate` fails (70), the source waits in postcopy-paused, the
#     destination says so and holds its VM paused, never run (an
#     operator's resume is refused), waiting for the source as after a
#     drop; the resume completes (0, done) and runs it, its guest verifies
#     both patterns;
#   - the destination's acknowledgement of the switch (SHOALACK) lost:
#     `shoal migrate` fails (70) and the source's VM runs on; the
#     destination holds its copy, never run, and with recover-timeout=4
#     stops (70) saying so; the source's guest verifies both patterns;
#   - the same over TLS 1.3 (--tls, tls=on): a drop, a resume with --tls
#     through a fresh relay, and the guest verifies both patterns;
#   - without a resume, a destination started with recover-timeout=2 gives
#     up after it: it exits 70 naming the timeout and the pages missing.
#
. "$(dirname "$0")/lib.sh"
require_kvm migrate_postcopy_recover

PYTHONPATH="$ROOT/tests/system" python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import atexit, json, os, socket, subprocess, sys, time
from vmtest import Test, ctl, finish, type_into, wait_for, wait_migrating, text as console, \
    wait_text as wait_console
T = Test(*sys.argv[1:4])
shoal, guest, tmp, check = T.shoal, T.guest, T.tmp, T.check

A, B, C = "0x2000000", "0x4000000", "0x5000000"   # boot pattern, round-0 pattern, dirtied
MEM, BW = "128M", "8M"
CMDLINE = f"fill {A} 16M 7; shell"
procs = []
TLS = False                                   # the "tls" case sets it

@atexit.register
def cleanup():
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()

KEY = os.path.join(tmp, "mig.key")
with open(os.open(KEY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
    f.write(os.urandom(32))

def relay(name, target, *cut):
    """A relay from unix:tmp/NAME to the unix socket target (vmtest's
    RELAY; cut: its direction and word, to cut the connection there)."""
    return T.relay(name, target, cut)

def vm(name, incoming=None):
    v = T.start(name, CMDLINE, memory=MEM, incoming=incoming, timeout=150,
                extra=() if incoming else ("-v",))
    return v.p, v.sock, v.log, v.err

def migrate(sock, uri, *extra):
    p = subprocess.Popen([shoal, "migrate", "--socket", sock, uri, "--key-file", KEY,
                          "--output", "json", *extra, *(("--tls",) if TLS else ())],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p

def status(sock):
    return ctl(sock, {"cmd": "migrate-status"})

def wait_state(sock, want, secs=60, p=None):
    end, st = time.time() + secs, {}
    while time.time() < end:
        st = status(sock)
        if st.get("state") == want or (p is not None and p.poll() is not None and
                                       st.get("state") != "postcopy"):
            break
        time.sleep(0.02)
    return st

def start(case, tail, incoming_opts="", secs=12, mode=()):
    """A source whose guest fills B once round 0 runs, then dirties C for
    secs; a destination; a relay; the migration.  Returns (src, dst, relay,
    m).  The dirtying must outlast rounds 0 and 1, or the migration
    converges before post-copy: at 6 s, in a box slowed by another beside
    it, the "held" case once completed as a pre-copy (2026-12-07)."""
    src = vm("s-" + case)
    check(f"{case}: the source guest filled its pattern", wait_console(src[2], "shoal> "),
          console(src[3])[-300:])
    inp = os.path.join(tmp, "in-" + case + ".sock")
    dst = vm("d-" + case, incoming=f"unix:{inp},key-file={KEY}{incoming_opts}")
    r, uri = relay("r1-" + case, inp, *mode)
    m = migrate(src[1], uri, "--bandwidth", BW, "--postcopy-after", "1")
    wait_migrating(src[1], m)             # round 0 under way: tracking is on
    s = type_into(src[1], f"fill {B} 16M 9; dirty 0 {secs} {C} 8M; {tail}\r")
    s.close()
    return src, dst, r, m, inp

# ---- a resume with nothing paused is refused ----
src = vm("idle")
check("idle: the guest booted", wait_console(src[2], "shoal> "), console(src[3])[-300:])
lsn = socket.socket(socket.AF_UNIX)           # something to connect to
lsn.bind(os.path.join(tmp, "nobody.sock")); lsn.listen(1)
p = subprocess.run([shoal, "migrate", "--socket", src[1], "--resume",
                    "unix:" + os.path.join(tmp, "nobody.sock")],
                   capture_output=True, text=True, timeout=60)
lsn.close()
check("idle: --resume with no post-copy paused is refused (70), saying nothing is paused",
      p.returncode == 70 and "no post-copy migration is paused" in p.stderr, (p.returncode, p.stderr))
check("idle: the VM runs on", ctl(src[1], {"cmd": "status"}).get("state") == "running",
      console(src[3])[-300:])
src[0].kill(); src[0].wait()

# ---- post-copy, the connection cut, two resumes: nothing lost ----
# (the guest verifies while pages still come, and exits only once the
# migration is done: an exit before the last unneeded page arrived would
# end the destination with pages missing)
src, dst, r1, m, inp = start("rc", f"verify {B} 16M 9; verify {A} 16M 7")
st = wait_state(src[1], "postcopy", 60, m)
check("rc: the migration reached post-copy", st.get("state") == "postcopy", (st, m.poll()))
r1.kill(); r1.wait()                          # the connection drops
out, err = m.communicate(timeout=60)
check("rc: shoal migrate fails (70) saying the VM waits there and to resume",
      m.returncode == 70 and "not yet sent" in err and "--resume" in err and "paused" in err,
      (m.returncode, err))
st = wait_state(src[1], "postcopy-paused", 30)
check("rc: the source says postcopy-paused, its VM paused",
      st.get("state") == "postcopy-paused" and
      ctl(src[1], {"cmd": "status"}).get("state") == "paused", (st, console(src[3])[-400:]))
check("rc: the destination runs on, waiting for the source",
      wait_console(dst[3], "waiting up to", 30) and dst[0].poll() is None, console(dst[3])[-600:])

# a resume whose connection drops too, once pages flow again
before = st.get("postcopy_demand_pages", 0) + st.get("postcopy_pushed_pages", 0)
r2, uri2 = relay("r2-rc", inp)
m2 = migrate(src[1], uri2, "--resume")
end, flowed = time.time() + 30, False
while time.time() < end and m2.poll() is None:
    st = status(src[1])
    if st.get("postcopy_demand_pages", 0) + st.get("postcopy_pushed_pages", 0) > before:
        flowed = True
        break
    time.sleep(0.01)
r2.kill(); r2.wait()
out2, err2 = m2.communicate(timeout=60)
st = wait_state(src[1], "postcopy-paused", 30)
check("rc: the first resume sent pages again before its relay was cut", flowed,
      (st, m2.returncode, err2))
check("rc: a drop during the recovery goes back to waiting: the resume fails (70), the "
      "source is postcopy-paused, the destination runs on",
      m2.returncode == 70 and st.get("state") == "postcopy-paused" and dst[0].poll() is None,
      (m2.returncode, err2, st, console(dst[3])[-600:]))

# the second resume completes
r3, uri3 = relay("r3-rc", inp)
m3 = migrate(src[1], uri3, "--resume")
out3, err3 = m3.communicate(timeout=120)
try: info = json.loads(out3)
except ValueError: info = {}
print(f"note: post-copy recovered: {info.get('postcopy_pages', -1)} pages missing at the "
      f"switch, {info.get('postcopy_demand_pages', -1)} sent on demand, "
      f"{info.get('postcopy_pushed_pages', -1)} pushed (pages in flight at a drop go again)")
check("rc: shoal migrate --resume completes the migration (0, done, post-copy)",
      m3.returncode == 0 and info.get("state") == "done" and info.get("postcopy") is True,
      (m3.returncode, out3, err3))
rc = finish(src[0])
check("rc: the source exited 0 saying the VM migrated", rc == 0 and
      "migrated" in console(src[3]), (rc, console(src[3])[-400:]))
wait_for(lambda: console(dst[2]).count("verify ok") >= 2, 60, 0.05)
type_into(dst[1], "exit 5\r").close()
rc = finish(dst[0], 90)
out = console(dst[2])
check("rc: at the destination the guest verified both patterns (nothing lost) and exited 5",
      rc == 5 and out.count("verify ok") == 2 and "verify bad" not in out,
      (rc, out[-400:], console(dst[3])[-800:]))
log = console(dst[3])
check("rc: the destination took the source back twice and got every missing page",
      "reconnected (recovery 2)" in log and "post-copy done" in log and
      "2 recoveries" in log, log[-800:])
check("rc: the destination removed its listening socket at the end", not os.path.exists(inp))
r3.kill(); r3.wait()

# ---- every page arrived, but the destination's last word (SHOALFIN) is
# lost in a drop: the destination, whose VM has every page, runs on and
# listens on; the source waits in postcopy-paused; a resume hears it ----
src, dst, r1, m, inp = start("fin", "echo dirtied", mode=("back", "SHOALFIN"))
out, err = m.communicate(timeout=120)
r1.wait()
st = wait_state(src[1], "postcopy-paused", 30)
check("fin: with SHOALFIN lost, shoal migrate fails (70) saying every page was sent, and the "
      "source waits in postcopy-paused",
      m.returncode == 70 and "every page was sent" in err and
      st.get("state") == "postcopy-paused", (m.returncode, err, st))
check("fin: the destination runs on and listens for the source to hear its last word",
      wait_console(dst[3], "did not confirm our last word", 30) and dst[0].poll() is None and
      os.path.exists(inp), console(dst[3])[-600:])
r2, uri2 = relay("r2-fin", inp)
m2 = migrate(src[1], uri2, "--resume")
out2, err2 = m2.communicate(timeout=60)
try: info = json.loads(out2)
except ValueError: info = {}
check("fin: the resume hears it: shoal migrate --resume completes (0, done), the source "
      "exits 0", m2.returncode == 0 and info.get("state") == "done" and finish(src[0]) == 0,
      (m2.returncode, out2, err2, console(src[3])[-400:]))
s = type_into(dst[1], f"verify {B} 16M 9; verify {A} 16M 7; exit 5\r")
s.close()
rc = finish(dst[0], 90)
out = console(dst[2])
check("fin: the guest verified both patterns at the destination and exited 5; the listening "
      "socket is gone", rc == 5 and out.count("verify ok") == 2 and not os.path.exists(inp),
      (rc, out[-400:], console(dst[3])[-800:]))
r2.kill(); r2.wait()

# ---- the source's go-ahead after the switch (SHOALRUN) lost: the
# destination holds the VM paused, never run, and waits for the source as
# after a drop; the source, past the switch, comes back for its recovery,
# which runs it ----
src, dst, r1, m, inp = start("held", "echo dirtied", mode=("fwd", "SHOALRUN"))
out, err = m.communicate(timeout=120)
st = wait_state(src[1], "postcopy-paused", 30)
check("held: with the go-ahead lost the source is past the switch: shoal migrate fails (70), "
      "the source waits in postcopy-paused", m.returncode == 70 and
      st.get("state") == "postcopy-paused", (m.returncode, err, st))
check("held: the destination says the go-ahead did not come and holds the VM, never run, "
      "until the source reconnects",
      wait_console(dst[3], "waiting up to", 30) and "go-ahead did not come" in console(dst[3])
      and "held paused, never run here" in console(dst[3]), console(dst[3])[-600:])
ds, dm = ctl(dst[1], {"cmd": "status"}), status(dst[1])
check("held: the destination's VM is paused, migrate-status says incoming_postcopy_held",
      ds.get("state") == "paused" and dm.get("incoming_postcopy_held") is True and
      dm.get("incoming_in_doubt") is True, (ds, dm))
r = ctl(dst[1], {"cmd": "resume"})
check("held: the operator's resume is refused: the source's recovery runs it",
      r.get("ok") is False and "waits, never run here, for the source to reconnect" in
      r.get("error", ""), r)
r2, uri2 = relay("r2-held", inp)
m2 = migrate(src[1], uri2, "--resume")
out2, err2 = m2.communicate(timeout=120)
check("held: the resume completes (0, done), the source exits 0, the destination runs",
      m2.returncode == 0 and finish(src[0]) == 0 and
      ctl(dst[1], {"cmd": "status"}).get("state") == "running" and
      "the held VM runs here now" in console(dst[3]), (m2.returncode, err2,
      console(dst[3])[-600:]))
s2 = type_into(dst[1], f"verify {B} 16M 9; verify {A} 16M 7; exit 5\r")
s2.close()
rc = finish(dst[0], 90)
check("held: the guest verified both patterns there and exited 5",
      rc == 5 and console(dst[2]).count("verify ok") == 2, (rc, console(dst[3])[-400:]))

# ---- the destination's acknowledgement of the switch (SHOALACK) lost:
# the source never hears it and runs on; the destination holds its copy,
# never run, and stops after its recover-timeout (no two copies run) ----
src, dst, r1, m, inp = start("ack", "echo dirtied", ",recover-timeout=4", mode=("back", "SHOALACK"))
out, err = m.communicate(timeout=120)
check("ack: with the acknowledgement lost shoal migrate fails (70) and the source's VM runs on",
      m.returncode == 70 and "acknowledgement" in err and
      ctl(src[1], {"cmd": "status"}).get("state") == "running", (m.returncode, err))
check("ack: the destination holds its copy, never run, until the source reconnects",
      wait_console(dst[3], "held paused, never run here", 30) and
      ctl(dst[1], {"cmd": "status"}).get("state") == "paused", console(dst[3])[-600:])
rc = finish(dst[0], 60)
check("ack: no source came back: the destination stops (70) after recover-timeout, saying its "
      "copy never ran", rc == 70 and "never ran here, and is stopped" in console(dst[3]),
      (rc, console(dst[3])[-600:]))
s2 = type_into(src[1], f"verify {B} 16M 9; verify {A} 16M 7; exit 5\r")
s2.close()
rc = finish(src[0], 90)
check("ack: the source's guest verified both patterns and exited 5 (nothing lost)",
      rc == 5 and console(src[2]).count("verify ok") >= 2, (rc, console(src[3])[-400:]))

# ---- the same over TLS 1.3: the recovery's connection in TLS too ----
# (the box's software CPU runs AES-GCM slowly: the guest dirties longer
# so that it is still at it when the switch comes)
TLS = True
src, dst, r1, m, inp = start("tls", f"verify {B} 16M 9; verify {A} 16M 7", ",tls=on", 15)
st = wait_state(src[1], "postcopy", 90, m)
check("tls: the migration reached post-copy", st.get("state") == "postcopy", (st, m.poll()))
r1.kill(); r1.wait()
m.communicate(timeout=60)
st = wait_state(src[1], "postcopy-paused", 30)
check("tls: the source says postcopy-paused after the drop", st.get("state") == "postcopy-paused", st)
r2, uri2 = relay("r2-tls", inp)
m2 = migrate(src[1], uri2, "--resume")
out2, err2 = m2.communicate(timeout=180)
try: info = json.loads(out2)
except ValueError: info = {}
check("tls: shoal migrate --resume --tls completes the migration (0, done)",
      m2.returncode == 0 and info.get("state") == "done", (m2.returncode, out2, err2))
rc = finish(src[0])
wait_for(lambda: console(dst[2]).count("verify ok") >= 2, 90, 0.05)
type_into(dst[1], "exit 5\r").close()
rc2 = finish(dst[0], 90)
out = console(dst[2])
check("tls: the destination took the source back over TLS and its guest verified both "
      "patterns and exited 5", rc == 0 and rc2 == 5 and out.count("verify ok") == 2 and
      "reconnected (recovery 1)" in console(dst[3]), (rc, rc2, out[-400:], console(dst[3])[-800:]))
r2.kill(); r2.wait()
TLS = False

# ---- no resume: the destination gives up after recover-timeout ----
src, dst, r1, m, inp = start("to", "echo resumed", ",recover-timeout=2")
st = wait_state(src[1], "postcopy", 60, m)
check("to: the migration reached post-copy", st.get("state") == "postcopy", (st, m.poll()))
r1.kill(); r1.wait()
m.communicate(timeout=60)
rc = finish(dst[0], 30)
check("to: without a resume the destination exits 70 after recover-timeout, saying how "
      "many pages were missing", rc == 70 and "did not reconnect within 2 s" in console(dst[3])
      and "still missing" in console(dst[3]), (rc, console(dst[3])[-600:]))
check("to: the source stays paused, waiting, and answers",
      status(src[1]).get("state") == "postcopy-paused" and src[0].poll() is None,
      console(src[3])[-400:])
src[0].kill(); src[0].wait()
T.exit()
PY
