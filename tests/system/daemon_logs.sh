#!/bin/bash
# daemon_logs.sh - shoald's log (issue 11, "Logs"): every line has a level
# and a UTC timestamp; each API call leaves one access line (who, method,
# path, status, bytes, time), refusals included; --log-level warn keeps
# only warnings and errors and a bad level is refused (64); when stderr is
# journald's stream ($JOURNAL_STREAM names its device:inode) lines carry
# the sd-daemon priority (<6> info, <4> warning) instead of a timestamp.
# systemd's Type=notify (src/host/sd_notify.c): with $NOTIFY_SOCKET naming a
# datagram socket, shoald sends READY=1 once its API answers and STOPPING=1
# on SIGTERM, to a path or to an abstract "@name".
# No KVM: no VM is started.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
LOG=$TMP/shoald.log
TS='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z shoald: '

start_daemon || { fail "daemon starts"; finish; }
api GET /v1/vms >/dev/null
api GET /v1/vms/ghost >/dev/null
api POST /v1/vms '{"name": "bad", "cpus": "x"}' >/dev/null
kill $DPID; wait $DPID 2>/dev/null
check "every line has a timestamp and a level" bash -c "! grep -Evq '$TS(error|warning|info|debug): ' '$LOG' && [ -s '$LOG' ]"
check "start is logged at info" grep -Eq "${TS}info: serving on $SHOAL_SOCKET" "$LOG"
check "access line: GET /v1/vms 200" grep -Eq "${TS}info: access: uid $(id -u) \(pid [0-9]+\) GET /v1/vms 200 [0-9]+ bytes [0-9.]+ ms$" "$LOG"
check "access line: a 404" grep -Eq "info: access: .* GET /v1/vms/ghost 404 " "$LOG"
check "access line: a refused spec (400)" grep -Eq "info: access: .* POST /v1/vms 400 " "$LOG"
check "stop is logged" grep -Eq "${TS}info: Terminated: stopping" "$LOG"

: >"$LOG"
start_daemon --log-level warn || { fail "daemon starts with --log-level warn"; finish; }
api GET /v1/vms >/dev/null
kill $DPID; wait $DPID 2>/dev/null
check "--log-level warn: no info or access lines" bash -c "! grep -q 'info:' '$LOG'"

"$SHOALD" --state-dir "$TMP/s2" --log-level chatty >"$TMP/bad.log" 2>&1; rc=$?
check "--log-level chatty refused (64) naming it" bash -c "[ $rc -eq 64 ] && grep -q 'log-level chatty' '$TMP/bad.log'"

# journald: stderr is the stream $JOURNAL_STREAM names
J=$TMP/journal.log
: >"$J"
JOURNAL_STREAM=$(stat -c '%d:%i' "$J") "$SHOALD" --state-dir "$TMP/s3" --log-level chatty 2>>"$J"
check "journald stream: a priority prefix, no timestamp" grep -q '^<3>shoald: error: --log-level chatty' "$J"
JOURNAL_STREAM=1:1 "$SHOALD" --state-dir "$TMP/s3" --log-level chatty 2>"$TMP/notj.log"
check "another stream in \$JOURNAL_STREAM: timestamps" grep -Eq "${TS}error: " "$TMP/notj.log"
# systemd's readiness protocol: a datagram listener stands in for systemd
for where in path abstract; do
	if [ $where = path ]; then NS=$TMP/notify.sock; else NS=@shoal-notify-$$; fi
	rm -f "$TMP/notify.$where.up"
	python3 - "$NS" "$TMP/notify.$where.up" >"$TMP/notify.$where" <<'PY' &
import socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + name[1:] if name.startswith("@") else name)
open(sys.argv[2], "w").close()          # bound: the daemon may start
s.settimeout(30)
for _ in range(2):
    try:
        print(s.recv(4096).decode().replace("\n", "|"), flush=True)
    except OSError:
        break
PY
	lpid=$!
	# an abstract name leaves no file: the listener says when it is bound
	for _ in $(seq 200); do [ -e "$TMP/notify.$where.up" ] && break; sleep 0.05; done
	rm -rf "$STATE"
	NOTIFY_SOCKET=$NS start_daemon || { fail "daemon starts with NOTIFY_SOCKET ($where)"; kill $lpid; continue; }
	for _ in $(seq 100); do grep -q READY "$TMP/notify.$where" && break; sleep 0.05; done
	check "NOTIFY_SOCKET ($where): READY=1 once the API answers" grep -qx 'READY=1|STATUS=serving' "$TMP/notify.$where"
	kill $DPID; wait $DPID 2>/dev/null
	wait $lpid 2>/dev/null
	check "NOTIFY_SOCKET ($where): STOPPING=1 on SIGTERM" grep -qx 'STOPPING=1' "$TMP/notify.$where"
done
finish
