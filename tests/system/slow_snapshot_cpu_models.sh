#!/bin/bash
# slow_snapshot_cpu_models.sh - a snapshot restores on another CPU model
# (issue 10, mechanism 27; docs/snapshots.md "On other hardware").
#
# Three KVM boxes, each QEMU's software CPU with another model, share one
# directory of snapshots on the host's disk:
#   1. `-cpu max` (QEMU's TCG CPU: LA57, PKU, VAES among its features):
#      the test guest fills a pattern and is saved twice, once started with
#      `--cpu-template baseline`, once with the default `host` template;
#   2. `-cpu EPYC,+svm` (AMD EPYC, without those): the baseline snapshot
#      restores and the guest verifies its pattern; the host-template one
#      is refused with status 67, naming the features EPYC lacks, and the
#      snapshot is unchanged; a baseline snapshot is taken here too;
#   3. `-cpu max` again: EPYC's baseline snapshot restores and verifies.
# Both models are AMD: kvm_amd loads on AMD vendors only, and TCG emulates
# SVM, not VMX, so no Intel model can be a KVM box here.
#
# It needs KVM and starts its own boxes (scripts/kvm-box.sh --cpu), so it
# runs on the host, in the slow tier, whether or not the host has KVM.
. "$(dirname "$0")/lib.sh"

A=0x2000000
MODEL_MAX=max
MODEL_EPYC=EPYC,+svm

# phase N DIR: the part that runs inside box N.
phase() {
	python3 - "$SHOAL" "$GUEST" "$TMP" "$1" "$2" <<'PY'
import json, os, socket, subprocess, sys, time
shoal, guest, tmp, phase, shared = sys.argv[1:6]
A = "0x2000000"
ok = True
def check(name, cond, why=""):
    global ok
    print(("PASS: " if cond else "FAIL: ") + name + ("" if cond else ": " + str(why)), flush=True)
    ok = ok and bool(cond)

def model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"

def start(name, args):
    sock = os.path.join(tmp, name + ".sock")
    log = os.path.join(tmp, name + ".console")
    p = subprocess.Popen([shoal, "run", *args, "--console", "file:" + log, "--api-socket", sock,
                          "--timeout", "240"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        if os.path.exists(sock) or p.poll() is not None: break
        time.sleep(0.05)
    return p, sock, log

def console(log):
    try:
        with open(log, "rb") as f: return f.read().decode(errors="replace")
    except OSError: return ""

def wait_console(log, text, secs=120):
    end = time.time() + secs
    while time.time() < end:
        if text in console(log): return True
        time.sleep(0.1)
    return False

def type_into(sock, text):
    s = socket.socket(socket.AF_UNIX); s.connect(sock)
    f = s.makefile("rwb")
    f.write(b'{"cmd": "console-attach", "force": true}\n'); f.flush()
    assert json.loads(f.readline())["ok"]
    for ch in text.encode():
        s.sendall(bytes([ch])); time.sleep(0.002)
    return s

def finish(p, secs=200):
    try: p.wait(timeout=secs)
    except subprocess.TimeoutExpired: p.kill(); p.wait()
    return p.returncode, p.stderr.read().decode(errors="replace")

def save(name, template, seed):
    d = os.path.join(shared, name)
    args = ["--kernel", guest, "--cmdline", f"fill {A} 16M {seed}; echo filled; shell", "--memory", "128M"]
    if template: args += ["--cpu-template", template]
    p, sock, log = start(name, args)
    check(f"{name}: the guest filled its pattern", wait_console(log, "shoal> "), console(log)[-300:])
    r = subprocess.run([shoal, "snapshot", "create", "--socket", sock, d],
                       capture_output=True, text=True, timeout=300)
    check(f"{name}: snapshot create on '{model()}'", r.returncode == 0, r.stdout + r.stderr)
    s = type_into(sock, "exit 3\r")
    rc, err = finish(p)
    s.close()
    check(f"{name}: the source exited as told (3)", rc == 3, (rc, err[-300:]))

def restore(name, seed, code):
    d = os.path.join(shared, name)
    p, sock, log = start("r-" + name, ["--restore", d])
    s = type_into(sock, f"verify {A} 16M {seed}; exit {code}\r") if os.path.exists(sock) else None
    rc, err = finish(p)
    if s: s.close()
    check(f"{name} restores on '{model()}' and the guest finds its pattern (exit {code})",
          rc == code and "bad" not in console(log), (rc, err[-400:], console(log)[-300:]))

def tree(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}

if phase == "1":
    save("base-max", "baseline", 11)
    save("host-max", None, 12)
elif phase == "2":
    restore("base-max", 11, 5)
    d = os.path.join(shared, "host-max")
    before = tree(d)
    r = subprocess.run([shoal, "run", "--restore", d, "--timeout", "60",
                        "--console", "file:" + os.path.join(tmp, "refused.console")],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    print("note: the refusal: " + r.stderr.strip().replace("\n", " / "), flush=True)
    named = [f for f in ("leaf 7.0.ecx bit 16", "leaf 7.0.ecx bit 9") if f in r.stderr]
    check(f"a host-template snapshot from 'max' is refused on '{model()}' (status 67), naming "
          "the features this CPU lacks (LA57: leaf 7.0.ecx bit 16, VAES: bit 9)",
          r.returncode == 67 and len(named) == 2, (r.returncode, r.stderr))
    check("the refused snapshot is unchanged", tree(d) == before)
    save("base-epyc", "baseline", 13)
elif phase == "3":
    restore("base-epyc", 13, 6)
sys.exit(0 if ok else 1)
PY
}

if [ "${1:-}" = --phase ]; then
	phase "$2" "$3"
	exit $?
fi

[ -x "$SHOAL" ] && [ -f "$GUEST" ] || { fail "build" "no $SHOAL or $GUEST: make tests first"; finish; }
# The boxes share the host's disk, not its /tmp.
SHARED=$(mktemp -d "$BUILD/cpu-models.XXXXXX")
trap 'rm -rf "$TMP" "$SHARED"' EXIT
box() {
	local model=$1 n=$2 out rc
	out=$("$ROOT/scripts/kvm-box.sh" -q --cpu "$model" --cpus 1 --timeout 900 -- \
		env BUILD="$BUILD" bash "$0" --phase "$n" "$SHARED" 2>&1)
	rc=$?
	# QEMU's warnings about features TCG does not emulate are noise here.
	echo "$out" | grep -v "TCG doesn't support requested feature"
	[ $rc -eq 0 ] || T_FAILED=1
	case $rc in
	0) ;;
	125) fail "box $n ($model)" "the box could not run: $(echo "$out" | grep '^kvm-box:' | tail -1)" ;;
	*) echo "$out" | grep -q '^FAIL: ' || fail "box $n ($model)" "exit status $rc" ;;
	esac
	return $rc
}
box "$MODEL_MAX" 1 && box "$MODEL_EPYC" 2 && box "$MODEL_MAX" 3
# A box that failed prints its FAIL lines; the ones after it did not run.
finish
