#!/bin/bash
# daemon_tls.sh - the API on TCP: only with TLS and a bearer token; without
# the token every request is 401 with the error shape; plain HTTP gets no
# answer; the Unix socket needs no token; a token holder can do what
# --token-role says (admin by default) and no more.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
command -v openssl >/dev/null || { skip daemon_tls "openssl missing"; finish; }

"$SHOALD" --state-dir "$TMP/s0" --listen 127.0.0.1:1 >"$TMP/refuse.log" 2>&1; rc=$?
check "--listen without TLS and a token is refused" bash -c "[ $rc -eq 64 ] && grep -q 'no TCP without TLS and a token' '$TMP/refuse.log'"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 1 \
	-subj /CN=localhost >/dev/null 2>&1
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/token"
PORT=$((20000 + RANDOM % 20000))
start_daemon --listen "127.0.0.1:$PORT" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
	--token-file "$TMP/token" || { fail "daemon starts with TLS"; finish; }
URL=https://127.0.0.1:$PORT
got=$(curl -sk -o "$TMP/body" -w '%{http_code}' "$URL/v1/version")
check "TCP without a token: 401 with the error shape" bash -c "[ $got = 401 ] && jq -e '.error.code == \"unauthorized\"' '$TMP/body' >/dev/null"
got=$(curl -sk -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer wrong-token-wrong-token" "$URL/v1/vms")
check "TCP with a wrong token: 401" test "$got" = 401
got=$(curl -sk -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $(cat "$TMP/token")" "$URL/v1/vms")
check "TCP with the token over TLS: 200" bash -c "[ $got = 200 ] && jq -e '.vms == []' '$TMP/body' >/dev/null"
curl -s --max-time 3 "http://127.0.0.1:$PORT/v1/version" >/dev/null; rc=$?
check "plain HTTP on the TLS port gets no answer" test $rc -ne 0
check "the Unix socket needs no token" test "$(api GET /v1/version)" = 200
TOK="Authorization: Bearer $(cat "$TMP/token")"
got=$(curl -sk -o "$TMP/body" -w '%{http_code}' -H "$TOK" -X DELETE "$URL/v1/vms/ghost")
check "the token is admin by default (a delete gets as far as 404)" test "$got" = 404

# the CLI itself on a remote daemon: shoal --host URL --token-file F --cacert F
# (libcurl; the certificate's name is localhost)
H=https://localhost:$PORT
out=$("$SHOAL" --host "$H" --token-file "$TMP/token" --cacert "$TMP/cert.pem" vm list --output json 2>&1)
check "CLI over TLS with --host and --token-file: vm list" bash -c "jq -e '.vms == []' <<<'$out' >/dev/null"
out=$("$SHOAL" --host "$H" --token-file "$TMP/token" --cacert "$TMP/cert.pem" vm show ghost 2>&1); rc=$?
check "CLI over TLS: the API's error, not a transport one" bash -c "[ $rc -eq 1 ] && grep -q 'ghost' <<<'$out'"
out=$(SHOAL_HOST=$H SHOAL_TOKEN=$(cat "$TMP/token") SHOAL_CACERT=$TMP/cert.pem "$SHOAL" metrics --output json 2>&1)
check "CLI over TLS from the environment (SHOAL_HOST, SHOAL_TOKEN, SHOAL_CACERT)" bash -c "jq -e '.host' <<<'$out' >/dev/null"
out=$("$SHOAL" --host "$H" --cacert "$TMP/cert.pem" vm list 2>&1); rc=$?
check "CLI over TLS without a token: the daemon's 401 message" bash -c "[ $rc -ne 0 ] && grep -qi 'Bearer' <<<'$out'"
out=$("$SHOAL" --host "$H" --token-file "$TMP/token" vm list 2>&1); rc=$?
echo "$out" >"$TMP/o"
check "CLI over TLS, certificate not trusted: refused, exit 69, naming --cacert" bash -c "[ $rc -eq 69 ] && grep -q -- '--cacert' '$TMP/o'"
out=$("$SHOAL" --host "http://localhost:$PORT" vm list 2>&1); rc=$?
check "--host http:// refused (64): the token never goes in clear" bash -c "[ $rc -eq 64 ] && grep -q 'https' <<<'$out'"
out=$("$SHOAL" --host "$H" --token-file "$TMP/nope" --cacert "$TMP/cert.pem" vm list 2>&1); rc=$?
check "a missing token file is named (66)" bash -c "[ $rc -eq 66 ] && grep -q 'nope' <<<'$out'"
out=$("$SHOAL" --host "https://localhost:1" --token-file "$TMP/token" vm list 2>&1); rc=$?
echo "$out" >"$TMP/o"
check "no daemon at --host: cannot reach, exit 69" bash -c "[ $rc -eq 69 ] && grep -q 'cannot reach shoald at https://localhost:1' '$TMP/o'"
timeout 10 "$SHOAL" --host "$H" --token-file "$TMP/token" --cacert "$TMP/cert.pem" events --limit 1 >"$TMP/ev" 2>&1
check "events over TLS" bash -c "[ -s '$TMP/ev' ] || true; ! grep -q 'cannot reach\|TLS' '$TMP/ev'"
out=$(timeout 10 "$SHOAL" --host "$H" --token-file "$TMP/token" --cacert "$TMP/cert.pem" console ghost </dev/null 2>&1); rc=$?
echo "$out" >"$TMP/o"
check "console attach over TLS reaches the API (404 for a VM that is not there)" bash -c "[ $rc -eq 1 ] && grep -q 'ghost' '$TMP/o'"

# libcurl is loaded when first used (src/base/curl_dl.c), so that a process
# that never speaks HTTP(S), a VMM above all, does not map it and its
# thirty libraries; the CLI above spoke HTTPS through it all the same
check "shoal and shoald do not link libcurl" \
	bash -c "! readelf -d '$SHOAL' '$SHOALD' | grep -q 'NEEDED.*libcurl'"
check "  ... and the running shoald has not loaded it (no call to another daemon yet)" \
	bash -c "! grep -q libcurl /proc/$DPID/maps"

kill $DPID; wait $DPID 2>/dev/null
start_daemon --listen "127.0.0.1:$PORT" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
	--token-file "$TMP/token" --token-role read || { fail "daemon starts with --token-role read"; finish; }
got=$(curl -sk -o "$TMP/body" -w '%{http_code}' -H "$TOK" "$URL/v1/vms")
check "--token-role read: the token reads" test "$got" = 200
got=$(curl -sk -o "$TMP/body" -w '%{http_code}' -H "$TOK" -X DELETE "$URL/v1/vms/ghost")
check "--token-role read: a delete is 403 forbidden" bash -c "[ $got = 403 ] && jq -e '.error.code == \"forbidden\"' '$TMP/body' >/dev/null"
finish
