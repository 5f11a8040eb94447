#!/bin/bash
# migrate_busy.sh - a guest that never exits to user space migrates while
# it runs (src/state/migrate.c, hello).
#
# The stream's first section carries vCPU 0's CPUID, read with
# KVM_GET_CPUID2, which waits for the vCPU's mutex; KVM_RUN holds it.  Read
# while the guest ran, it waited for the vCPU's next exit to user space: a
# guest busy in memory (the test guest's `spin`, `dirty`) made the
# migration wait for its whole loop.  The vCPUs are now parked for the
# read.  The guest here spins 30 s, then reports; the migration must end
# while it spins: its report comes from the destination, not the source.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

PYTHONPATH="$ROOT/tests/system" python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import os, subprocess, sys
from vmtest import Test, text, wait_for
T = Test(*sys.argv[1:4])
shoal, guest, tmp, check = T.shoal, T.guest, T.tmp, T.check

cmd = "echo spinning; spin 30000; echo spun; shell"
common = ["--kernel", guest, "--cmdline", cmd, "--memory", "64M", "--cpus", "1", "--timeout", "200"]
src = subprocess.Popen([shoal, "run", *common, "--console", "file:" + tmp + "/src.log",
                        "--api-socket", tmp + "/src.sock"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
check("the source guest spins", wait_for(lambda: "shoal-guest: spinning" in text(tmp + "/src.log"), 60), text(tmp + "/src.log"))
dst = subprocess.Popen([shoal, "run", *common, "--console", "file:" + tmp + "/dst.log",
                        "--api-socket", tmp + "/dst.sock", "--incoming", "unix:" + tmp + "/mig"],
                       stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
wait_for(lambda: os.path.exists(tmp + "/mig"), 30)
r = subprocess.run([shoal, "migrate", "--socket", tmp + "/src.sock", "unix:" + tmp + "/mig"],
                   capture_output=True, text=True, timeout=150)
check("shoal migrate: status 0", r.returncode == 0, (r.returncode, r.stderr))
check("the guest ended its spin at the destination", wait_for(lambda: "shoal-guest: spun" in text(tmp + "/dst.log"), 90),
      text(tmp + "/dst.log")[-300:])
check("... not at the source: the migration did not wait for the loop to end",
      "shoal-guest: spun" not in text(tmp + "/src.log"), text(tmp + "/src.log")[-300:])
for p in (src, dst):
    if p.poll() is None: p.kill()
    p.wait()
T.exit()
PY
