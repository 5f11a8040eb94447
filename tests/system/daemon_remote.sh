#!/bin/bash
# daemon_remote.sh - the CLI drives a daemon on "another host": shoald
# serves HTTPS with a token (--listen), and every command goes through
# `shoal --host https://... --token-file F --cacert F` (libcurl): create,
# start, show, console attach over TLS (typed command answered, through the
# relay thread), the console log, events, stop and delete.  Issue 11, "The
# CLI reaches a remote daemon".
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm daemon_remote || finish
command -v openssl >/dev/null || { skip daemon_remote "openssl missing"; finish; }

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 1 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/token"
PORT=$((20000 + RANDOM % 20000))
start_daemon --stop-timeout 2 --listen "127.0.0.1:$PORT" --tls-cert "$TMP/cert.pem" \
	--tls-key "$TMP/key.pem" --token-file "$TMP/token" || { fail "daemon starts with TLS"; finish; }
# from here on the local socket is out of reach: only the remote endpoint
R=("$SHOAL" --host "https://localhost:$PORT" --token-file "$TMP/token" --cacert "$TMP/cert.pem")
export SHOAL_SOCKET=/nonexistent/shoald.sock

spec r1 shell '"cpus": 1' >"$TMP/r1.json"
check "remote vm create" "${R[@]}" vm create -f "$TMP/r1.json"
check "remote vm start" "${R[@]}" vm start r1
check "remote vm show: running" bash -c "$(printf '%q ' "${R[@]}") vm show r1 -o json | jq -e '.state == \"running\"' >/dev/null"
for _ in $(seq 200); do
	"${R[@]}" console r1 --show-log 2>/dev/null | grep -q "shoal>" && break
	sleep 0.05
done
out=$(printf 'info\n' | "${R[@]}" console r1 --linger 3 2>&1)
if grep -q "info cpus=1" <<<"$out"; then pass "console attach over TLS: typed command answered"
else fail "console attach over TLS: typed command answered" "$(tail -3 <<<"$out")"; fi
check "remote console --show-log has the answer" bash -c "$(printf '%q ' "${R[@]}") console r1 --show-log | grep -q 'info cpus=1'"
check "remote events: r1 started" bash -c "$(printf '%q ' "${R[@]}") events --vm r1 | grep -q started"
check "remote vm stop" "${R[@]}" vm stop r1
check "remote vm delete" "${R[@]}" vm delete r1
out=$("${R[@]}" vm show r1 2>&1); rc=$?
check "gone" test $rc -eq 1
finish
