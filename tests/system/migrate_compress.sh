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

python3 - "$SHOAL" "$GUEST" "$TMP" <<'PY'
import json, os, socket, subprocess, sys, time
shoal, guest, tmp = sys.argv[1:4]
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)))
    ok = ok and bool(cond)

MEM = "64M"
A, B, C = 0x1000000, 0x2000000, 0x1400000   # random 1 MiB, dirtied 2 MiB, 32 partial pages
CMDLINE = f"fill {A:#x} 1M 7; shell"
SECCOMP = ("--seccomp", "on")
procs = []

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

def wait_path(path, p, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if os.path.exists(path): return True
        if p.poll() is not None: return False
        time.sleep(0.02)
    return False

def vm(name, incoming=None, cmdline=CMDLINE):
    sock, log, err = (os.path.join(tmp, name + x) for x in (".sock", ".console", ".err"))
    args = [shoal, "run", "--kernel", guest, "--cmdline", cmdline, "--memory", MEM,
            "--console", "file:" + log, "--api-socket", sock, "--timeout", "120", "-v", *SECCOMP]
    if incoming: args += ["--incoming", incoming]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=open(err, "w"))
    procs.append(p)
    if incoming:
        end = time.time() + 30
        while time.time() < end and "waiting on" not in console(err) and p.poll() is None:
            time.sleep(0.02)
    else:
        wait_path(sock, p)
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

def partial(cmd):          # 32 pages: 1 KiB of pattern 3 each, zeroes after; lines < 512
    words = [f"{cmd} {C + i * 4096:#x} 1K 3" for i in range(32)]
    return "; ".join(words[:16]) + "\r", "; ".join(words[16:]) + "\r"

try:
    src = vm("s")
    check("the source guest filled its pattern", wait_console(src[2], "shoal> "),
          console(src[2])[-300:])
    l1, l2 = partial("fill")
    s = type_into(src[1], l1)
    for ch in (l2 + f"dirty 0 2 {B:#x} 2M; echo ready\r").encode():
        s.sendall(bytes([ch])); time.sleep(0.002)
    check("the guest wrote its compressible pages", wait_console(src[2], "ready"),
          console(src[2])[-300:])
    s.close()

    uri = "unix:" + os.path.join(tmp, "in.sock")
    r = subprocess.run([shoal, "migrate", "--socket", src[1], uri, "--compress", "lz4"],
                       capture_output=True, text=True, timeout=30)
    check("--compress lz4 is refused (64), naming the value",
          r.returncode == 64 and "'lz4'" in r.stderr, (r.returncode, r.stderr))
    r = subprocess.run([shoal, "migrate", "--socket", src[1], uri, "--compress", "zstd:99"],
                       capture_output=True, text=True, timeout=30)
    check("--compress zstd:99 is refused (64), naming the value and the levels",
          r.returncode == 64 and "'zstd:99'" in r.stderr and "1 to 19" in r.stderr,
          (r.returncode, r.stderr))
    r = ctl(src[1], {"cmd": "migrate", "uri": uri, "compress": "lz4"})
    check("the control command refuses \"compress\": \"lz4\", naming it",
          not r.get("ok") and "lz4" in r.get("error", ""), r)
    r = ctl(src[1], {"cmd": "migrate", "uri": uri, "compress": "zstd", "compress_level": 0})
    check("the control command refuses \"compress_level\": 0",
          not r.get("ok") and "compress_level" in r.get("error", ""), r)

    dst = vm("d", uri)
    m = subprocess.run([shoal, "migrate", "--socket", src[1], uri, "--compress", "zstd",
                        "--output", "json"], capture_output=True, text=True, timeout=120)
    try: info = json.loads(m.stdout)
    except ValueError: info = {}
    check("migrate --compress zstd: status 0, done, compress zstd level 1 in the JSON",
          m.returncode == 0 and info.get("state") == "done" and info.get("compress") == "zstd"
          and info.get("compress_level") == 1, (m.returncode, m.stdout, m.stderr))
    raw, data, sent = info.get("ram_raw_bytes", 0), info.get("ram_data_bytes", 0), info.get("bytes", 0)
    check("compressed pages, and fewer bytes sent than the pages' own (ram_raw_bytes)",
          info.get("compressed_pages", 0) >= 512 and 0 < data < raw and 0 < sent < raw,
          info)
    print(f"note: 64 MiB guest: {raw >> 10} KiB of data pages sent as {data >> 10} KiB, "
          f"{sent >> 10} KiB in all, {info.get('compressed_pages')} pages compressed "
          f"(a figure, not a check)")
    check("the source exited 0", finish(src[0]) == 0, console(src[3])[-300:])
    check("the destination says the source compresses its pages",
          "compresses its pages with zstd" in console(dst[3]), console(dst[3])[-400:])
    ready = wait_path(dst[1], dst[0])
    v1, v2 = partial("verify")
    s = type_into(dst[1], v1) if ready else None
    if s:
        for ch in (v2 + f"verify {A:#x} 1M 7; exit 5\r").encode():
            s.sendall(bytes([ch])); time.sleep(0.002)
    rc = finish(dst[0])
    if s: s.close()
    out = console(dst[2])
    check("the destination's guest verifies all 33 patterns (compressed and raw pages) and "
          "exits 5", rc == 5 and out.count("verify ok") == 33 and "verify bad" not in out,
          (rc, out.count("verify ok"), console(dst[3])[-300:], out[-400:]))

    # the text summary, and a level given (the VM migrates back and forth once more)
    src = vm("s2")
    wait_console(src[2], "shoal> ")
    uri = "unix:" + os.path.join(tmp, "in2.sock")
    dst = vm("d2", uri)
    m = subprocess.run([shoal, "migrate", "--socket", src[1], uri, "--compress", "zstd:3"],
                       capture_output=True, text=True, timeout=120)
    check("migrate --compress zstd:3: the text summary prints the compression",
          m.returncode == 0 and "compression: zstd level 3:" in m.stdout, (m.returncode, m.stdout,
                                                                           m.stderr))
    finish(src[0])
    ready = wait_path(dst[1], dst[0])
    s = type_into(dst[1], f"verify {A:#x} 1M 7; exit 6\r") if ready else None
    rc = finish(dst[0])
    if s: s.close()
    check("... and that guest verifies its pattern there", rc == 6 and
          "verify ok" in console(dst[2]), (rc, console(dst[2])[-300:]))
    # post-copy with compression: the rounds before the switch compressed,
    # the pages after it plain (post-copy's destination places them raw)
    # (16 MiB of incompressible pattern at boot: round 0 takes 2 s under the cap)
    pc_cmdline = f"fill {A:#x} 1M 7; fill {B:#x} 16M 5; shell"
    B2, C2 = B + 0x1000000, C + 0x400000
    src = vm("s3", cmdline=pc_cmdline)
    check("post-copy: the source guest filled its pattern", wait_console(src[2], "shoal> "),
          console(src[2])[-300:])
    uri = "unix:" + os.path.join(tmp, "in3.sock")
    dst = vm("d3", uri, cmdline=pc_cmdline)
    m = subprocess.Popen([shoal, "migrate", "--socket", src[1], uri, "--compress", "zstd",
                          "--bandwidth", "8M", "--postcopy-after", "1", "--output", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 30                # round 0 under way: tracking is on
    while time.time() < end and m.poll() is None:
        try: st = ctl(src[1], {"cmd": "migrate-status"})
        except OSError: st = {}
        if st.get("state") == "active" and st.get("pages_sent", 0) > 0: break
        time.sleep(0.05)
    # C is filled first: the words `dirty` rewrites keep its pages incompressible,
    # so the rounds do not converge under the cap
    s = type_into(src[1], f"fill {B2:#x} 8M 9; fill {C2:#x} 4M 3; dirty 0 8 {C2:#x} 4M; "
                  f"verify {B2:#x} 8M 9; verify {A:#x} 1M 7; exit 5\r")
    out, err = m.communicate(timeout=120)
    s.close()
    try: info = json.loads(out)
    except ValueError: info = {}
    check("post-copy with --compress: migrated, switched to post-copy, pages compressed before",
          m.returncode == 0 and info.get("postcopy") is True and
          info.get("compressed_pages", 0) > 0, (m.returncode, out, err))
    finish(src[0])
    rc = finish(dst[0], 90)
    out = console(dst[2])
    check("post-copy with --compress: the guest verified both patterns there and exited 5",
          rc == 5 and out.count("verify ok") == 2 and "verify bad" not in out and
          "post-copy done" in console(dst[3]), (rc, out[-400:], console(dst[3])[-400:]))
finally:
    for p in procs:
        if p.poll() is None:
            p.kill(); p.wait()
sys.exit(0 if ok else 1)
PY
T_FAILED=$?
finish
