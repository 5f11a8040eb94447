#!/bin/bash
# migrate_trace.sh - the migration's trace (SHOAL_MIGRATE_TRACE=1,
# vmm/mtrace.h, docs/migration.md "Tracing the switch") and the door that
# ends at "sync" (state/migrate.c).  A test-guest VM with a 4 MiB seeded
# pattern migrates with the trace on at both ends, seccomp on; at the
# destination a typed line makes the guest echo and exit 5:
#   - every point of the source's is in its stderr once, in the order of
#     its stop phase, its VM's teardown last; every point of the
#     destination's once, in the order of its read, its go-ahead and its
#     start (the first KVM_RUN, its first return and the first console
#     byte after the go-ahead);
#   - the lines of both ends are on one clock: the source's acknowledgement
#     read comes before the destination's go-ahead read, and the
#     destination's door (its thread refusing other sources) was told to
#     stop before the source asked its vCPUs to pause: at "sync", no
#     longer after the go-ahead, where waiting for that thread delayed the
#     VM's start;
#   - the guest verifies its pattern at the destination;
#   - without the variable (a second migration) neither end writes a line.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm migrate_trace

PYTHONPATH="$ROOT/tests/system" python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import os, re, sys
from vmtest import Test, finish, text, type_into, wait_text
T = Test(*sys.argv[1:4])
check = T.check
CMDLINE = "fill 0x2000000 4M 7; shell"
SRC = ["converged", "pause", "paused", "quiesced", "dirty_synced", "pages_sent", "state_sent",
       "end_sent", "ack", "go_ahead_sent", "stop", "destroy", "destroyed"]
DST = ["door_stopped", "state_loaded", "end", "ack_sent", "go_ahead", "door_closed",
       "incoming_done", "vm_run", "loop_started", "vcpu_threads"]
DST_VCPU = ["vcpu_start", "kvm_run", "first_exit"]


def points(path):
    """[(point, us)] of the trace lines in a VMM's stderr, in order."""
    return [(m[1], int(m[2])) for m in re.finditer(r"^shoal: migrate-trace: (\S+) (\d+)$",
                                                      text(path), re.M)]


def once_in_order(pts, side, names):
    """Each of side.NAMES once, their times in that order: (ok, why)."""
    got = [p for p, _ in pts]
    t = dict(pts)
    for n in names:
        if got.count(f"{side}.{n}") != 1:
            return False, f"{side}.{n} appears {got.count(side + '.' + n)} times: {got}"
    ts = [t[f"{side}.{n}"] for n in names]
    return ts == sorted(ts), list(zip(names, ts))


def migrate(name, trace):
    if trace:
        os.environ["SHOAL_MIGRATE_TRACE"] = "1"
    else:
        os.environ.pop("SHOAL_MIGRATE_TRACE", None)
    src = T.start("s-" + name, CMDLINE)
    check(f"{name}: the source guest filled its pattern", wait_text(src.log, "shoal> "),
          src.stderr()[-300:])
    inp = T.path("in-" + name + ".sock")
    dst = T.start("d-" + name, "shell", incoming="unix:" + inp)
    m = T.migrate(src, "unix:" + inp)
    out, err = m.communicate(timeout=120)
    check(f"{name}: shoal migrate completes and the source exits 0",
          m.returncode == 0 and finish(src.p) == 0, (m.returncode, err, src.stderr()[-400:]))
    type_into(dst.sock, "verify 0x2000000 4M 7; exit 5\r").close()
    rc = finish(dst.p, 90)
    check(f"{name}: the guest verifies its pattern at the destination and exits 5",
          rc == 5 and "verify ok" in text(dst.log), (rc, dst.stderr()[-400:], text(dst.log)[-300:]))
    return src, dst


src, dst = migrate("traced", True)
s, d = points(src.err), points(dst.err)
ok, why = once_in_order(s, "src", SRC)
check("traced: the source's points, each once, in the order of its stop phase", ok, why)
ok, why = once_in_order(d, "dst", DST)
check("traced: the destination's points, each once, in the order of its read and start", ok, why)
ok, why = once_in_order(d, "dst", DST_VCPU)
t = dict(d)
check("traced: its vCPU's start, first KVM_RUN and first return after the go-ahead, once each, "
      "in order, and its first console byte after the go-ahead",
      ok and t.get("dst.go_ahead", 1 << 62) < t.get("dst.vcpu_start", 0) and
      t.get("dst.go_ahead", 1 << 62) < t.get("dst.console", 0) and
      [p for p, _ in d].count("dst.console") == 1, (why, d))
ts = dict(s)
check("traced: one clock for both ends: the source read the acknowledgement before the "
      "destination read the go-ahead",
      ts.get("src.ack", 1 << 62) < t.get("dst.go_ahead", 0), (s, d))
check("traced: the destination's door was told to stop (at \"sync\") before the source asked "
      "its vCPUs to pause",
      t.get("dst.door_stopped", 1 << 62) < ts.get("src.pause", 0), (s, d))

src, dst = migrate("plain", False)
check("plain: without SHOAL_MIGRATE_TRACE neither end writes a trace line",
      "migrate-trace" not in src.stderr() + dst.stderr(),
      [l for l in (src.stderr() + dst.stderr()).splitlines() if "migrate-trace" in l][:5])
T.exit()
PY
