#!/bin/bash
# daemon_badinput.sh - hostile and mistaken requests: each gets the one
# error shape {"error": {"code", "message"}} with the right status and a
# message that names the bad field; nothing is half-created; slow clients
# that never finish a request are cut off without holding up anyone else.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
if [ ! -f "$GUEST" ]; then skip daemon_badinput "build/shoal-guest missing"; finish; fi

start_daemon --client-timeout 4 --stop-timeout 3 || { fail "daemon starts"; finish; }

# expect NAME STATUS CODE TEXT METHOD PATH [BODY]: status, error code, and
# TEXT (a field name) in the message.
expect() { expect_error "$1" "$2" "$3" "$4" api "${@:5}"; }
G=$GUEST
expect "malformed JSON"        400 invalid_json "line 1" POST /v1/vms '{"name": "x",'
expect "empty body"            400 invalid_json "spec" POST /v1/vms ''
expect "duplicate key"         400 invalid_json "duplicate" POST /v1/vms "{\"name\": \"a\", \"name\": \"b\", \"kernel\": \"$G\"}"
expect "not an object"         400 invalid_spec "object" POST /v1/vms '[1, 2]'
expect "unknown field"         400 invalid_spec '"colour"' POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"colour\": \"red\"}"
expect "wrong type: cpus"      400 invalid_spec cpus POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"cpus\": \"two\"}"
expect "wrong type: memory"    400 invalid_spec memory POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"memory\": true}"
expect "wrong type: cmdline"   400 invalid_spec cmdline POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"cmdline\": 7}"
expect "impossible size: 1000T" 400 invalid_spec memory POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"memory\": \"1000T\"}"
expect "impossible size: 1K"   400 invalid_spec memory POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"memory\": \"1K\"}"
expect "impossible size: 12Q"  400 invalid_spec memory POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"memory\": \"12Q\"}"
expect "more memory than the host" 400 invalid_spec "more than this host" POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"memory\": \"512G\"}"
expect "0 vCPUs"               400 invalid_spec cpus POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"cpus\": 0}"
expect "1000 vCPUs"            400 invalid_spec cpus POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"cpus\": 1000}"
expect "no kernel"             400 invalid_spec kernel POST /v1/vms '{"name": "u"}'
expect "missing kernel file"   400 invalid_spec "kernel: $TMP/nonexistent/vmlinux: No such file" POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$TMP/nonexistent/vmlinux\"}"
expect "relative kernel path"  400 invalid_spec "not an absolute path" POST /v1/vms '{"name": "u", "kernel": "build/shoal-guest"}'
expect "kernel is a directory" 400 invalid_spec "not a regular file" POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$TMP\"}"
expect "missing initrd file"   400 invalid_spec "initrd: $TMP/nonexistent/initrd" POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"initrd\": \"$TMP/nonexistent/initrd\"}"
expect "kernel outside --allow-dir" 403 path_not_allowed "not beneath an allowed directory" POST /v1/vms '{"name": "u", "kernel": "/etc/passwd"}'
printf '{"name": "u", "kernel": "%s", "cmdline": "%s"}' "$G" "$(head -c 921600 /dev/zero | tr '\0' x)" >"$TMP/bigcmd"
got=$(curl -s -o "$TMP/body" -w '%{http_code}' --unix-socket "$SHOAL_SOCKET" -X POST --data-binary @"$TMP/bigcmd" http://d/v1/vms)
check "a 900 KB command line: 400 at create, as shoal run refuses it" bash -c "[ $got = 400 ] && jq -e '.error.message | test(\"cmdline: 921600 bytes.*at most 4095\")' '$TMP/body' >/dev/null"
expect "bad console"           400 invalid_spec console POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"console\": \"tty\"}"
expect "no name"               400 invalid_spec name POST /v1/vms "{\"kernel\": \"$G\"}"
expect "name with a slash"     400 invalid_spec name POST /v1/vms "{\"name\": \"../etc\", \"kernel\": \"$G\"}"
expect "name too long"         400 invalid_spec name POST /v1/vms "{\"name\": \"$(printf 'a%.0s' $(seq 64))\", \"kernel\": \"$G\"}"
expect "name not a string"     400 invalid_spec name POST /v1/vms "{\"name\": 5, \"kernel\": \"$G\"}"
expect "bad restart policy"    400 invalid_spec restart POST /v1/vms "{\"name\": \"u\", \"kernel\": \"$G\", \"restart\": \"sometimes\"}"
expect "bad query value"       400 invalid_request start POST '/v1/vms?start=maybe' "$(spec u)"
check "nothing created by any of those" test "$(api GET /v1/vms)$(body | jq '.vms | length')" = "2000"
check "no VM directories either" test -z "$(ls "$STATE/vms")"

# oversized bodies, announced and not
head -c 2097152 /dev/zero | tr '\0' ' ' >"$TMP/big"
got=$(curl -s -o "$TMP/body" -w '%{http_code}' --unix-socket "$SHOAL_SOCKET" -X POST --data-binary @"$TMP/big" http://d/v1/vms)
check "2 MiB body: 413 with the error shape" bash -c "[ $got = 413 ] && jq -e '.error.code == \"too_large\"' '$TMP/body' >/dev/null"
got=$(curl -s -o "$TMP/body" -w '%{http_code}' --unix-socket "$SHOAL_SOCKET" -X POST -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/big" http://d/v1/vms)
check "2 MiB chunked body: 413 with the error shape" bash -c "[ $got = 413 ] && jq -e '.error.code == \"too_large\"' '$TMP/body' >/dev/null"

# routes and methods
expect "unknown route"         404 not_found "no such route" GET /v1/nothing
expect "bad VM name in a path" 404 not_found "no such route" GET '/v1/vms/a%2Fb'
expect "a path that is not UTF-8" 404 not_found "/v1/vms/?" GET '/v1/vms/%ff'
expect "a UTF-8 character cut by the message's limit" 404 not_found "no such route" GET "/$(printf 'a%.0s' $(seq 198))%C3%A9"
expect "unknown VM"            404 not_found '"ghost"' GET /v1/vms/ghost
expect "start an unknown VM"   404 not_found '"ghost"' POST /v1/vms/ghost/start
expect "wrong method"          405 method_not_allowed PUT PUT /v1/vms
expect "events: bad since"     400 invalid_request since GET '/v1/events?since=abc'
expect "console: bad max"      400 invalid_request max GET '/v1/vms/ghost/console?max=-1'
expect "console attach without Upgrade" 400 invalid_request Upgrade GET /v1/vms/ghost/console/attach

# names that collide, requests in the wrong state
check "create one" test "$(api POST /v1/vms "$(spec dup)")" = 201
expect "name collision"        409 name_taken '"dup"' POST /v1/vms "$(spec dup)"
expect "a NUL in a VM name: 400, not VM \"dup\"" 400 invalid_request "NUL" GET '/v1/vms/dup%00x'
expect "nor a delete of it"    400 invalid_request "NUL" DELETE '/v1/vms/dup%00x'
check "dup is still there" test "$(api GET /v1/vms/dup)" = 200
expect "pause a created VM"    409 wrong_state "created" POST /v1/vms/dup/pause
expect "resume a created VM"   409 wrong_state "created" POST /v1/vms/dup/resume
expect "stop a created VM"     409 wrong_state "created" POST /v1/vms/dup/stop
got=$(curl -s --max-time 5 -o "$TMP/body" -w '%{http_code}' --unix-socket "$SHOAL_SOCKET" -H 'Connection: Upgrade' -H 'Upgrade: shoal-console' http://d/v1/vms/dup/console/attach)
check "console of a created VM: 409" bash -c "[ $got = 409 ] && jq -e '.error.code == \"wrong_state\"' '$TMP/body' >/dev/null"
expect "stop: bad mode"        400 invalid_request mode POST /v1/vms/dup/stop '{"mode": "hard"}'
expect "stop: bad timeout"     400 invalid_request timeout_s POST /v1/vms/dup/stop '{"timeout_s": -1}'
expect "stop: unknown key"     400 invalid_request '"when"' POST /v1/vms/dup/stop '{"when": "now"}'
if [ -r /dev/kvm ]; then
	check "start it" test "$(api POST /v1/vms/dup/start)" = 200
	expect "start a running VM"  409 wrong_state running POST /v1/vms/dup/start
	expect "resume a running VM" 409 wrong_state running POST /v1/vms/dup/resume
	expect "delete a running VM" 409 wrong_state running DELETE /v1/vms/dup
	# a guest busy spinning does not look at the power button, so a
	# graceful stop waits its whole timeout (20 s: each curl and jq below
	# can take most of a second on the KVM box's software CPU, and a 5 s
	# window was sometimes over before the pause went out): the VM is busy
	# meanwhile
	api POST '/v1/vms?start=true' "$(spec spinner "spin 60000")" >/dev/null
	# its own body file: when the stop's answer came while the check below
	# still ran (as on the KVM box's software CPU), it overwrote the 503's
	# body in $TMP/body and the check read the stop's 200 instead
	API_OUT=$TMP/stop.body api POST /v1/vms/spinner/stop '{"timeout_s": 20}' >/dev/null &
	stopper=$!
	end=$((SECONDS + 20))
	while [ $SECONDS -lt $end ]; do     # the stop has reached the daemon
		[ "$(vm_field spinner .busy)" = stop ] && break
		sleep 0.05
	done
	got=$(curl -s -D "$TMP/headers" -o "$TMP/body" -w '%{http_code}' --unix-socket "$SHOAL_SOCKET" -X POST http://d/v1/vms/spinner/pause)
	check "an operation on a busy VM: 503 with Retry-After" bash -c "[ $got = 503 ] && grep -qi '^Retry-After: 1' '$TMP/headers' && jq -e '.error.code == \"busy\"' '$TMP/body' >/dev/null"
	wait $stopper
	check "the stop completed (forced after its timeout)" test "$(vm_field spinner .state)" = exited
	api DELETE /v1/vms/spinner >/dev/null
	check "a graceful stop of a guest at its prompt" test "$(api POST /v1/vms/dup/stop)" = 200
	check "and it is exited" test "$(vm_field dup .state)" = exited
else
	skip "wrong-state checks on a running VM" "/dev/kvm missing"
fi

# slow clients: 30 that stall in their headers, 1 that stalls in its body
python3 - "$SHOAL_SOCKET" >"$TMP/slow.out" 2>&1 <<'EOF' &
import socket, sys, time
path = sys.argv[1]
conns = []
for i in range(31):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    if i < 30:
        s.sendall(b"GET /v1/vms HTTP/1.1\r\nHost: d\r\n")            # no blank line, ever
    else:
        s.sendall(b"POST /v1/vms HTTP/1.1\r\nHost: d\r\nContent-Length: 200\r\n\r\n{\"name\": \"slow\"")
    conns.append(s)
t0 = time.time()
closed = 0
for s in conns:
    s.settimeout(max(0.1, 15 - (time.time() - t0)))
    try:
        if s.recv(4096) == b"":
            closed += 1
    except OSError:
        pass
print("closed %d of 31 after %.1f s" % (closed, time.time() - t0))
EOF
slow=$!
sleep 0.3
# each list must be answered well before the slow ones are cut off (4 s)
ok=0
for _ in $(seq 20); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --unix-socket "$SHOAL_SOCKET" http://d/v1/vms)" = 200 ] && ok=$((ok + 1))
done
check "others are served while slow clients stall ($ok of 20 lists answered within 2 s)" test $ok -eq 20
wait $slow
check "the slow connections are cut off after --client-timeout" grep -q "closed 31 of 31" "$TMP/slow.out"
check "the stalled create left nothing behind" test "$(api GET /v1/vms/slow)" = 404
check "one VM in all, the daemon still serving" test "$(api GET /v1/vms)$(body | jq '.vms | length')" = "2001"
finish
