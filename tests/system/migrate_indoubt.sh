#!/bin/bash
# migrate_indoubt.sh - the last two words of a migration lost in a drop
# (docs/migration.md, "In doubt"): the destination's acknowledgement
# (SHOALACK, the point of no return) and the source's go-ahead (SHOALRUN)
# that answers it.  Neither drop may leave the VM running at both ends.
# The stream goes through a relay (vmtest.RELAY) that cuts the connection
# where the word would pass.  A test-guest VM with a 16 MiB seeded
# pattern and a shared raw disk it wrote (one image, both VMMs), seccomp
# on at both ends:
#   - the go-ahead lost: the source had the acknowledgement, so `shoal
#     migrate` exits 0 (done) and the source exits 0; the destination
#     holds the VM paused, in doubt (its log says so, `status` says
#     paused, `migrate-status` has incoming_in_doubt) and gave the
#     disk's write lock up; resumed there by the operator (control
#     "resume", which takes the lock back), its guest verifies the whole
#     pattern and its disk, writes the disk, and exits 5;
#   - the acknowledgement lost: `shoal migrate` fails (70) waiting for
#     it, the source VM runs on with its disk (it took the lock back) and
#     its guest verifies the pattern and writes and reads its disk; the
#     destination holds its copy paused, in doubt, and does not run it
#     (what is typed on its console is not echoed); a resume there is
#     refused, naming the lock the source holds, and it stays paused.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm migrate_indoubt

PYTHONPATH="$ROOT/tests/system" python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import sys
from vmtest import Test, ctl, finish, text, type_into, wait_text
T = Test(*sys.argv[1:4])
check = T.check
PAT, CMDLINE = "0x2000000", "fill 0x2000000 16M 7; vblk 2048 3; shell"


def case(name, cut):
    """A source that filled its pattern and wrote its disk (shared: one
    raw image for both VMMs), a destination, the migration through a relay
    cutting at `cut`; returns (src, dst, m, its stderr)."""
    disk = T.path(name + ".raw")
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    src = T.start("s-" + name, CMDLINE, extra=("--disk", disk))
    check(f"{name}: the source guest filled its pattern and wrote its disk",
          wait_text(src.log, "shoal> ") and "vblk ok" in text(src.log), src.stderr()[-300:])
    inp = T.path("in-" + name + ".sock")
    dst = T.start("d-" + name, "shell", incoming="unix:" + inp, extra=("--disk", disk))
    _, uri = T.relay("r-" + name, inp, cut)
    m = T.migrate(src, uri, "--output", "json")
    out, err = m.communicate(timeout=120)
    return src, dst, m, err


def held(dst):
    """The destination says it holds the VM paused, in doubt."""
    return (wait_text(dst.err, "held paused here, in doubt", 45) and
            ctl(dst.sock, {"cmd": "status"}).get("state") == "paused" and
            ctl(dst.sock, {"cmd": "migrate-status"}).get("incoming_in_doubt") is True)


# ---- the go-ahead lost: the source stopped, the destination waits ----
src, dst, m, err = case("run", ("fwd", "SHOALRUN"))
check("run: with the go-ahead lost, shoal migrate still completes (0, done) and the source "
      "exits 0: it had the acknowledgement",
      m.returncode == 0 and finish(src.p) == 0, (m.returncode, src.stderr()[-400:]))
check("run: the destination holds the VM paused, in doubt, and says so", held(dst),
      dst.stderr()[-600:])
r = ctl(dst.sock, {"cmd": "resume"})
type_into(dst.sock, f"verify {PAT} 16M 7; vblk-verify 2048 3; vblk 2048 4; exit 5\r").close()
rc = finish(dst.p, 90)
check("run: resumed by the operator (it takes the disk's lock back), the guest verifies its "
      "whole pattern and its disk there, writes the disk, and exits 5",
      r.get("ok") and rc == 5 and "verify ok" in text(dst.log) and
      "vblk-verify ok sectors=2048 seed=3" in text(dst.log) and "vblk ok" in text(dst.log),
      (r, rc, dst.stderr()[-400:], text(dst.log)[-300:]))

# ---- the acknowledgement lost: the source runs on, the destination waits ----
src, dst, m, err = case("ack", ("back", "SHOALACK"))
check("ack: with the acknowledgement lost, shoal migrate fails (70) waiting for it",
      m.returncode == 70 and "acknowledgement" in err, (m.returncode, err))
type_into(src.sock, f"verify {PAT} 16M 7; vblk 2048 5; vblk-verify 2048 5\r").close()
check("ack: the source VM runs on, with its disk (the held destination gave the lock up): its "
      "guest verifies its pattern, writes its disk and reads it back",
      wait_text(src.log, "vblk-verify ok sectors=2048 seed=5", 60) and
      "verify ok" in text(src.log) and
      ctl(src.sock, {"cmd": "status"}).get("state") == "running",
      (src.stderr()[-400:], text(src.log)[-300:]))
type_into(dst.sock, "echo never-ran\r").close()
check("ack: the destination holds its copy paused, in doubt, and its guest does not run there "
      "(what is typed is not echoed)",
      held(dst) and not wait_text(dst.log, "never-ran", 2), (dst.stderr()[-600:], text(dst.log)[-200:]))
r = ctl(dst.sock, {"cmd": "resume"})
check("ack: resuming the held destination is refused while the source holds the disk's lock, "
      "and it stays paused", r.get("ok") is False and "held elsewhere" in r.get("error", "") and
      ctl(dst.sock, {"cmd": "status"}).get("state") == "paused", r)
T.exit()
PY
