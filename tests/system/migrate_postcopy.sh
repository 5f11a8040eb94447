#!/bin/bash
# migrate_postcopy.sh - post-copy live migration (`shoal migrate
# --postcopy-after N`, docs/migration.md "Post-copy"), seccomp on at both
# ends, with the test guest:
#   - a guest that fills a 16 MiB pattern during round 0 and then dirties
#     8 MiB as fast as it runs, under a --bandwidth it outruns, migrates
#     with --postcopy-after 1: the destination runs it at once with those
#     pages missing, fetches the ones it touches on demand while the
#     source pushes the rest; the guest then verifies both its patterns at
#     the destination (the one filled during round 0 exists there only
#     through post-copy) and exits 5; the JSON reports post-copy with the
#     pages fetched on demand and pushed, which add up to those missing;
#   - the same over TLS 1.3 with a key (--tls, tls=on): the destination's
#     page requests and the source's pages go through the TLS session, and
#     the guest verifies both patterns there;
#   - a destination killed during post-copy: the source says how many
#     pages it had not sent, keeps its copy paused (it does not resume an
#     older copy of a VM that ran on) waiting for `shoal migrate --resume`
#     (postcopy-paused; recovery itself: migrate_postcopy_recover.sh), and
#     does not crash: its control socket still answers.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm migrate_postcopy

PYTHONPATH="$ROOT/tests/system" python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import json, os, subprocess, sys, time
from vmtest import Test, ctl, finish, type_into, text as console, wait_text as wait_console
T = Test(*sys.argv[1:4])
shoal, guest, tmp, check = T.shoal, T.guest, T.tmp, T.check

A, B, C = "0x2000000", "0x4000000", "0x5000000"   # boot pattern, round-0 pattern, dirtied
MEM, BW = "128M", "8M"
CMDLINE = f"fill {A} 16M 7; shell"
SECCOMP = ("--seccomp", "on")

def vm(name, incoming=None):
    sock, log, err = (os.path.join(tmp, name + x) for x in (".sock", ".console", ".err"))
    args = [shoal, "run", "--kernel", guest, "--cmdline", CMDLINE, "--memory", MEM,
            "--console", "file:" + log, "--api-socket", sock, "--timeout", "120", "-v", *SECCOMP]
    if incoming: args += ["--incoming", incoming]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=open(err, "w"))
    end = time.time() + 30
    while time.time() < end and p.poll() is None and not (
            "waiting on" in console(err) if incoming else os.path.exists(sock)):
        time.sleep(0.02)
    return p, sock, log, err

def start(case, tail, tls=False, secs=8):
    """A source whose guest fills B once round 0 runs, then dirties C;
    a destination; the migration (tls: in TLS 1.3 with a key).  Returns
    (src, dst, migrate process)."""
    src = vm("s-" + case)
    check(f"{case}: the source guest filled its pattern", wait_console(src[2], "shoal> "),
          console(src[3])[-300:])
    uri = "unix:" + os.path.join(tmp, "in-" + case + ".sock")
    key, extra = os.path.join(tmp, "mig.key"), []
    if tls:
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(os.urandom(32))
        extra = ["--key-file", key, "--tls"]
    dst = vm("d-" + case, incoming=uri + (f",key-file={key},tls=on" if tls else ""))
    m = subprocess.Popen([shoal, "migrate", "--socket", src[1], uri, "--bandwidth", BW,
                          "--postcopy-after", "1", "--output", "json", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 30                # round 0 under way: tracking is on
    while time.time() < end and m.poll() is None:
        try: st = ctl(src[1], {"cmd": "migrate-status"})
        except OSError: st = {}
        if st.get("state") == "active" and st.get("pages_sent", 0) > 0: break
        time.sleep(0.05)
    s = type_into(src[1], f"fill {B} 16M 9; dirty 0 {secs} {C} 8M; {tail}\r")
    return src, dst, m, s

# ---- post-copy: nothing lost ----
src, dst, m, s = start("pc", f"verify {B} 16M 9; verify {A} 16M 7; exit 5")
out, err = m.communicate(timeout=120)
s.close()
try: info = json.loads(out)
except ValueError: info = {}
pages, demand, pushed = (info.get(k, -1) for k in ("postcopy_pages", "postcopy_demand_pages",
                                                    "postcopy_pushed_pages"))
print(f"note: post-copy after {info.get('round', 0)} round(s): downtime "
      f"{info.get('downtime_ms', 0):.1f} ms, total {info.get('total_ms', 0):.0f} ms, "
      f"{pages} pages missing at the switch, {demand} fetched on demand, {pushed} pushed")
check("post-copy: migrated (status 0), the JSON says post-copy", m.returncode == 0 and
      info.get("state") == "done" and info.get("postcopy") is True and
      info.get("postcopy_after") == 1, (m.returncode, out, err))
check("post-copy: pages were missing at the switch (at least the 16 MiB filled in round 0), "
      "some fetched on demand, the rest pushed, adding up", pages >= 4096 and demand > 0 and
      pushed > 0 and demand + pushed == pages, info)
rc = finish(src[0])
check("post-copy: the source exited 0 saying the VM migrated", rc == 0 and
      "migrated" in console(src[3]), (rc, console(src[3])[-400:]))
rc = finish(dst[0], 90)
out = console(dst[2])
check("post-copy: at the destination the guest verified both patterns (nothing lost) and "
      "exited 5", rc == 5 and out.count("verify ok") == 2 and "verify bad" not in out,
      (rc, out[-400:], console(dst[3])[-600:]))
check("post-copy: the destination said every missing page arrived and unregistered",
      "post-copy done" in console(dst[3]), console(dst[3])[-600:])

# ---- post-copy over TLS: the same, the stream and the page requests in TLS 1.3 ----
# (TLS is slow in the box, whose software CPU runs AES-GCM: the guest
# dirties for 30 s so that it is still at it when the switch comes)
src, dst, m, s = start("tls", f"verify {B} 16M 9; verify {A} 16M 7; exit 5", tls=True, secs=30)
out, err = m.communicate(timeout=180)
s.close()
try: info = json.loads(out)
except ValueError: info = {}
print(f"note: post-copy over TLS: downtime {info.get('downtime_ms', 0):.1f} ms, total "
      f"{info.get('total_ms', 0):.0f} ms, {info.get('postcopy_pages', -1)} pages missing, "
      f"{info.get('postcopy_demand_pages', -1)} fetched on demand")
check("tls: migrated in post-copy over TLS (status 0), pages fetched on demand and pushed adding up",
      m.returncode == 0 and info.get("postcopy") is True and info.get("postcopy_demand_pages", 0) > 0 and
      info.get("postcopy_demand_pages", 0) + info.get("postcopy_pushed_pages", 0) ==
      info.get("postcopy_pages", -1), (m.returncode, out, err))
rc = finish(src[0])
rc2 = finish(dst[0], 90)
out = console(dst[2])
check("tls: the destination ran TLS and its guest verified both patterns and exited 5",
      rc2 == 5 and out.count("verify ok") == 2 and "TLS" in console(dst[3]),
      (rc, rc2, out[-400:], console(dst[3])[-600:]))

# ---- a destination killed during post-copy ----
src, dst, m, s = start("kill", "echo resumed")
end, st = time.time() + 60, {}
while time.time() < end and m.poll() is None:
    try: st = ctl(src[1], {"cmd": "migrate-status"})
    except OSError: st = {}
    if st.get("state") == "postcopy": break
    time.sleep(0.02)
check("kill: the migration reached post-copy", st.get("state") == "postcopy", st)
dst[0].kill(); dst[0].wait()
out, err = m.communicate(timeout=60)
s.close()
check("kill: shoal migrate fails (70), saying the VM is lost there and how many pages were "
      "not sent", m.returncode == 70 and "post-copy" in err and "not yet sent" in err and
      "paused" in err, (m.returncode, err))
check("kill: the source VMM did not crash: it runs, answers, and waits for a resume",
      src[0].poll() is None and
      ctl(src[1], {"cmd": "migrate-status"}).get("state") == "postcopy-paused",
      console(src[3])[-400:])
check("kill: the source keeps its copy of the VM paused, not resumed",
      ctl(src[1], {"cmd": "status"}).get("state") == "paused", console(src[3])[-400:])
src[0].kill(); src[0].wait()
T.exit()
PY
