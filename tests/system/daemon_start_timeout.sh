#!/bin/bash
# daemon_start_timeout.sh - a VMM that never answers on its control socket
# fails its start after `shoald --start-timeout S` with a 500 that says so,
# and is killed (nothing of it is left running); the VM is then exited,
# and a bad value for the option is refused.  No KVM: the "VMM" is a
# script that only sleeps.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon

FAKE=$TMP/silent-vmm
printf '#!/bin/sh\necho "silent vmm $$" >>%s/silent.pids\nexec sleep 300\n' "$TMP" >"$FAKE"
chmod +x "$FAKE"
start_daemon --vmm "$FAKE" --start-timeout 2 || { fail "daemon starts"; finish; }
t0=$SECONDS
code=$(api POST "/v1/vms?start=true" "$(spec quiet)")
took=$((SECONDS - t0))
echo "# create+start answered $code after $took s: $(cat "$TMP/body")"
check "a silent VMM: the start fails with 500" test "$code" = 500
check "the error names the VM, the wait and the option" \
	grep -q 'did not start: no answer from its VMM within 2 s (shoald --start-timeout)' "$TMP/body"
check "the silent VMM was started" test -s "$TMP/silent.pids"
pid=$(awk '{print $3}' "$TMP/silent.pids" | head -1)
check "the silent VMM is killed" bash -c "for i in \$(seq 100); do kill -0 ${pid:-0} 2>/dev/null || exit 0; sleep 0.05; done; exit 1"
check "the VM is left exited" test "$(vm_field quiet .state)" = exited
kill $DPID; wait $DPID 2>/dev/null

"$SHOALD" --state-dir "$TMP/s2" --start-timeout soon >"$TMP/bad.log" 2>&1; rc=$?
check "--start-timeout soon refused (64) naming it" bash -c "[ $rc -eq 64 ] && grep -q 'start-timeout' '$TMP/bad.log'"
finish
