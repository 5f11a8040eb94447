#!/bin/bash
# migrate_compress.sh - `shoal migrate --compress zstd` (docs/migration.md,
# state/migrate_compress.c) with the test guest, seccomp on at both ends:
#   - wrong values are refused, each naming the value: --compress lz4 and
#     zstd:99 by the CLI (status 64), "compress": "lz4" by the VMM's
#     control command;
#   - a guest whose memory is mostly compressible (2 MiB of pages holding
#     one written word each, 32 pages of 1 KiB of pattern each and zeroes
#     after it) and 1 MiB of an incompressible pattern (sent raw) migrates
#     with --compress zstd: the JSON shows compressed pages and fewer bytes
#     sent than the pages' own bytes (ram_raw_bytes), the destination says
#     the source compresses, and its guest verifies all 33 patterns, so
#     the frames decoded into exactly their pages;
#   - the text summary prints the compression line;
#   - with --postcopy-after 1 under a --bandwidth the guest outruns (it
#     rewrites incompressible pages), the rounds before the switch go
#     compressed and the pages after it plain: the guest verifies both its
#     patterns at the destination, which says post-copy is done.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
require_kvm migrate_compress

PYTHONPATH="$ROOT/tests/system" python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import subprocess, sys
from vmtest import Test, ctl, finish, json_or_empty, type_into, wait_migrating, wait_path, wait_text
T = Test(*sys.argv[1:4])
check = T.check

A, B, C = 0x1000000, 0x2000000, 0x1400000   # random 1 MiB, dirtied 2 MiB, 32 partial pages
CMDLINE = f"fill {A:#x} 1M 7; shell"

def vm(name, incoming=None, cmdline=CMDLINE):
    return T.start(name, cmdline, incoming=incoming, timeout=120)

def run(*args, secs=30):
    return subprocess.run([T.shoal, *args], capture_output=True, text=True, timeout=secs)

def partial(cmd):          # 32 pages: 1 KiB of pattern 3 each, zeroes after; lines < 512
    words = [f"{cmd} {C + i * 4096:#x} 1K 3" for i in range(32)]
    return "; ".join(words[:16]) + "\r" + "; ".join(words[16:]) + "\r"

def type_at(dst, line, secs=60):
    """Once dst runs the migrated VM, type line into it; dst's status."""
    s = type_into(dst.sock, line) if wait_path(dst.sock, dst.p) else None
    rc = finish(dst.p, secs)
    if s: s.close()
    return rc

src = vm("s")
check("the source guest filled its pattern", wait_text(src.log, "shoal> "), src.console()[-300:])
s = type_into(src.sock, partial("fill") + f"dirty 0 2 {B:#x} 2M; echo ready\r")
check("the guest wrote its compressible pages", wait_text(src.log, "ready"), src.console()[-300:])
s.close()

uri = "unix:" + T.path("in.sock")
r = run("migrate", "--socket", src.sock, uri, "--compress", "lz4")
check("--compress lz4 is refused (64), naming the value",
      r.returncode == 64 and "'lz4'" in r.stderr, (r.returncode, r.stderr))
r = run("migrate", "--socket", src.sock, uri, "--compress", "zstd:99")
check("--compress zstd:99 is refused (64), naming the value and the levels",
      r.returncode == 64 and "'zstd:99'" in r.stderr and "1 to 19" in r.stderr,
      (r.returncode, r.stderr))
r = ctl(src.sock, {"cmd": "migrate", "uri": uri, "compress": "lz4"})
check("the control command refuses \"compress\": \"lz4\", naming it",
      not r.get("ok") and "lz4" in r.get("error", ""), r)
r = ctl(src.sock, {"cmd": "migrate", "uri": uri, "compress": "zstd", "compress_level": 0})
check("the control command refuses \"compress_level\": 0",
      not r.get("ok") and "compress_level" in r.get("error", ""), r)

dst = vm("d", uri)
m = run("migrate", "--socket", src.sock, uri, "--compress", "zstd", "--output", "json", secs=120)
info = json_or_empty(m.stdout)
check("migrate --compress zstd: status 0, done, compress zstd level 1 in the JSON",
      m.returncode == 0 and info.get("state") == "done" and info.get("compress") == "zstd"
      and info.get("compress_level") == 1, (m.returncode, m.stdout, m.stderr))
raw, data, sent = info.get("ram_raw_bytes", 0), info.get("ram_data_bytes", 0), info.get("bytes", 0)
check("compressed pages, and fewer bytes sent than the pages' own (ram_raw_bytes)",
      info.get("compressed_pages", 0) >= 512 and 0 < data < raw and 0 < sent < raw, info)
print(f"note: 64 MiB guest: {raw >> 10} KiB of data pages sent as {data >> 10} KiB, "
      f"{sent >> 10} KiB in all, {info.get('compressed_pages')} pages compressed "
      f"(a figure, not a check)")
check("the source exited 0", finish(src.p) == 0, src.stderr()[-300:])
check("the destination says the source compresses its pages",
      "compresses its pages with zstd" in dst.stderr(), dst.stderr()[-400:])
rc = type_at(dst, partial("verify") + f"verify {A:#x} 1M 7; exit 5\r")
out = dst.console()
check("the destination's guest verifies all 33 patterns (compressed and raw pages) and "
      "exits 5", rc == 5 and out.count("verify ok") == 33 and "verify bad" not in out,
      (rc, out.count("verify ok"), dst.stderr()[-300:], out[-400:]))

# the text summary, and a level given (the VM migrates back and forth once more)
src = vm("s2")
wait_text(src.log, "shoal> ")
uri = "unix:" + T.path("in2.sock")
dst = vm("d2", uri)
m = run("migrate", "--socket", src.sock, uri, "--compress", "zstd:3", secs=120)
check("migrate --compress zstd:3: the text summary prints the compression",
      m.returncode == 0 and "compression: zstd level 3:" in m.stdout,
      (m.returncode, m.stdout, m.stderr))
finish(src.p)
rc = type_at(dst, f"verify {A:#x} 1M 7; exit 6\r")
check("... and that guest verifies its pattern there", rc == 6 and
      "verify ok" in dst.console(), (rc, dst.console()[-300:]))

# post-copy with compression: the rounds before the switch compressed,
# the pages after it plain (post-copy's destination places them raw)
# (16 MiB of incompressible pattern at boot: round 0 takes 2 s under the cap)
pc_cmdline = f"fill {A:#x} 1M 7; fill {B:#x} 16M 5; shell"
B2, C2 = B + 0x1000000, C + 0x400000
src = vm("s3", cmdline=pc_cmdline)
check("post-copy: the source guest filled its pattern", wait_text(src.log, "shoal> "),
      src.console()[-300:])
uri = "unix:" + T.path("in3.sock")
dst = vm("d3", uri, cmdline=pc_cmdline)
m = T.migrate(src, uri, "--compress", "zstd", "--bandwidth", "8M", "--postcopy-after", "1",
              "--output", "json")
wait_migrating(src.sock, m)           # round 0 under way: tracking is on
# C is filled first: the words `dirty` rewrites keep its pages incompressible,
# so the rounds do not converge under the cap
s = type_into(src.sock, f"fill {B2:#x} 8M 9; fill {C2:#x} 4M 3; dirty 0 8 {C2:#x} 4M; "
              f"verify {B2:#x} 8M 9; verify {A:#x} 1M 7; exit 5\r")
out, err = m.communicate(timeout=120)
s.close()
info = json_or_empty(out)
check("post-copy with --compress: migrated, switched to post-copy, pages compressed before",
      m.returncode == 0 and info.get("postcopy") is True and
      info.get("compressed_pages", 0) > 0, (m.returncode, out, err))
finish(src.p)
rc = finish(dst.p, 90)
out = dst.console()
check("post-copy with --compress: the guest verified both patterns there and exited 5",
      rc == 5 and out.count("verify ok") == 2 and "verify bad" not in out and
      "post-copy done" in dst.stderr(), (rc, out[-400:], dst.stderr()[-400:]))
T.exit()
PY
T_FAILED=$?
finish
