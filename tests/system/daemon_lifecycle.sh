#!/bin/bash
# daemon_lifecycle.sh - shoald end to end, through the CLI and curl only:
# create, start, console (log, attach, one writer, --force), pause, resume,
# metrics (JSON and Prometheus), events (log and --follow), guest exit
# codes, the restart policy, stop (graceful then forced), delete; one
# daemon per state directory; `shoal run` without a daemon.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm daemon_lifecycle || finish

start_daemon --stop-timeout 2 || { fail "daemon starts"; finish; }
pass "daemon starts and answers /v1/version"

# --- create from a file with a relative kernel path, then start ---
cd "$TMP"
cp "$GUEST" "$TMP/guest.elf"
printf '{"name": "web1", "kernel": "guest.elf", "cmdline": "shell", "cpus": 2, "memory": "64M"}' >web1.json
out=$("$SHOAL" vm create -f web1.json 2>&1)
check "vm create prints the new state" test "$out" = "web1: created"
check "relative kernel path made absolute by the CLI" test "$(vm_field web1 .spec.kernel)" = "$TMP/guest.elf"
check "vm list shows it created" bash -c "'$SHOAL' vm list | grep -E '^web1 +created +2 +64M'"
check "vm start" "$SHOAL" vm start web1
check "running after start" test "$(vm_field web1 .state)" = running
pid=$(vm_field web1 .pid)
check "its VMM process exists" kill -0 "$pid"
check "vm show -o json is the API object" bash -c "'$SHOAL' vm show web1 -o json | jq -e '.name == \"web1\" and .spec.cpus == 2 and .stats.exits > 0' >/dev/null"
check "vm show prints a summary" bash -c "'$SHOAL' vm show web1 | grep -q '^state: *running'"

# --- console ---
if wait_console web1 "shoal>"; then pass "console log shows the guest's prompt"; else fail "console log shows the guest's prompt"; fi
out=$(printf 'info\n' | "$SHOAL" console web1 --linger 3 2>&1)
if echo "$out" | grep -q "info cpus=2"; then pass "console attach: typed command answered"; else fail "console attach: typed command answered" "$out"; fi
check "console --show-log has the answer too" bash -c "'$SHOAL' console web1 --show-log | grep -q 'info cpus=2'"
check "console log over HTTP, max bytes" test "$(api GET '/v1/vms/web1/console?max=10')" = 200 -a "$(wc -c <"$TMP/body")" -eq 10
# one writer: hold the console with a client whose stdin (a FIFO) stays open
mkfifo "$TMP/holder.in"
"$SHOAL" console web1 --linger 0.2 <"$TMP/holder.in" >"$TMP/holder.out" 2>&1 &
holder=$!
exec 9>"$TMP/holder.in"
sleep 0.5
out=$("$SHOAL" console web1 </dev/null 2>&1); rc=$?
if [ $rc -eq 1 ] && echo "$out" | grep -q "attached elsewhere"; then pass "second console client refused"; else fail "second console client refused" "rc=$rc $out"; fi
check "refusal over HTTP is 409 console_busy" bash -c "[ \$(curl -s --max-time 5 -o '$TMP/body' -w '%{http_code}' --unix-socket '$SHOAL_SOCKET' -H 'Connection: Upgrade' -H 'Upgrade: shoal-console' http://d/v1/vms/web1/console/attach) = 409 ] && jq -e '.error.code == \"console_busy\"' '$TMP/body' >/dev/null"
out=$(printf 'info\n' | "$SHOAL" console web1 --force --linger 3 2>&1)
if echo "$out" | grep -q "info cpus=2"; then pass "console --force takes over"; else fail "console --force takes over" "$out"; fi
for _ in $(seq 50); do kill -0 $holder 2>/dev/null || break; sleep 0.1; done
if kill -0 $holder 2>/dev/null; then fail "the first client is disconnected by --force"; kill $holder; else pass "the first client is disconnected by --force"; fi
exec 9>&-
wait $holder 2>/dev/null

# on a terminal: raw mode, keys reach the guest, Ctrl-A x detaches (the VM
# runs on), the terminal settings come back exactly
python3 - "$SHOAL" <<'PY'
import os, pty, subprocess, sys, termios, time, select
master, slave = pty.openpty()
before = termios.tcgetattr(slave)
p = subprocess.Popen([sys.argv[1], "console", "web1"], stdin=slave, stdout=slave, stderr=slave,
                     close_fds=True)
out, sent, deadline = b"", False, time.time() + 20
while time.time() < deadline and p.poll() is None:
    if select.select([master], [], [], 0.2)[0]:
        try:
            out += os.read(master, 4096)
        except OSError:
            break
    if not sent and b"attached to web1" in out:
        time.sleep(0.3)
        os.write(master, b"echo typed-on-a-tty\r")
        time.sleep(0.5)
        os.write(master, b"\x01x")
        sent = True
try:
    rc = p.wait(10)
except subprocess.TimeoutExpired:
    p.kill(); rc = p.wait()
try:
    while select.select([master], [], [], 0.1)[0]:
        out += os.read(master, 4096)
except OSError:
    pass
restored = termios.tcgetattr(slave) == before
text = out.decode(errors="replace")
ok = "typed-on-a-tty" in text and rc == 0 and "detached from web1" in text and restored
print(("PASS: " if ok else "FAIL: ") + "console on a terminal: keys reach the guest, Ctrl-A x detaches, terminal restored"
      + ("" if ok else ": rc=%s restored=%s %r" % (rc, restored, text[-300:])))
sys.exit(0 if ok else 1)
PY
[ $? -eq 0 ] || T_FAILED=1
check "still running after the detach" test "$(vm_field web1 .state)" = running

# --- pause, resume ---
check "vm pause" "$SHOAL" vm pause web1
check "paused" test "$(vm_field web1 .state)" = paused
t1=$("$SHOAL" metrics web1 -o json | jq .vcpu_time_ns); sleep 0.3
t2=$("$SHOAL" metrics web1 -o json | jq .vcpu_time_ns)
check "no vCPU time while paused" test "$t1" = "$t2"
check "pause a paused VM: 409" bash -c "[ \$(curl -s -o '$TMP/body' -w '%{http_code}' --unix-socket '$SHOAL_SOCKET' -X POST http://d/v1/vms/web1/pause) = 409 ]"
check "vm resume" "$SHOAL" vm resume web1
check "running again" test "$(vm_field web1 .state)" = running

# --- metrics ---
check "metrics JSON: host and VM figures" bash -c "'$SHOAL' metrics -o json | jq -e '.host.vms == 1 and .host.vms_by_state.running == 1 and .host.memory_committed_bytes == 67108864 and .vms[0].vcpu_time_ns > 0 and .vms[0].exits > 0 and .vms[0].rss_bytes > 0 and (.vms[0].devices | length) > 0' >/dev/null"
"$SHOAL" metrics -o prometheus >"$TMP/prom"
check "Prometheus text: vCPU seconds, exits, resident memory" bash -c "grep -q '^shoal_vm_vcpu_seconds_total{vm=\"web1\",vcpu=\"0\"} ' '$TMP/prom' && grep -q '^shoal_vm_exits_total{vm=\"web1\",vcpu=\"0\"} [1-9]' '$TMP/prom' && grep -q '^shoal_vm_resident_bytes{vm=\"web1\"} [1-9]' '$TMP/prom' && grep -q '^shoal_host_vms{state=\"running\"} 1' '$TMP/prom'"
check "Prometheus text: every sample line is name{labels} value" bash -c "! grep -v '^#' '$TMP/prom' | grep -vqE '^[a-z_]+(\{[^}]*\})? [0-9.e+-]+$'"
check "metrics table" bash -c "'$SHOAL' metrics | grep -qE '^web1 +running'"

# --- events, following ---
"$SHOAL" events --follow -o json >"$TMP/follow" 2>"$TMP/follow.err" &
follower=$!
sleep 0.3

# --- guest exit code, restart policy ---
check "create+start a VM that exits 5" "$SHOAL" vm create -f <(spec ex5 "exit 5") --start
wait_state ex5 exited
check "exit 5 recorded with its reason" test "$(vm_field ex5 '.last_exit.status, .last_exit.reason' | tr '\n' '|')" = "5|guest exit code 5|"
api POST /v1/vms "$(spec crash "exit 3" '"restart": "on-failure"')" >/dev/null
api POST /v1/vms/crash/start >/dev/null
for _ in $(seq 100); do [ "$(vm_field crash .restarts)" -ge 2 ] && break; sleep 0.1; done
check "restart on-failure restarts a crashing VM" test "$(vm_field crash .restarts)" -ge 2
for _ in $(seq 100); do "$SHOAL" events --vm crash -o json | grep -q restart-abandoned && break; sleep 0.1; done
check "a crash loop is given up after 5 restarts" bash -c "'$SHOAL' events --vm crash -o json | grep -q restart-abandoned"
api POST /v1/vms "$(spec okexit poweroff '"restart": "on-failure"')" >/dev/null
api POST /v1/vms/okexit/start >/dev/null
wait_state okexit exited; sleep 0.3
check "on-failure leaves a clean power-off alone" test "$(vm_field okexit '.state, .restarts, .last_exit.reason' | tr '\n' '|')" = "exited|0|guest powered off|"

# --- stop, start again, delete ---
start_ms=$(date +%s%N)
check "vm stop (graceful, timeout 1 s, then forced)" "$SHOAL" vm stop web1 --timeout 1
check "exited after stop, reason says so" bash -c "[ \"\$(curl -s --unix-socket '$SHOAL_SOCKET' http://d/v1/vms/web1 | jq -r '.state + \"|\" + .last_exit.reason')\" = 'exited|stopped on request (VMM exited normally)' ]"
check "its VMM process is gone" bash -c "! kill -0 $pid 2>/dev/null"
check "start an exited VM again" "$SHOAL" vm start web1
check "vm stop --force" "$SHOAL" vm stop web1 --force
# forced: the VMM told to stop at once, no power button and no wait (a
# measured duration would only say how busy the host was)
check "the forced stop is recorded as forced, and the VM exited" bash -c "[ \"\$(curl -s --unix-socket '$SHOAL_SOCKET' 'http://d/v1/events?vm=web1' | jq -r '[.events[] | select(.type == \"stopping\")] | last | .detail.force')\" = true ] && [ \"\$(curl -s --unix-socket '$SHOAL_SOCKET' http://d/v1/vms/web1 | jq -r .state)\" = exited ]"
check "vm delete" "$SHOAL" vm delete web1
out=$("$SHOAL" vm show web1 2>&1); rc=$?
check "deleted VM: show fails with the API's message" test $rc -eq 1 -a "$out" = 'shoal: vm "web1" not found'
check "its directory is gone" test ! -e "$STATE/vms/web1"
api POST /v1/vms "$(spec runner)" >/dev/null; api POST /v1/vms/runner/start >/dev/null
out=$("$SHOAL" vm delete runner 2>&1); rc=$?
check "delete a running VM: refused" test $rc -eq 1 -a "$out" = 'shoal: vm "runner" is running: cannot delete it'
check "delete --force stops it first" "$SHOAL" vm delete runner --force

sleep 0.3
kill $follower; wait $follower 2>/dev/null
types=$(jq -r 'select(.vm == "ex5" or .vm == "web1") | .vm + ":" + .type' "$TMP/follow" | tr '\n' ' ')
check "events --follow streamed them as they happened" bash -c "echo '$types' | grep -q 'ex5:created ex5:started ex5:exited .*web1:stopping web1:exited web1:started web1:stopping web1:exited web1:deleted'"
check "exited event carries status and reason" bash -c "jq -s -e 'map(select(.vm == \"ex5\" and .type == \"exited\")) | length == 1 and .[0].detail.status == 5 and .[0].detail.reason == \"guest exit code 5\"' '$TMP/follow' >/dev/null"
check "events table" bash -c "'$SHOAL' events | grep -qE ' ex5 +exited +\{\"status\":5'"

# --- a monitor killed: its VMM goes with it, and the record says why ---
api POST '/v1/vms?start=true' "$(spec orphan)" >/dev/null
opid=$(vm_field orphan .pid)
mpid=$(pgrep -f -- "^shoal-monitor --monitor $STATE/vms/orphan/" | head -1)
if [ -n "$mpid" ] && kill -0 "${opid:-0}" 2>/dev/null; then
	kill -KILL "$mpid"
	wait_state orphan exited 200 || true
	r=$(vm_field orphan '.state + "|" + .last_exit.reason')
	check "monitor killed: the VM is recorded exited, saying its monitor was killed by signal 9 ($r)" test \
		"$r" = 'exited|VMM ended, exit status unknown (its monitor left no exit file): its monitor was killed by signal 9 (KILL)'
	for _ in $(seq 100); do kill -0 "$opid" 2>/dev/null || break; sleep 0.05; done
	check "monitor killed: its VMM did not outlive it (PR_SET_PDEATHSIG)" bash -c "! kill -0 $opid 2>/dev/null"
	"$SHOAL" vm delete orphan >/dev/null 2>&1
else
	fail "monitor killed: the VM's monitor and VMM" "monitor '${mpid:-none}', VMM '${opid:-none}'"
fi

# --- one daemon per state directory; shoal run without a daemon ---
"$SHOALD" --state-dir "$STATE" >"$TMP/second.log" 2>&1; rc=$?
check "a second daemon on the same state dir refuses" bash -c "[ $rc -ne 0 ] && grep -q 'another shoald' '$TMP/second.log'"
SHOAL_SOCKET=/nonexistent "$SHOAL" run --kernel "$GUEST" --cmdline "exit 3" --console none; rc=$?
check "shoal run needs no daemon" test $rc -eq 3
out=$(SHOAL_SOCKET=$TMP/none.sock "$SHOAL" vm list 2>&1); rc=$?
check "no daemon: the CLI says so and fails" bash -c "[ $rc -ne 0 ] && echo '$out' | grep -q 'cannot reach shoald'"

# --- SIGTERM: the daemon stops, its VMs do not ---
api POST '/v1/vms?start=true' "$(spec keeper)" >/dev/null
kpid=$(vm_field keeper .pid)
kill -TERM $DPID; wait $DPID; rc=$?
check "SIGTERM: daemon exits 0" test $rc -eq 0
check "SIGTERM: the VM keeps running" kill -0 "$kpid"
finish
